package router

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
	"sync/atomic"
)

// HeaderRequestID carries a request's id to the backend.
const HeaderRequestID = "X-Request-Id"

// maxRequestIDLen bounds a trusted client's request id.
const maxRequestIDLen = 128

// requestIDs makes request ids: 32 hex digits, a random per-process prefix
// and a counter. Unique without coordination (two processes share a prefix
// with probability 2^-64), and one atomic add per request.
type requestIDs struct {
	prefix [16]byte // hex of 8 random bytes
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	g := &requestIDs{}
	var b [8]byte
	_, _ = rand.Read(b[:])
	hex.Encode(g.prefix[:], b[:])
	return g
}

func (g *requestIDs) next() uint64 { return g.n.Add(1) }

// requestID is a request's id: generated (n > 0) or a trusted client's (in).
type requestID struct {
	n  uint64
	in string
}

// appendTo appends the id's text to b.
func (id requestID) appendTo(b []byte, g *requestIDs) []byte {
	if id.in != "" {
		return append(b, id.in...)
	}
	if id.n == 0 || g == nil {
		return b
	}
	b = append(b, g.prefix[:]...)
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[(id.n>>uint(shift))&0xf])
	}
	return b
}

// validRequestID: a client's id worth passing on (1–128 visible ASCII
// characters, no quote or backslash, so it needs no escaping anywhere).
func validRequestID(v string) bool {
	if len(v) == 0 || len(v) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// isRequestIDField reports a header name that is X-Request-Id in any case,
// also spelled with underscores (CGI-style servers read it as the same).
// routerOwnedOrRequestID drops, besides the router-owned fields, a
// client's X-Request-Id the router replaces.
func routerOwnedOrRequestID(k string) bool { return routerOwned(k) || isRequestIDField(k) }

func isRequestIDField(k string) bool {
	const name = "x-request-id"
	if len(k) != len(name) {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c == '_' {
			c = '-'
		}
		if c|0x20 != name[i] {
			return false
		}
	}
	return true
}

// trustedID returns the client's X-Request-Id when ids from clients are
// trusted and it sent exactly one valid one. values yields the header's
// fields as (name, value).
func (o *observer) trustedID(values func(yield func(k, v string) bool)) (string, bool) {
	if !o.trust {
		return "", false
	}
	found, n := "", 0
	for k, v := range values {
		if isRequestIDField(k) {
			found = v
			n++
		}
	}
	return found, n == 1 && validRequestID(found)
}

// setRequestIDHeader removes every client copy of X-Request-Id from an
// outbound net/http request and sets the request's id (a trusted client's
// own stays as it was).
func (o *observer) setRequestIDHeader(h http.Header, c *completion) {
	if o.ids == nil {
		return
	}
	in, ok := o.trustedID(func(yield func(k, v string) bool) {
		for k, vs := range h {
			for _, v := range vs {
				if !yield(k, v) {
					return
				}
			}
		}
	})
	if ok {
		c.id.in = strings.Clone(in)
		return
	}
	for k := range h {
		if isRequestIDField(k) {
			delete(h, k)
		}
	}
	h[HeaderRequestID] = []string{string(c.id.appendTo(make([]byte, 0, 32), o.ids))}
}

// appendRequestIDField appends the X-Request-Id field for the fast path's
// outbound head, unless the client's trusted one is kept (keep).
func (o *observer) appendRequestIDField(b []byte, c *completion, keep bool) []byte {
	if o.ids == nil || keep {
		return b
	}
	b = append(b, HeaderRequestID+": "...)
	b = c.id.appendTo(b, o.ids)
	return append(b, "\r\n"...)
}
