package controller

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/consul/api"
)

// idempotent makes a POST with an Idempotency-Key answer a repeat with the
// first answer: same key and same body → same status and body, nothing done
// twice; same key with a different body → 422.
func (s *Server) idempotent() gin.HandlerFunc {
	return func(c *gin.Context) {
		key := c.GetHeader("Idempotency-Key")
		if key == "" {
			c.Next()
			return
		}
		if len(key) > 200 {
			fail(c, http.StatusBadRequest, "invalid", "Idempotency-Key must be at most 200 characters")
			return
		}
		body, err := io.ReadAll(io.LimitReader(c.Request.Body, 1<<20))
		if err != nil {
			fail(c, http.StatusBadRequest, "bad_body", "could not read the body")
			return
		}
		c.Request.Body = io.NopCloser(bytes.NewReader(body))
		h := sha256.Sum256([]byte(actor(c) + "\x00" + c.Request.Method + "\x00" + c.Request.URL.Path + "\x00" + key))
		kvKey := s.cfg.Prefix + "/idempotency/" + hex.EncodeToString(h[:16])
		bodyHash := sha256.Sum256(body)
		type record struct {
			BodyHash string          `json:"body_hash"`
			Status   int             `json:"status"`
			Response json.RawMessage `json:"response"`
		}
		if pair, _, err := s.client.KV().Get(kvKey, (&api.QueryOptions{}).WithContext(c.Request.Context())); err == nil && pair != nil {
			var r record
			if json.Unmarshal(pair.Value, &r) == nil {
				if r.BodyHash != hex.EncodeToString(bodyHash[:]) {
					fail(c, http.StatusUnprocessableEntity, "idempotency_key_reused", "this Idempotency-Key was used with a different body")
					return
				}
				c.Header("Idempotent-Replay", "true")
				c.Data(r.Status, "application/json", r.Response)
				c.Abort()
				return
			}
		}
		rec := &captureWriter{ResponseWriter: c.Writer}
		c.Writer = rec
		c.Next()
		if status := c.Writer.Status(); status < 500 && status != http.StatusConflict {
			data, _ := json.Marshal(record{BodyHash: hex.EncodeToString(bodyHash[:]), Status: status, Response: rec.buf.Bytes()})
			_, _ = s.client.KV().Put(&api.KVPair{Key: kvKey, Value: data}, nil)
		}
	}
}

type captureWriter struct {
	gin.ResponseWriter
	buf bytes.Buffer
}

func (w *captureWriter) Write(b []byte) (int, error) {
	w.buf.Write(b)
	return w.ResponseWriter.Write(b)
}

func (w *captureWriter) WriteString(s string) (int, error) {
	w.buf.WriteString(s)
	return w.ResponseWriter.WriteString(s)
}
