package controller

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/consul/api"

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

// billingWebhook: HMAC-signed, idempotent by event id (the outcome of the
// first delivery is stored and returned again for redeliveries).
func (s *Server) billingWebhook(c *gin.Context) {
	body, err := io.ReadAll(io.LimitReader(c.Request.Body, 64<<10))
	if err != nil {
		fail(c, http.StatusBadRequest, "bad_body", "could not read the body")
		return
	}
	if err := s.verifySignature(c.GetHeader(SignatureHeader), body); err != nil {
		fail(c, http.StatusUnauthorized, "bad_signature", err.Error())
		return
	}
	var ev BillingEvent
	dec := jsonDecoder(bytes.NewReader(body))
	if err := dec.Decode(&ev); err != nil {
		fail(c, http.StatusBadRequest, "bad_json", "event: "+strings.TrimPrefix(err.Error(), "json: "))
		return
	}
	if ev.ID == "" || len(ev.ID) > 200 || strings.ContainsAny(ev.ID, "/ \t\n") {
		fail(c, http.StatusBadRequest, "invalid", "event id must be 1..200 characters without slashes or spaces")
		return
	}
	if ev.Type != "plan.changed" {
		fail(c, http.StatusBadRequest, "invalid", fmt.Sprintf("event type %q is not handled (plan.changed is)", ev.Type))
		return
	}
	if !catalog.ValidID(ev.Tenant) || !catalog.ValidID(ev.Plan) {
		fail(c, http.StatusBadRequest, "invalid", "tenant and plan must be lowercase identifiers")
		return
	}
	ctx := c.Request.Context()
	key := s.cfg.Prefix + "/webhooks/" + ev.ID
	// Claim the event id; a redelivery finds it and gets the first answer.
	// A claim whose handler died (no outcome after a minute) is taken over.
	claim, _ := json.Marshal(gin.H{"status": 0, "claimed": time.Now().UTC()})
	ok, _, err := s.client.KV().CAS(&api.KVPair{Key: key, Value: claim, ModifyIndex: 0}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		failErr(c, err)
		return
	}
	if !ok {
		pair, _, err := s.client.KV().Get(key, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil || pair == nil {
			failErr(c, fmt.Errorf("webhook %s: %v", ev.ID, err))
			return
		}
		var stored struct {
			Status  int             `json:"status"`
			Body    json.RawMessage `json:"body"`
			Claimed time.Time       `json:"claimed"`
		}
		_ = json.Unmarshal(pair.Value, &stored)
		if stored.Status == 0 {
			stale := time.Since(stored.Claimed) > time.Minute
			if !stale {
				fail(c, http.StatusConflict, "in_progress", "this event is being handled; retry later")
				return
			}
			ok, _, err := s.client.KV().CAS(&api.KVPair{Key: key, Value: claim, ModifyIndex: pair.ModifyIndex}, (&api.WriteOptions{}).WithContext(ctx))
			if err != nil || !ok {
				fail(c, http.StatusConflict, "in_progress", "this event is being handled; retry later")
				return
			}
		} else {
			c.Header("X-Switchyard-Duplicate", "true")
			c.Data(stored.Status, "application/json", stored.Body)
			return
		}
	}
	res, status, err := s.changePlan(ctx, ev.Tenant, ev.Plan, "billing-webhook", "billing event "+ev.ID)
	if err != nil {
		_, _ = s.client.KV().Delete(key, nil) // let billing retry
		failErr(c, err)
		return
	}
	out, _ := json.Marshal(res)
	record, _ := json.Marshal(gin.H{"status": status, "body": json.RawMessage(out)})
	if _, err := s.client.KV().Put(&api.KVPair{Key: key, Value: record}, nil); err != nil {
		s.log.Warn("storing webhook outcome", "event", ev.ID, "err", err)
	}
	c.Data(status, "application/json", out)
}
