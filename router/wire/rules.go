package wire

import (
	"net/http"
	"strconv"
)

// SafeMethod: GET, HEAD, OPTIONS, TRACE ("" is GET). A safe method's
// request, bodiless, may be sent again on a fresh connection (net/http's
// rule); the router's retry rules build on it.
func SafeMethod(m string) bool {
	switch m {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// HasIdempotencyKey: the request carries Idempotency-Key or
// X-Idempotency-Key, which makes any method safe to send again.
func HasIdempotencyKey(h http.Header) bool {
	_, a := h["Idempotency-Key"]
	_, b := h["X-Idempotency-Key"]
	return a || b
}

// IdempotencyKey is HasIdempotencyKey for a parsed head.
func (h *RequestHead) IdempotencyKey() bool {
	return h.Has("idempotency-key") || h.Has("x-idempotency-key")
}

var statusTexts = func() map[int]string {
	m := make(map[int]string, 600)
	for c := 100; c < 600; c++ {
		m[c] = strconv.Itoa(c)
	}
	return m
}()

// StatusText is a status code in decimal, without allocating: "200" for 0
// (a hijacked or empty response), "other" outside 100-599.
func StatusText(code int) string {
	if code == 0 {
		code = 200
	}
	if s, ok := statusTexts[code]; ok {
		return s
	}
	return "other"
}
