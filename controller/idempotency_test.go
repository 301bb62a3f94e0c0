package controller

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

func TestRequestFingerprint(t *testing.T) {
	base := requestFingerprint("POST", "/v1/tenants", "billing:1a2b3c4d", []byte(`{"id":"a","plan":"free"}`))
	for _, tc := range []struct {
		name                string
		method, uri, caller string
		body                string
		same                bool
	}{
		{"identical", "POST", "/v1/tenants", "billing:1a2b3c4d", `{"id":"a","plan":"free"}`, true},
		{"other body", "POST", "/v1/tenants", "billing:1a2b3c4d", `{"id":"b","plan":"free"}`, false},
		{"re-encoded body", "POST", "/v1/tenants", "billing:1a2b3c4d", `{"plan":"free","id":"a"}`, false},
		{"other path", "POST", "/v1/targets", "billing:1a2b3c4d", `{"id":"a","plan":"free"}`, false},
		{"other query", "POST", "/v1/tenants?x=1", "billing:1a2b3c4d", `{"id":"a","plan":"free"}`, false},
		{"other method", "PUT", "/v1/tenants", "billing:1a2b3c4d", `{"id":"a","plan":"free"}`, false},
		{"other token, same role", "POST", "/v1/tenants", "billing:ffffffff", `{"id":"a","plan":"free"}`, false},
		{"other role", "POST", "/v1/tenants", "operator:1a2b3c4d", `{"id":"a","plan":"free"}`, false},
		{"no body", "POST", "/v1/tenants", "billing:1a2b3c4d", ``, false},
	} {
		got := requestFingerprint(tc.method, tc.uri, tc.caller, []byte(tc.body))
		if (got == base) != tc.same {
			t.Errorf("%s: fingerprint %q vs %q, same=%v want %v", tc.name, got, base, got == base, tc.same)
		}
		if strings.Contains(got, tc.body) && tc.body != "" {
			t.Errorf("%s: the fingerprint holds the body itself: %q", tc.name, got)
		}
	}
}

func TestIdempotencyDecide(t *testing.T) {
	const fp, other = "POST /v1/tenants by billing:1 sha256:aa", "POST /v1/tenants by billing:1 sha256:bb"
	ttl := 24 * time.Hour
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	running := func(age, leaseLeft time.Duration, f string) *idemRecord {
		return &idemRecord{State: idemRunning, Fingerprint: f, CreatedAt: now.Add(-age), LeaseUntil: now.Add(leaseLeft)}
	}
	done := func(age time.Duration, f string) *idemRecord {
		return &idemRecord{State: idemDone, Fingerprint: f, CreatedAt: now.Add(-age), Status: 201}
	}
	for _, tc := range []struct {
		name string
		rec  *idemRecord
		want idemVerdict
	}{
		{"no record", nil, verdictClaim},
		{"done, same request", done(time.Hour, fp), verdictReplay},
		{"done, another request", done(time.Hour, other), verdictMismatch},
		{"done, just inside the TTL", done(ttl-time.Nanosecond, fp), verdictReplay},
		{"done, TTL reached", done(ttl, fp), verdictClaim},
		{"done long ago, another request", done(ttl+time.Hour, other), verdictClaim},
		{"running, same request", running(time.Second, 20*time.Second, fp), verdictWait},
		{"running, another request", running(time.Second, 20*time.Second, other), verdictMismatch},
		{"running, lease ran out (replica died)", running(time.Minute, -time.Second, fp), verdictClaim},
		{"running, lease ran out, another request", running(time.Minute, -time.Second, other), verdictMismatch},
		{"running, lease ends now", running(time.Minute, 0, fp), verdictClaim},
		{"running past the TTL", running(ttl+time.Second, time.Hour, other), verdictClaim},
		{"unreadable (no creation time)", &idemRecord{}, verdictClaim},
		{"old layout {body_hash, status, response}", &idemRecord{Status: 201}, verdictClaim},
		{"unknown state", &idemRecord{State: "weird", Fingerprint: fp, CreatedAt: now}, verdictClaim},
	} {
		if got := decide(tc.rec, fp, now, ttl); got != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestIdempotencyKeepRules(t *testing.T) {
	for _, tc := range []struct {
		status            int
		keepAPI, keepHook bool
	}{
		{200, true, true},
		{201, true, true},
		{202, true, true},
		{204, true, true},
		{400, true, false},
		{404, true, false},
		{409, false, false},
		{422, true, false},
		{429, false, false},
		{500, false, false},
		{503, false, false},
	} {
		if got := keepAPIAnswer(tc.status); got != tc.keepAPI {
			t.Errorf("API %d: keep=%v, want %v", tc.status, got, tc.keepAPI)
		}
		if got := keepWebhookAnswer(tc.status); got != tc.keepHook {
			t.Errorf("webhook %d: keep=%v, want %v", tc.status, got, tc.keepHook)
		}
	}
}

// Keys are hashed into their namespace: client text never shapes the path,
// and one key in two namespaces is two records.
func TestIdempotencyKeyLayout(t *testing.T) {
	st := &idemStore{prefix: "switchyard/idempotency/"}
	for _, key := range []string{"abc", "../../config/policy", "a/b c", strings.Repeat("x", 200)} {
		api, hook := st.kvKey(nsAPI, key), st.kvKey(nsWebhook, key)
		if !strings.HasPrefix(api, "switchyard/idempotency/api/") || !strings.HasPrefix(hook, "switchyard/idempotency/webhook/") {
			t.Fatalf("%q: keys %q, %q", key, api, hook)
		}
		if rest := strings.TrimPrefix(api, "switchyard/idempotency/api/"); len(rest) != 64 || strings.ContainsAny(rest, "./ ") {
			t.Fatalf("%q: key %q is not a hash", key, api)
		}
	}
	if st.kvKey(nsAPI, "a") == st.kvKey(nsAPI, "b") {
		t.Fatal("two keys share a record")
	}
}

func TestCaptureWriterBound(t *testing.T) {
	for _, tc := range []struct {
		name     string
		writes   []int
		overflow bool
	}{
		{"small", []int{10, 20}, false},
		{"exactly the bound", []int{maxStoredBody}, false},
		{"one byte over", []int{maxStoredBody, 1}, true},
		{"one big write", []int{maxStoredBody + 1}, true},
	} {
		c, _ := gin.CreateTestContext(httptest.NewRecorder())
		w := &captureWriter{ResponseWriter: c.Writer}
		total := 0
		for _, n := range tc.writes {
			_, _ = w.Write(make([]byte, n))
			total += n
		}
		if w.overflow != tc.overflow {
			t.Errorf("%s: overflow=%v, want %v", tc.name, w.overflow, tc.overflow)
		}
		if !tc.overflow && w.buf.Len() != total {
			t.Errorf("%s: kept %d bytes, want %d", tc.name, w.buf.Len(), total)
		}
	}
}
