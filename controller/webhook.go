package controller

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/catalog"
)

// SignatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256 of
// "<t>.<body>">" on billing webhooks.
const SignatureHeader = "X-Switchyard-Signature"

// webhookTolerance is how old (or how far in the future) a signed webhook
// may be: replays of older deliveries are refused.
const webhookTolerance = 5 * time.Minute

// BillingEvent is what billing sends.
type BillingEvent struct {
	ID     string `json:"id"`
	Type   string `json:"type"` // "plan.changed"
	Tenant string `json:"tenant"`
	Plan   string `json:"plan"`
}

// SignWebhook signs a body the way the billing webhook expects (for the
// CLI, the dev stack and tests).
func SignWebhook(secret, body []byte, at time.Time) string {
	ts := strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

func (s *Server) verifySignature(header string, body []byte) error {
	if len(s.cfg.WebhookSecret) == 0 {
		return fmt.Errorf("webhooks are not configured")
	}
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return fmt.Errorf("signature header must be t=<unix>,v1=<hex>")
	}
	if d := time.Since(time.Unix(sec, 0)); d > webhookTolerance || d < -webhookTolerance {
		return fmt.Errorf("signature timestamp outside ±%s: a replay?", webhookTolerance)
	}
	want, err := hex.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("signature is not hex")
	}
	mac := hmac.New(sha256.New, s.cfg.WebhookSecret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), want) {
		return fmt.Errorf("signature does not match")
	}
	return nil
}

// webhookCaller is the caller in a billing event's fingerprint and audit
// entries.
const webhookCaller = "billing-webhook"

// billingWebhook: HMAC-signed, run at most once per event id (the
// idempotency store's webhook namespace): a redelivery gets the first
// answer, one arriving while the first runs waits for it, and a failed
// delivery releases the id so that billing's retry runs again.
func (s *Server) billingWebhook(c *gin.Context) {
	body, ev, ok := s.readBillingEvent(c)
	if !ok {
		return
	}
	fp := requestFingerprint(c.Request.Method, c.Request.URL.Path, webhookCaller, body)
	s.runOnce(c, nsWebhook, ev.ID, fp, func(c *gin.Context) {
		res, status, err := s.changePlan(c.Request.Context(), ev.Tenant, ev.Plan, webhookCaller, "billing event "+ev.ID)
		if err != nil {
			failErr(c, err)
			return
		}
		c.JSON(status, res)
	})
}

// readBillingEvent reads, verifies and validates a delivery; it answers
// the errors itself.
func (s *Server) readBillingEvent(c *gin.Context) ([]byte, BillingEvent, bool) {
	var ev BillingEvent
	body, err := io.ReadAll(io.LimitReader(c.Request.Body, 64<<10))
	if err != nil {
		fail(c, http.StatusBadRequest, "bad_body", "could not read the body")
		return nil, ev, false
	}
	if err := s.verifySignature(c.GetHeader(SignatureHeader), body); err != nil {
		fail(c, http.StatusUnauthorized, "bad_signature", err.Error())
		return nil, ev, false
	}
	dec := jsonDecoder(bytes.NewReader(body))
	if err := dec.Decode(&ev); err != nil {
		fail(c, http.StatusBadRequest, "bad_json", "event: "+strings.TrimPrefix(err.Error(), "json: "))
		return nil, ev, false
	}
	switch {
	case ev.ID == "" || len(ev.ID) > 200 || strings.ContainsAny(ev.ID, "/ \t\n"):
		fail(c, http.StatusBadRequest, "invalid", "event id must be 1..200 characters without slashes or spaces")
	case ev.Type != "plan.changed":
		fail(c, http.StatusBadRequest, "invalid", fmt.Sprintf("event type %q is not handled (plan.changed is)", ev.Type))
	case !catalog.ValidID(ev.Tenant) || !catalog.ValidID(ev.Plan):
		fail(c, http.StatusBadRequest, "invalid", "tenant and plan must be lowercase identifiers")
	default:
		return body, ev, true
	}
	return nil, ev, false
}
