package wire

import (
	"bufio"
	"net/http"
	"strings"
)

// canWriteHead reports whether writeHead produces exactly what
// http.Request.Write would for req: a bodiless request without trailers or
// transfer codings, with a plain ASCII host. Everything else goes through
// http.Request.Write.
func canWriteHead(req *http.Request) bool {
	if req.ContentLength != 0 || len(req.TransferEncoding) != 0 || len(req.Trailer) != 0 || req.Method == http.MethodConnect {
		return false
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	return allPlainHost(host)
}

var plainHostByte = alnumPlus(".-_:[]")

// reqWriteExclude are the headers http.Request.Write writes itself (or
// not at all) rather than from Header.
func reqWriteExclude(k string) bool {
	switch k {
	case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

const defaultUserAgent = "Go-http-client/1.1"

// writeHead writes the head of a bodiless request as http.Request.Write
// does (header order aside: Request.Write sorts the fields). The caller has
// checked canWriteHead and validateOutbound (no control bytes in the
// method, header names or values).
func writeHead(w *bufio.Writer, req *http.Request) error {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	ruri := req.URL.RequestURI()
	for i := 0; i < len(ruri); i++ {
		if b := ruri[i]; b < ' ' || b == 0x7f {
			return errCTLInURL
		}
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(ruri)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")

	ua := defaultUserAgent
	if vs, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(vs) > 0 {
			ua = trimHeaderValue(vs[0])
		}
	}
	if ua != "" {
		w.WriteString("User-Agent: ")
		w.WriteString(ua)
		w.WriteString("\r\n")
	}
	if req.Close && !headerHasToken(req.Header["Connection"], "close") {
		w.WriteString("Connection: close\r\n")
	}
	if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		// As net/http: "many servers expect a Content-Length for these".
		w.WriteString("Content-Length: 0\r\n")
	}
	for k, vs := range req.Header {
		if reqWriteExclude(k) {
			continue
		}
		for _, v := range vs {
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(trimHeaderValue(v))
			w.WriteString("\r\n")
		}
	}
	_, err := w.WriteString("\r\n")
	return err
}

var errCTLInURL = errorString("net/http: can't write control character in Request.URL")

type errorString string

func (e errorString) Error() string { return string(e) }

// trimHeaderValue is textproto.TrimString after net/http's newline-to-space
// replacement (validateOutbound already refused CR and LF).
func trimHeaderValue(s string) string {
	for len(s) > 0 && isASCIISpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isASCIISpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

func isASCIISpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }

// headerHasToken reports whether a comma-separated header contains token
// (case-insensitively).
func headerHasToken(vs []string, token string) bool {
	for _, v := range vs {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}
