package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// IdempotencyKeyHeader names the key a client sends to make a POST safe to
// retry.
const IdempotencyKeyHeader = "Idempotency-Key"

// ReplayHeader is set ("true") on an answer replayed from an earlier
// request with the same key.
const ReplayHeader = "Idempotent-Replay"

// maxIdempotencyKey bounds the key's length.
const maxIdempotencyKey = 200

// keptHeaders are the answer headers stored with it and replayed.
var keptHeaders = []string{"Content-Type", "Location"}

// idempotent makes a POST with an Idempotency-Key run at most once per
// key: a repeat of the same request (same method, path, caller and body)
// gets the first answer, replayed; one arriving while the first runs waits
// for it; the key used with another request is refused (422).
func (s *Server) idempotent() gin.HandlerFunc {
	return func(c *gin.Context) {
		key := c.GetHeader(IdempotencyKeyHeader)
		if key == "" {
			c.Next()
			return
		}
		if len(key) > maxIdempotencyKey {
			fail(c, http.StatusBadRequest, "invalid", fmt.Sprintf("%s must be at most %d characters", IdempotencyKeyHeader, maxIdempotencyKey))
			return
		}
		body, err := io.ReadAll(io.LimitReader(c.Request.Body, maxBody+1))
		if err != nil {
			fail(c, http.StatusBadRequest, "bad_body", "could not read the body")
			return
		}
		if len(body) > maxBody {
			fail(c, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the body must be at most %d bytes", maxBody))
			return
		}
		c.Request.Body = io.NopCloser(bytes.NewReader(body))
		fp := requestFingerprint(c.Request.Method, c.Request.URL.RequestURI(), actor(c), body)
		s.runOnce(c, nsAPI, key, fp, func(c *gin.Context) { c.Next() })
	}
}

// runOnce runs handler at most once per key in ns (see idemStore), and
// answers duplicates, mismatches and requests still in progress itself.
func (s *Server) runOnce(c *gin.Context, ns idemNamespace, key, fp string, handler gin.HandlerFunc) {
	claim, prev, err := s.idem.Begin(c.Request.Context(), ns, key, fp)
	switch {
	case errors.Is(err, errIdemMismatch):
		fail(c, http.StatusUnprocessableEntity, "idempotency_key_reused",
			fmt.Sprintf("this %s was used for another request (method, path, caller or body differ); it is not run", ns.what))
		return
	case errors.Is(err, errIdemInProgress):
		c.Header("Retry-After", "1")
		fail(c, http.StatusConflict, "idempotency_in_progress",
			fmt.Sprintf("a request with this %s is still running; retry to get its answer", ns.what))
		return
	case err != nil:
		failErr(c, err)
		return
	case prev != nil:
		replay(c, prev)
		return
	}
	w := &captureWriter{ResponseWriter: c.Writer}
	c.Writer = w
	settled := false
	defer func() {
		if !settled { // the handler panicked: let a retry run
			s.settle(c.Request.Context(), ns, claim, http.StatusInternalServerError, w)
		}
	}()
	handler(c)
	settled = true
	s.settle(c.Request.Context(), ns, claim, c.Writer.Status(), w)
}

// settle stores a final answer, or releases the claim for any other.
func (s *Server) settle(ctx context.Context, ns idemNamespace, claim *idemClaim, status int, w *captureWriter) {
	// The client may be gone; the record must still be written.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if !ns.keep(status) {
		if err := claim.Release(ctx); err != nil {
			s.log.Warn("releasing an idempotency key", "key", claim.key, "err", err)
		}
		return
	}
	a := idemAnswer{Status: status, Headers: map[string]string{}, Body: w.buf.Bytes(), BodyOmitted: w.overflow}
	for _, h := range keptHeaders {
		if v := w.Header().Get(h); v != "" {
			a.Headers[h] = v
		}
	}
	if err := claim.Finish(ctx, a); err != nil {
		s.log.Error("storing an idempotent answer; a retry after the claim's lease may run again", "key", claim.key, "err", err)
	}
}

// replay answers with a stored answer.
func replay(c *gin.Context, rec *idemRecord) {
	for k, v := range rec.Headers {
		c.Header(k, v)
	}
	c.Header(ReplayHeader, "true")
	body, ctype := rec.Body, rec.Headers["Content-Type"]
	if rec.BodyOmitted {
		body, ctype = []byte(`{"note":"the first answer's body was too large to keep; the request ran once, with this status"}`), "application/json"
	}
	if ctype == "" {
		ctype = "application/json"
	}
	c.Data(rec.Status, ctype, body)
	c.Abort()
}

// captureWriter keeps a copy of the answer's body (up to maxStoredBody)
// while writing it.
type captureWriter struct {
	gin.ResponseWriter
	buf      bytes.Buffer
	overflow bool
}

func (w *captureWriter) keep(n int, write func()) {
	if w.overflow || w.buf.Len()+n > maxStoredBody {
		w.overflow = true
		w.buf.Reset()
		return
	}
	write()
}

func (w *captureWriter) Write(b []byte) (int, error) {
	w.keep(len(b), func() { w.buf.Write(b) })
	return w.ResponseWriter.Write(b)
}

func (w *captureWriter) WriteString(s string) (int, error) {
	w.keep(len(s), func() { w.buf.WriteString(s) })
	return w.ResponseWriter.WriteString(s)
}
