package wire

import (
	"bufio"
	"bytes"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"testing"
)

var requestHeadSeeds = []string{
	"GET /t/acme/orders HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /t/acme/orders?x=1&y=%zz HTTP/1.1\r\nHost: acme.saas.test:8080\r\nAuthorization: Bearer a.b.c\r\nX-Tenant-Id: acme\r\n\r\n",
	"POST /t/acme/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nConnection: keep-alive, close\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n",
	"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
	"GET /a%20b HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a\"b HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX: \x01\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX: caf\xc3\xa9\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 007\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
	"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /t/a/../b HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
	"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET / HTTP/1.1\r\nhOsT: x\r\ncontent-length: 0\r\n\r\n",
}

// FuzzRequestHead is a differential test of the fast path's parser against
// net/http: whatever the fast path accepts, http.ReadRequest must accept
// and read the same way (method, target, host, length, connection, every
// header value), so no request means one thing to the router and another to
// net/http or the backend. What the fast path declines goes to net/http.
func FuzzRequestHead(f *testing.F) {
	for _, s := range requestHeadSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n := headEnd(data)
		if n < 0 {
			return
		}
		head := data[:n]
		var h RequestHead
		parseRequestHead(head, &h)
		if h.general != "" {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("fast path accepted what net/http refuses (%v):\n%q", err, head)
		}
		if req.Method != h.method || req.RequestURI != h.target || req.Host != h.host {
			t.Fatalf("method/target/host: net/http %q %q %q, fast %q %q %q", req.Method, req.RequestURI, req.Host, h.method, h.target, h.host)
		}
		if _, err := url.ParseQuery(req.URL.RawQuery); err != nil {
			t.Fatalf("query %q would be re-encoded by httputil.ReverseProxy (%v); the fast path forwards it as sent", req.URL.RawQuery, err)
		}
		if got := req.URL.RequestURI(); got != h.target {
			t.Fatalf("net/http would forward target %q, fast path %q", got, h.target)
		}
		if path, _, _ := strings.Cut(h.target, "?"); req.URL.Path != path {
			t.Fatalf("path: net/http %q, fast %q", req.URL.Path, path)
		}
		wantLen := h.contentLength
		if wantLen < 0 {
			wantLen = 0
		}
		if req.ContentLength != wantLen || len(req.TransferEncoding) != 0 {
			t.Fatalf("length: net/http %d %v, fast %d", req.ContentLength, req.TransferEncoding, h.contentLength)
		}
		if req.Close != h.close {
			t.Fatalf("close: net/http %v, fast %v", req.Close, h.close)
		}
		if got := req.Header.Get("Authorization"); got != h.auth {
			t.Fatalf("authorization: net/http %q, fast %q", got, h.auth)
		}
		if got := req.Header.Get("X-Tenant-Id"); got != h.tenant {
			t.Fatalf("tenant header: net/http %q, fast %q", got, h.tenant)
		}
		fast := map[string][]string{}
		for _, fl := range h.fields {
			k := textproto.CanonicalMIMEHeaderKey(fl.name)
			if k == "Host" {
				continue // net/http moves it to req.Host
			}
			fast[k] = append(fast[k], fl.value)
		}
		for k, vs := range req.Header {
			if !slices.Equal(vs, fast[k]) {
				t.Fatalf("header %s: net/http %q, fast %q", k, vs, fast[k])
			}
		}
		if len(fast) != len(req.Header) {
			t.Fatalf("fields: net/http %v, fast %v", req.Header, fast)
		}
	})
}

var responseHeadSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
	"HTTP/1.0 200 OK\r\n\r\n",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 204 No Content\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: X-Secret, x-lower\r\nX-Secret: 1\r\nx-lower: 1\r\nContent-Length: 2\r\n\r\n",
	"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nTe: trailers\r\nProxy-Authorization: x\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n",
	"HTTP/1.1 200\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
	"HTTP/1.1 999 X\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
}

// FuzzResponseHead checks the response parser against http.ReadResponse:
// what the router accepts from a backend, net/http reads with the same
// status and the same framing (so the router ends each response where
// net/http would).
func FuzzResponseHead(f *testing.F) {
	for _, s := range responseHeadSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n := headEnd(data)
		if n < 0 {
			return
		}
		head := data[:n]
		var h respHead
		if parseResponseHead(head, &h) != nil {
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("router accepted what net/http refuses (%v):\n%q", err, head)
		}
		if resp.StatusCode != h.status {
			t.Fatalf("status: net/http %d, router %d", resp.StatusCode, h.status)
		}
		hasBody := h.status >= 200 && h.status != 204 && h.status != 304
		chunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"
		if hasBody && chunked != h.chunked {
			t.Fatalf("chunked: net/http %v, router %v", resp.TransferEncoding, h.chunked)
		}
		if hasBody && !h.chunked && resp.ContentLength != h.contentLength {
			t.Fatalf("length: net/http %d, router %d", resp.ContentLength, h.contentLength)
		}
		named := map[string]bool{}
		for _, v := range resp.Header["Connection"] {
			for _, tok := range strings.Split(v, ",") {
				named[textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(tok))] = true
			}
		}
		for _, fl := range h.fields {
			if HopByHop(fl.name, true) || equalFold(fl.name, "content-length") {
				t.Fatalf("hop-by-hop or framing field %q forwarded", fl.name)
			}
			if named[textproto.CanonicalMIMEHeaderKey(fl.name)] {
				t.Fatalf("field %q named in Connection forwarded", fl.name)
			}
		}
	})
}

func TestChunkSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int64
		good bool
	}{
		{"0", 0, true}, {"1a", 26, true}, {"FF;ext=1", 255, true}, {"10 ", 16, true},
		{"", 0, false}, {"g", 0, false}, {"-1", 0, false}, {"1000000000000000", 0, false}, {";x", 0, false},
	} {
		n, ok := chunkSize([]byte(c.in))
		if ok != c.good || (ok && n != c.n) {
			t.Errorf("chunkSize(%q) = %d %v, want %d %v", c.in, n, ok, c.n, c.good)
		}
	}
}

func TestRelayChunkedChecksFraming(t *testing.T) {
	for _, c := range []struct {
		name, in string
		ok       bool
	}{
		{"plain", "5\r\nhello\r\n0\r\n\r\n", true},
		{"extension and trailer", "5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", true},
		{"missing CRLF after data", "5\r\nhelloXX0\r\n\r\n", false},
		{"bad size", "zz\r\nhello\r\n0\r\n\r\n", false},
		{"bare LF", "5\nhello\r\n0\r\n\r\n", false},
		{"cut short", "5\r\nhel", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			w := bufio.NewWriter(&out)
			err := relayChunked(w, bufio.NewReader(strings.NewReader(c.in+"NEXT")), nil)
			_ = w.Flush()
			if (err == nil) != c.ok {
				t.Fatalf("err = %v, want ok=%v", err, c.ok)
			}
			if c.ok && out.String() != c.in {
				t.Fatalf("relayed %q, want %q", out.String(), c.in)
			}
		})
	}
}

func TestHopByHop(t *testing.T) {
	for _, c := range []struct {
		name              string
		request, response bool
	}{
		{"Connection", true, true}, {"keep-alive", true, true}, {"Proxy-Connection", true, true},
		{"Proxy-Authorization", true, true}, {"TE", true, true}, {"Upgrade", true, true},
		{"Transfer-Encoding", true, true},
		{"Proxy-Authenticate", true, false}, // a 407 needs it
		{"Trailer", true, false},            // chunked trailers pass through
		{"Content-Length", false, false}, {"X-Tenant-Id", false, false}, {"Host", false, false},
	} {
		if got := HopByHop(c.name, false); got != c.request {
			t.Errorf("HopByHop(%q, request) = %v, want %v", c.name, got, c.request)
		}
		if got := HopByHop(c.name, true); got != c.response {
			t.Errorf("HopByHop(%q, response) = %v, want %v", c.name, got, c.response)
		}
	}
}
