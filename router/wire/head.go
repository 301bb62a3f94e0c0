package wire

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"unsafe"
)

// The router's own HTTP/1.1 parser, for the fast path (server.go). It
// accepts a strict subset of HTTP/1.1: anything it does not fully
// understand is not an error but a reason to hand the connection to
// net/http, which then decides (and answers 400 where it should). So a
// request is either parsed here exactly as net/http would parse it, or not
// here at all; FuzzRequestHead checks that against http.ReadRequest.

// headerField is one header line; both strings point into a read buffer.
type headerField struct {
	name, value string
}

// RequestHead is a parsed request head. Its strings point into the
// connection's read buffer: valid only until that buffer is read again.
type RequestHead struct {
	method string
	target string // origin-form request target, as sent
	host   string
	auth   string // Authorization
	tenant string // X-Tenant-Id as sent (honoured only from trusted peers)

	contentLength int64 // -1: no body
	close         bool  // Connection: close
	fields        []headerField
	size          int // bytes of the head, final CRLF included

	// general is why the request must take net/http's way ("" if it
	// need not): transfer codings, upgrades, 100-continue, HTTP/1.0,
	// anything unusual.
	general string
}

// Method is the request method.
func (h *RequestHead) Method() string { return h.method }

// Target is the origin-form request target, as sent.
func (h *RequestHead) Target() string { return h.target }

// Host is the Host field.
func (h *RequestHead) Host() string { return h.host }

// Auth is the Authorization field.
func (h *RequestHead) Auth() string { return h.auth }

// Tenant is the X-Tenant-Id field as sent.
func (h *RequestHead) Tenant() string { return h.tenant }

// ContentLength is the body's length (-1: no body).
func (h *RequestHead) ContentLength() int64 { return h.contentLength }

// Close says the client asked to close the connection after this request.
func (h *RequestHead) Close() bool { return h.close }

// Size is the head's length in bytes, final CRLF included.
func (h *RequestHead) Size() int { return h.size }

// Fields yields every field of the head, name and value as sent, in
// order, until yield returns false.
func (h *RequestHead) Fields(yield func(name, value string) bool) {
	for _, f := range h.fields {
		if !yield(f.name, f.value) {
			return
		}
	}
}

// Has reports whether the head has a field named lower (lower case).
func (h *RequestHead) Has(lower string) bool {
	for _, f := range h.fields {
		if equalFold(f.name, lower) {
			return true
		}
	}
	return false
}

// AppendForwardHead appends the head to send a backend for h: the request
// line (the target without its first strip bytes, a path prefix the
// handler removes), then the client's fields minus the hop-by-hop ones
// (HopByHop) and those drop names, and "Content-Length: 0" for a bodiless
// POST, PUT or PATCH (as net/http sends). The caller appends its own
// fields and the blank line.
func AppendForwardHead(b []byte, h *RequestHead, strip string, drop func(name string) bool) []byte {
	b = append(b, h.method...)
	b = append(b, ' ')
	if strip != "" {
		rest := h.target[len(strip):]
		if rest == "" || rest[0] != '/' {
			b = append(b, '/')
		}
		b = append(b, rest...)
	} else {
		b = append(b, h.target...)
	}
	b = append(b, " HTTP/1.1\r\n"...)
	for _, f := range h.fields {
		if HopByHop(f.name, false) || drop(f.name) {
			continue
		}
		b = append(b, f.name...)
		b = append(b, ": "...)
		b = append(b, f.value...)
		b = append(b, "\r\n"...)
	}
	if h.contentLength < 0 && (h.method == http.MethodPost || h.method == http.MethodPut || h.method == http.MethodPatch) {
		b = append(b, "Content-Length: 0\r\n"...)
	}
	return b
}

// maxHeadFields bounds a request head's fields on the fast path (more go
// to net/http).
const maxHeadFields = 128

var crlfcrlf = []byte("\r\n\r\n")

// headEnd returns the length of the head in b (through the blank line), or
// -1 if it is not complete yet.
func headEnd(b []byte) int {
	i := bytes.Index(b, crlfcrlf)
	if i < 0 {
		return -1
	}
	return i + 4
}

// headEndFrom is headEnd for a buffer whose first from bytes were already
// searched (a head arriving in pieces is not rescanned from the start).
func headEndFrom(b []byte, from int) int {
	i := bytes.Index(b[from:], crlfcrlf)
	if i < 0 {
		return -1
	}
	return from + i + 4
}

// errHeadFull: the read buffer filled up before the head ended.
var errHeadFull = errors.New("head does not fit the read buffer")

// bufferHead reads into br until it holds a whole head (CRLF line ends) and
// returns its length, without consuming it. It returns errHeadFull when
// the buffer fills first, and -1 as soon as giveUp (if not nil) says the
// bytes so far will never make such a head.
func bufferHead(br *bufio.Reader, giveUp func([]byte) bool) (int, error) {
	scanned := 0 // the head's end is not before here
	for {
		buf, _ := br.Peek(br.Buffered())
		if n := headEndFrom(buf, scanned); n > 0 {
			return n, nil
		}
		scanned = max(0, len(buf)-3)
		if len(buf) >= br.Size() {
			return 0, errHeadFull
		}
		if giveUp != nil && giveUp(buf) {
			return -1, nil
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return 0, err
		}
	}
}

// view is a string over b's bytes without copying. It must not outlive
// the buffer's current contents.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// parseRequestHead parses head (as found by headEnd) into h. When the
// request is not one the fast path takes, h.general says why.
func parseRequestHead(head []byte, h *RequestHead) {
	*h = RequestHead{contentLength: -1, fields: h.fields[:0], size: len(head)}
	line, rest, ok := cutLine(head)
	if !ok {
		h.general = "request line"
		return
	}
	if h.general = h.requestLine(line); h.general != "" {
		return
	}
	var n fieldCounts
	for len(rest) > 2 {
		line, rest, ok = cutLine(rest)
		if !ok {
			h.general = "header line"
			return
		}
		if h.general = h.addField(line, &n); h.general != "" {
			return
		}
	}
	if string(rest) != "\r\n" {
		h.general = "head end"
		return
	}
	if n.hosts != 1 || n.auths > 1 || n.tenants > 1 || n.lengths > 1 {
		h.general = "repeated or missing field"
	}
}

// requestLine parses "METHOD SP origin-form SP HTTP/1.1"; it returns why
// the request is not the fast path's ("" if it is).
func (h *RequestHead) requestLine(line []byte) string {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 || !allToken(line[:sp1]) {
		return "method"
	}
	h.method = view(line[:sp1])
	line = line[sp1+1:]
	sp2 := bytes.IndexByte(line, ' ')
	if sp2 <= 0 || line[0] != '/' || !plainTarget(line[:sp2]) {
		return "request target"
	}
	h.target = view(line[:sp2])
	if string(line[sp2+1:]) != "HTTP/1.1" {
		return "protocol version"
	}
	if h.method == "CONNECT" || h.method == "PRI" {
		return "method"
	}
	return ""
}

// fieldCounts counts the request fields that must not repeat.
type fieldCounts struct{ hosts, auths, tenants, lengths int }

// addField parses one header line into h; it returns why the request is
// not the fast path's ("" if it is).
func (h *RequestHead) addField(line []byte, n *fieldCounts) string {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !allToken(line[:colon]) {
		return "header name"
	}
	name, value := line[:colon], trimOWS(line[colon+1:])
	if !allFieldValue(value) {
		return "header value"
	}
	if len(h.fields) == maxHeadFields {
		return "too many header fields"
	}
	f := headerField{name: view(name), value: view(value)}
	h.fields = append(h.fields, f)
	return h.knownField(name, value, f, n)
}

// knownField notes the fields the fast path reads or declines (matched by
// length first: most fields are none of them).
func (h *RequestHead) knownField(name, value []byte, f headerField, n *fieldCounts) string {
	switch len(name) {
	case 4:
		if equalFold(name, "host") {
			n.hosts++
			if len(value) == 0 || !allPlainHost(value) {
				return "host"
			}
			h.host = f.value
		}
	case 2:
		if equalFold(name, "te") {
			return "te"
		}
	case 6:
		if equalFold(name, "expect") {
			return "expect"
		}
	case 7:
		if equalFold(name, "upgrade") || equalFold(name, "trailer") {
			return "upgrade or trailer"
		}
	case 10:
		if equalFold(name, "connection") && !connectionTokensKnown(value, &h.close) {
			return "connection options"
		}
	case 11:
		if equalFold(name, "x-tenant-id") {
			n.tenants++
			h.tenant = f.value
		}
	case 13:
		if equalFold(name, "authorization") {
			n.auths++
			h.auth = f.value
		}
	case 14:
		if equalFold(name, "content-length") {
			n.lengths++
			l, ok := parseLength(value)
			if !ok {
				return "content length"
			}
			h.contentLength = l
		}
	case 17:
		if equalFold(name, "transfer-encoding") {
			return "transfer encoding"
		}
	}
	return ""
}

// respHead is a parsed response head from a backend; strings point into the
// backend connection's read buffer.
type respHead struct {
	status        int
	reason        string
	http10        bool
	contentLength int64 // -1: none
	chunked       bool
	close         bool // Connection: close (or HTTP/1.0 without keep-alive)
	hasDate       bool
	fields        []headerField // end-to-end fields to forward
	size          int
}

// parseResponseHead parses a backend's response head strictly: a backend
// whose framing is ambiguous (both a length and a transfer coding, two
// lengths, an unknown coding) is refused, so a confused backend can never
// make the router read one response as two, or two as one.
func parseResponseHead(head []byte, h *respHead) error {
	*h = respHead{contentLength: -1, fields: h.fields[:0], size: len(head)}
	line, rest, ok := cutLine(head)
	if !ok || !h.statusLine(line) {
		return ErrBadResponseHead
	}
	var fr respFraming
	for len(rest) > 2 {
		line, rest, ok = cutLine(rest)
		if !ok || !h.addField(line, &fr) {
			return ErrBadResponseHead
		}
	}
	if string(rest) != "\r\n" || h.chunked && fr.lengths > 0 {
		return ErrBadResponseHead
	}
	if h.chunked {
		h.contentLength = -1
	}
	if len(fr.dropped) > 0 {
		kept := h.fields[:0]
		for _, f := range h.fields {
			if !namedIn(fr.dropped, f.name) {
				kept = append(kept, f)
			}
		}
		h.fields = kept
	}
	return nil
}

// statusLine parses "HTTP/1.x SP 3DIGIT [SP reason]".
func (h *respHead) statusLine(line []byte) bool {
	if len(line) < 12 || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return false
	}
	switch string(line[:8]) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		h.http10 = true
		h.close = true
	default:
		return false
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return false
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 || code > 599 {
		return false
	}
	h.status = code
	if len(line) > 13 {
		if !allFieldValue(line[13:]) {
			return false
		}
		h.reason = view(line[13:])
	}
	return true
}

// respFraming is what a response head's fields say about its framing
// beyond respHead.
type respFraming struct {
	dropped    []byte // Connection-named fields, comma-separated, lower case
	lengths    int
	lengthText string
}

// addField parses one response header line into h: framing fields are
// read (the router writes its own), hop-by-hop ones dropped, the rest kept.
func (h *respHead) addField(line []byte, fr *respFraming) bool {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !allToken(line[:colon]) {
		return false
	}
	name, value := line[:colon], trimOWS(line[colon+1:])
	if !allFieldValue(value) {
		return false
	}
	switch {
	case equalFold(name, "content-length"):
		// Repeats must be the same text (net/http's rule too).
		n, ok := parseLength(value)
		if !ok || (fr.lengths > 0 && string(value) != fr.lengthText) {
			return false
		}
		fr.lengths++
		fr.lengthText = view(value)
		h.contentLength = n
		return true
	case equalFold(name, "transfer-encoding"):
		// HTTP/1.0 has no transfer codings (net/http ignores the field
		// there and reads to the end): ambiguous, so refused.
		if h.chunked || h.http10 || !equalFold(value, "chunked") {
			return false
		}
		h.chunked = true
		return true
	case equalFold(name, "connection"):
		h.connectionTokens(value, fr)
		return true
	case HopByHop(view(name), true):
		return true
	case equalFold(name, "date"):
		h.hasDate = true
	}
	h.fields = append(h.fields, headerField{name: view(name), value: view(value)}) // no count limit: the head's size is (1 MiB)
	return true
}

// connectionTokens reads a response's Connection field: close, keep-alive
// (HTTP/1.0), and the fields it names, which are dropped.
func (h *respHead) connectionTokens(value []byte, fr *respFraming) {
	for _, tok := range bytes.Split(value, []byte{','}) {
		tok = trimOWS(tok)
		switch {
		case equalFold(tok, "close"):
			h.close = true
		case equalFold(tok, "keep-alive"):
			if h.http10 {
				h.close = false
			}
		case len(tok) > 0:
			fr.dropped = append(append(fr.dropped, bytes.ToLower(tok)...), ',')
		}
	}
}

// namedIn reports whether name (any case) is one of the comma-terminated
// lower-case names in list.
func namedIn(list []byte, name string) bool {
	for len(list) > 0 {
		i := bytes.IndexByte(list, ',')
		if equalFold(name, view(list[:i])) {
			return true
		}
		list = list[i+1:]
	}
	return false
}

// cutLine splits off one CRLF-terminated line. A bare CR or LF is refused.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	line = b[:i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, false
	}
	return line, b[i+1:], true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold compares ASCII case-insensitively; lower must be lower case.
func equalFold[T []byte | string](b T, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// allIn reports whether every byte of b is in set.
func allIn[T []byte | string](b T, set *[256]bool) bool {
	for i := 0; i < len(b); i++ {
		if !set[b[i]] {
			return false
		}
	}
	return true
}

func allToken[T []byte | string](b T) bool { return allIn(b, &tokenTable) }

// plainTarget reports whether an origin-form target is one net/http would
// forward byte for byte: a path of characters url.URL.EscapedPath keeps as
// they are, then an optional query of visible ASCII. No '%' (so the path the
// tenant is read from is the decoded path) and no '#'.
func plainTarget(b []byte) bool {
	i := 0
	for ; i < len(b) && b[i] != '?'; i++ {
		if !pathByte[b[i]] {
			return false
		}
	}
	// The query as httputil.ReverseProxy forwards it unchanged: no ';' and
	// only well-formed escapes (otherwise it re-encodes the query, dropping
	// what does not parse: net/http's way).
	for ; i < len(b); i++ {
		switch c := b[i]; {
		case c <= ' ' || c >= 0x7f || c == '#' || c == ';':
			return false
		case c == '%':
			if i+2 >= len(b) || !isHex(b[i+1]) || !isHex(b[i+2]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

var pathByte = alnumPlus("-_.~!$&'()*+,;=:@[]/")

// allFieldValue: field-content without obs-fold; control bytes but HT are
// refused (net/http refuses them too).
func allFieldValue[T []byte | string](b T) bool {
	for i := 0; i < len(b); i++ {
		if c := b[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func allPlainHost[T []byte | string](b T) bool { return allIn(b, &plainHostByte) }

// parseLength parses a Content-Length: 1 to 18 decimal digits.
func parseLength(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// connectionTokensKnown reports whether a request's Connection header says
// only "close" and "keep-alive" (a header named there would have to be
// removed: net/http's way does that).
func connectionTokensKnown(v []byte, close *bool) bool {
	for _, tok := range bytes.Split(v, []byte{','}) {
		tok = trimOWS(tok)
		switch {
		case equalFold(tok, "close"):
			*close = true
		case equalFold(tok, "keep-alive"), len(tok) == 0:
		default:
			return false
		}
	}
	return true
}

// hopByHop is the router's one table of hop-by-hop fields: those a proxy
// never forwards (RFC 9110 §7.6.1; httputil.ReverseProxy's list, which the
// net/http engine applies), in a request or (response) a response. Two
// exceptions, in responses only: Proxy-Authenticate is relayed (a 407
// needs it; nginx relays it too), and Trailer stays (chunked bodies and
// their trailers pass through as they are). Fields named in Connection
// are dropped too, and the framing fields are the router's to write.
func HopByHop(name string, response bool) bool {
	switch len(name) {
	case 2:
		return equalFold(name, "te")
	case 7:
		return equalFold(name, "upgrade") || !response && equalFold(name, "trailer")
	case 10:
		return equalFold(name, "connection") || equalFold(name, "keep-alive")
	case 16:
		return equalFold(name, "proxy-connection")
	case 17:
		return equalFold(name, "transfer-encoding")
	case 18:
		return !response && equalFold(name, "proxy-authenticate")
	case 19:
		return equalFold(name, "proxy-authorization")
	}
	return false
}

// refusedHead says why a request head that goes to net/http is refused
// instead (nil if it is not: ErrAmbiguousFraming or ErrObsFold): both a Content-Length and a Transfer-Encoding
// field, however spelled, or an obsolete line folding (RFC 9112 §5.2 lets a
// server refuse it; nginx does, and a folded Transfer-Encoding is a classic
// smuggling shape). b is the start of the head, CRLF or bare LF line ends,
// complete or not.
func refusedHead(b []byte) error {
	length, coding := false, false
	_, b, _ = bytes.Cut(b, []byte{'\n'}) // the request line
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return ErrObsFold
		}
		name, _, _ := bytes.Cut(line, []byte{':'})
		name = trimOWS(name)
		length = length || equalFold(name, "content-length")
		coding = coding || equalFold(name, "transfer-encoding")
	}
	if length && coding {
		return ErrAmbiguousFraming
	}
	return nil
}
