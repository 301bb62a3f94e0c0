package integration

import (
	"context"
	"os/exec"
	"syscall"

	"bytes"
	"encoding/json"
	"fmt"
	"github.com/switchyard/switchyard/test/harness"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/migrator"
)

var (
	tokViewer   = "viewer-token-0123456789"
	tokBilling  = "billing-token-0123456789"
	tokOperator = "operator-token-0123456789"
	hookSecret  = []byte("webhook-secret-0123456789abcdef0123")
)

func controllerConfig() controller.Config {
	return controller.Config{
		Listen:        "127.0.0.1:0",
		Tokens:        map[string]controller.Role{tokViewer: controller.RoleViewer, tokBilling: controller.RoleBilling, tokOperator: controller.RoleOperator},
		WebhookSecret: hookSecret, LeaderTTL: time.Second, Retention: time.Hour,
	}
}

// startController runs a replica in-process; it returns its base URL.
func (s *moveStack) startController(edit func(*controller.Config)) (*controller.Server, string, context.CancelFunc) {
	s.t.Helper()
	cfg := controllerConfig()
	cfg.Logger = testLogger(s.t)
	if edit != nil {
		edit(&cfg)
	}
	srv, err := controller.New(cfg, s.consul.Client())
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }()
	addr, err := srv.Addr(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { cancel(); <-done })
	return srv, "http://" + addr, cancel
}

func call(t testing.TB, method, url, token string, body any, hdr map[string]string) (int, map[string]any) {
	t.Helper()
	status, out, _, err := callE(method, url, token, body, hdr)
	if err != nil {
		t.Fatal(err)
	}
	return status, out
}

// callE is call for goroutines other than the test's: it returns a failed
// exchange as an error instead of failing the test, and the answer's
// headers too.
func callE(method, url, token string, body any, hdr map[string]string) (int, map[string]any, http.Header, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := shortClient.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(data, &out)
	return resp.StatusCode, out, resp.Header, nil
}

// Every endpoint × every role, missing and bad tokens: 401 without a valid
// token, 403 for a role that may not, never a 5xx, and every error a JSON
// body with a code and a message.
func TestControllerAuthorizationMatrix(t *testing.T) {
	s := newMoveStack(t)
	s.seedTenant("acme", "free", catalog.TierShared, "pool-1", 0)
	_, base, _ := s.startController(nil)
	type ep struct {
		method, path string
		body         any
		allowed      []string
	}
	all := []string{"viewer", "billing", "operator"}
	eps := []ep{
		{"GET", "/v1/tenants", nil, all},
		{"POST", "/v1/tenants", map[string]any{"id": "matrix-new", "plan": "free"}, []string{"billing", "operator"}},
		{"GET", "/v1/tenants/acme", nil, all},
		{"PUT", "/v1/tenants/acme/plan", map[string]any{"plan": "starter"}, []string{"billing", "operator"}},
		{"DELETE", "/v1/tenants/nobody", nil, []string{"operator"}},
		{"GET", "/v1/targets", nil, all},
		{"POST", "/v1/targets", map[string]any{"id": "pool-9", "tier": "shared", "service": "app-shared", "dsn": "postgres://x@127.0.0.1:1/p"}, []string{"operator"}},
		{"POST", "/v1/targets/pool-2/cordon", map[string]any{"cordoned": false}, []string{"operator"}},
		{"POST", "/v1/targets/pool-2/drain", map[string]any{"dry_run": true}, []string{"operator"}},
		{"GET", "/v1/moves", nil, all},
		{"GET", "/v1/moves/none", nil, all},
		{"POST", "/v1/moves/none/abort", nil, []string{"operator"}},
		{"POST", "/v1/moves/none/retry", nil, []string{"operator"}},
		{"POST", "/v1/rebalance", map[string]any{"dry_run": true}, []string{"operator"}},
		{"GET", "/v1/audit", nil, all},
		{"GET", "/v1/plans", nil, all},
		{"PUT", "/v1/plans/free/limits", map[string]any{"concurrent_requests": 50}, []string{"operator"}},
		{"GET", "/v1/tenants/acme/limits", nil, all},
		{"PUT", "/v1/tenants/acme/limits", map[string]any{"concurrent_requests": 5}, []string{"billing", "operator"}},
		{"DELETE", "/v1/tenants/acme/limits", nil, []string{"billing", "operator"}},
		{"GET", "/v1/tenants/acme/usage", nil, all},
		{"GET", "/v1/usage/export", nil, []string{"billing", "operator"}},
		{"GET", "/v1/tenants/acme/domains", nil, all},
		{"POST", "/v1/tenants/acme/domains", map[string]any{"domain": "matrix.acme.invalid"}, []string{"operator"}},
		{"GET", "/v1/tenants/acme/domains/matrix.acme.invalid", nil, all},
		{"POST", "/v1/tenants/acme/domains/matrix.acme.invalid/verify", nil, []string{"operator"}},
		{"DELETE", "/v1/tenants/acme/domains/matrix.acme.invalid", nil, []string{"operator"}},
	}
	tokens := map[string]string{"none": "", "bad": "not-a-real-token-at-all", "viewer": tokViewer, "billing": tokBilling, "operator": tokOperator}
	for _, e := range eps {
		for who, tok := range tokens {
			t.Run(e.method+" "+e.path+" as "+who, func(t *testing.T) {
				status, body := call(t, e.method, base+e.path, tok, e.body, nil)
				allowed := false
				for _, a := range e.allowed {
					allowed = allowed || a == who
				}
				switch {
				case who == "none" || who == "bad":
					if status != 401 {
						t.Fatalf("status %d, want 401", status)
					}
				case !allowed:
					if status != 403 {
						t.Fatalf("status %d, want 403", status)
					}
				default:
					if status == 401 || status == 403 {
						t.Fatalf("status %d for an allowed role", status)
					}
				}
				if status >= 500 {
					t.Fatalf("status %d: %v", status, body)
				}
				if status >= 400 && (body["error"] == nil || body["message"] == nil) {
					t.Fatalf("error body without code and message: %v", body)
				}
			})
		}
	}
}

// Malformed JSON and fuzzed fields get a 4xx that says what was wrong,
// never a 5xx, and change nothing.
func TestControllerRejectsBadInput(t *testing.T) {
	s := newMoveStack(t)
	s.seedTenant("acme", "free", catalog.TierShared, "pool-1", 0)
	_, base, _ := s.startController(nil)
	ctx := testContext(t)
	before, _ := s.store.ListTenants(ctx)
	beforeTargets, _ := s.store.ListTargets(ctx)
	bad := []struct {
		method, path string
		body         string
	}{
		{"POST", "/v1/tenants", `{`},
		{"POST", "/v1/tenants", `[]`},
		{"POST", "/v1/tenants", `{"id": "Bad ID", "plan": "free"}`},
		{"POST", "/v1/tenants", `{"id": "ok-id", "plan": "platinum"}`},
		{"POST", "/v1/tenants", `{"id": "ok-id", "plan": "free", "extra": 1}`},
		{"POST", "/v1/tenants", `{"id": "acme", "plan": "free"}`},
		{"POST", "/v1/tenants", `{"id": 12, "plan": "free"}`},
		{"POST", "/v1/tenants", `{"id": "ok-id", "plan": "free", "labels": {"Region!": "x"}}`},
		{"POST", "/v1/tenants", `{"id": "ok-id", "plan": "free"} trailing`},
		{"PUT", "/v1/tenants/acme/plan", `{"plan": ""}`},
		{"PUT", "/v1/tenants/acme/plan", `{"plan": "../../etc"}`},
		{"PUT", "/v1/tenants/nobody/plan", `{"plan": "pro"}`},
		{"POST", "/v1/targets", `{"id": "x", "tier": "gold", "service": "s", "dsn": "postgres://h/d"}`},
		{"POST", "/v1/targets", `{"id": "x", "tier": "shared", "service": "s", "dsn": "mysql://h/d"}`},
		{"POST", "/v1/targets", `{"id": "pool-1", "tier": "shared", "service": "s", "dsn": "postgres://h/d"}`},
		{"POST", "/v1/targets/pool-1/cordon", `{}`},
		{"POST", "/v1/targets/pool-1/cordon", `{"cordoned": "yes"}`},
		{"POST", "/v1/rebalance", `{"spread": 7}`},
		{"POST", "/v1/rebalance", `{"max_moves": -1}`},
	}
	rng := rand.New(rand.NewPCG(7, 7))
	junk := []any{nil, "", "x", strings.Repeat("a", 300), -1, 1e308, true, []any{1}, map[string]any{"a": 1}, "\u0000", "tenant\nid", "émoji🙂"}
	for i := 0; i < 60; i++ {
		body := map[string]any{"id": junk[rng.IntN(len(junk))], "plan": junk[rng.IntN(len(junk))]}
		if rng.IntN(2) == 0 {
			body["labels"] = junk[rng.IntN(len(junk))]
		}
		data, _ := json.Marshal(body)
		bad = append(bad, struct{ method, path, body string }{"POST", "/v1/tenants", string(data)})
		data, _ = json.Marshal(map[string]any{"plan": junk[rng.IntN(len(junk))], "reason": junk[rng.IntN(len(junk))]})
		bad = append(bad, struct{ method, path, body string }{"PUT", "/v1/tenants/acme/plan", string(data)})
	}
	for _, b := range bad {
		status, body := call(t, b.method, base+b.path, tokOperator, b.body, nil)
		if status < 400 || status >= 500 {
			if !(status == 200 && b.path == "/v1/tenants/acme/plan") { // a valid plan may come out of the junk
				t.Errorf("%s %s %s: status %d", b.method, b.path, b.body, status)
			}
		}
		if status >= 400 && (body["error"] == nil || body["message"] == nil) {
			t.Errorf("%s %s: error body %v", b.method, b.path, body)
		}
	}
	after, _ := s.store.ListTenants(ctx)
	afterTargets, _ := s.store.ListTargets(ctx)
	if len(after) != len(before) || len(afterTargets) != len(beforeTargets) {
		t.Fatalf("bad input changed the catalog: tenants %d → %d, targets %d → %d", len(before), len(after), len(beforeTargets), len(afterTargets))
	}
	if m, _ := s.migrator(nil).List(ctx); len(m) != 0 {
		t.Fatalf("bad input started %d moves", len(m))
	}
}

// The OpenAPI document and the routes agree, both ways.
func TestControllerOpenAPIMatchesRoutes(t *testing.T) {
	s := newStack(t)
	srv, err := controller.New(controllerConfig(), s.consul.Client())
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/openapi.json", nil))
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	served := map[string]bool{}
	for _, r := range srv.Routes() {
		if !strings.HasPrefix(r.Path, "/v1/") || r.Path == "/v1/openapi.json" {
			continue
		}
		p := r.Path
		for _, seg := range strings.Split(p, "/") {
			if strings.HasPrefix(seg, ":") {
				p = strings.Replace(p, seg, "{"+seg[1:]+"}", 1)
			}
		}
		served[r.Method+" "+p] = true
	}
	for k := range served {
		if !documented[k] {
			t.Errorf("route %s is not in the OpenAPI document", k)
		}
	}
	for k := range documented {
		if !served[k] {
			t.Errorf("the OpenAPI document lists %s, which is not served", k)
		}
	}
	if len(served) < 10 {
		t.Fatalf("only %d routes found", len(served))
	}
}

func webhook(t testing.TB, base string, ev controller.BillingEvent, at time.Time, secret []byte) (int, map[string]any) {
	body, hdr := signedEvent(ev, at, secret)
	return call(t, "POST", base+"/v1/webhooks/billing", "", body, hdr)
}

// signedEvent is a billing delivery: its body and signature header.
func signedEvent(ev controller.BillingEvent, at time.Time, secret []byte) (string, map[string]string) {
	body, _ := json.Marshal(ev)
	return string(body), map[string]string{controller.SignatureHeader: controller.SignWebhook(secret, body, at)}
}

// A plan change through the billing webhook puts the tenant on the right
// tier while writers run through the router: zero failed requests, data
// equal. The webhook is signed, idempotent by event id and replay-safe, and
// the audit log links the change to its move and the pause it caused.
func TestPlanChangeThroughBillingWebhook(t *testing.T) {
	s := newMoveStack(t)
	s.seedTenant("climber", "free", catalog.TierShared, "pool-1", 300)
	_, base, _ := s.startController(nil)
	storm := s.startStorm("climber", 2, 3*time.Millisecond)
	ev := controller.BillingEvent{ID: "evt_1", Type: "plan.changed", Tenant: "climber", Plan: "enterprise"}
	if st, _ := webhook(t, base, ev, time.Now(), []byte("wrong-secret-0123456789abcdef012345")); st != 401 {
		t.Fatalf("badly signed webhook: %d", st)
	}
	if st, _ := webhook(t, base, ev, time.Now().Add(-time.Hour), hookSecret); st != 401 {
		t.Fatalf("stale webhook (a replay): %d", st)
	}
	status, body := webhook(t, base, ev, time.Now(), hookSecret)
	if status != 202 {
		t.Fatalf("webhook: %d %v", status, body)
	}
	move := body["move"].(map[string]any)
	if move["to"] != "cl-1" {
		t.Fatalf("moving to %v, want the dedicated cluster", move["to"])
	}
	// Redelivery: same answer, no second move.
	status2, body2 := webhook(t, base, ev, time.Now(), hookSecret)
	if status2 != 202 || body2["move"].(map[string]any)["id"] != move["id"] {
		t.Fatalf("redelivered webhook: %d %v", status2, body2)
	}
	ctx := testContext(t)
	waitFor(t, 60*time.Second, "move switched", func() bool {
		m, err := s.migrator(nil).Get(ctx, move["id"].(string))
		return err == nil && (m.Phase == migrator.PhaseRetained || m.Status == migrator.StatusPaused)
	})
	time.Sleep(200 * time.Millisecond)
	storm.halt()
	m, _ := s.migrator(nil).Get(ctx, move["id"].(string))
	if m.Phase != migrator.PhaseRetained {
		t.Fatalf("move: %s %s", m.Phase, m.Error)
	}
	tenant, _ := s.store.GetTenant(ctx, "climber")
	if tenant.Plan != "enterprise" || tenant.Tier != catalog.TierDedicatedCluster || tenant.Target != "cl-1" {
		t.Fatalf("tenant after the plan change: %+v", tenant)
	}
	if f := storm.failures.Load(); f != 0 {
		t.Fatalf("%d failed requests: %v", f, storm.failLog)
	}
	storm.checkModel(t, dsnOf(t, s, "cl-1", "climber"))
	moves, _ := s.migrator(nil).List(ctx)
	if len(moves) != 1 {
		t.Fatalf("%d moves, want 1", len(moves))
	}
	waitFor(t, 5*time.Second, "audit links the move and its pause", func() bool {
		_, audit := call(t, "GET", base+"/v1/audit?tenant=climber", tokViewer, nil, nil)
		for _, e := range audit["entries"].([]any) {
			en := e.(map[string]any)
			if en["action"] == "tenant.plan" && en["move"] == move["id"] && en["pause_ms"] != nil && en["actor"] == "billing-webhook" {
				return true
			}
		}
		return false
	})
	t.Logf("plan change free → enterprise through the webhook: move %s, pause %s, %d requests, 0 failed", m.ID, m.Pause, storm.requests.Load())
}

// Two controller replicas; the leader is SIGKILLed in the middle of a move:
// the other replica takes over and finishes it.
func TestControllerFailover(t *testing.T) {
	bin := switchyardBinary(t)
	s := newMoveStack(t)
	s.seedTenantBulk("slowmover", 3000)
	tokens := tokOperator + ":operator"
	var procs []*exec.Cmd
	var urls []string
	for i := 0; i < 2; i++ {
		port, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		url := fmt.Sprintf("http://127.0.0.1:%d", port)
		cmd := exec.Command(bin, "controller", "-listen", fmt.Sprintf("127.0.0.1:%d", port), "-consul", s.consul.HTTPAddr(),
			"-tokens", tokens, "-leader-ttl", "1s", "-move-rate", "1500", "-move-chunk", "300", "-id", fmt.Sprintf("replica-%d", i), "-log-level", "warn")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		procs = append(procs, cmd)
		urls = append(urls, url)
		waitFor(t, 15*time.Second, "replica ready", func() bool {
			resp, err := shortClient.Get(url + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	}
	leader := -1
	waitFor(t, 15*time.Second, "a leader", func() bool {
		for i, u := range urls {
			_, body := call(t, "GET", u+"/readyz", "", nil, nil)
			if body["leader"] == true {
				leader = i
				return true
			}
		}
		return false
	})
	storm := s.startStorm("slowmover", 1, 5*time.Millisecond)
	status, body := call(t, "PUT", urls[1-leader]+"/v1/tenants/slowmover/plan", tokOperator, map[string]any{"plan": "pro"}, nil)
	if status != 202 {
		t.Fatalf("plan change: %d %v", status, body)
	}
	id := body["move"].(map[string]any)["id"].(string)
	ctx := testContext(t)
	mg := s.migrator(nil)
	waitFor(t, 30*time.Second, "move copying", func() bool {
		m, err := mg.Get(ctx, id)
		return err == nil && m.Phase == migrator.PhaseCopy && m.Progress() > 0.1
	})
	if err := procs[leader].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed leader replica-%d during the copy", leader)
	waitFor(t, 60*time.Second, "the other replica finishes the move", func() bool {
		m, err := mg.Get(ctx, id)
		return err == nil && (m.Phase == migrator.PhaseRetained || m.Status == migrator.StatusPaused)
	})
	_, rz := call(t, "GET", urls[1-leader]+"/readyz", "", nil, nil)
	if rz["leader"] != true {
		t.Fatal("the surviving replica is not the leader")
	}
	storm.halt()
	m, _ := mg.Get(ctx, id)
	if m.Phase != migrator.PhaseRetained {
		t.Fatalf("move: %s %s", m.Phase, m.Error)
	}
	if f := storm.failures.Load(); f != 0 {
		t.Fatalf("%d failed requests: %v", f, storm.failLog)
	}
	storm.checkModel(t, dsnOf(t, s, "db-1", "slowmover"))
}

// Offboarding: the tenant is served no more at once; after the retention
// window its data and its catalog entry go. Meanwhile the leader measures
// tenant sizes in PostgreSQL for the planner.
func TestOffboardAndLoadFigures(t *testing.T) {
	s := newMoveStack(t)
	s.seedTenant("leaver", "free", catalog.TierShared, "pool-1", 20)
	s.seedTenant("stayer", "free", catalog.TierShared, "pool-1", 5)
	_, base, _ := s.startController(func(c *controller.Config) {
		c.Retention = 300 * time.Millisecond
		c.HousekeepingEvery = 200 * time.Millisecond
	})
	waitFor(t, 10*time.Second, "tenant sizes measured", func() bool {
		_, body := call(t, "GET", base+"/v1/targets", tokViewer, nil, nil)
		for _, tg := range body["targets"].([]any) {
			m := tg.(map[string]any)
			if m["id"] == "pool-1" && m["bytes"].(float64) > 0 {
				return true
			}
		}
		return false
	})
	// Request rates: routers count per tenant and publish to Consul.
	traffic := startGetLoop(s.hc, []string{s.routers[0].url + "/t/stayer/orders?limit=1"}, 20*time.Millisecond)
	waitFor(t, 20*time.Second, "request rates reported", func() bool {
		_, body := call(t, "GET", base+"/v1/targets", tokViewer, nil, nil)
		for _, tg := range body["targets"].([]any) {
			m := tg.(map[string]any)
			if m["id"] == "pool-1" && m["rps"].(float64) > 1 {
				t.Logf("pool-1 load: %.0f bytes, %.1f requests/s", m["bytes"], m["rps"])
				return true
			}
		}
		return false
	})
	traffic.halt()
	if st, body := call(t, "POST", base+"/v1/tenants/leaver/domains", tokOperator, map[string]any{"domain": "app.leaver.example"}, nil); st != 201 {
		t.Fatalf("add a domain: %d %v", st, body)
	}
	if st, _ := call(t, "DELETE", base+"/v1/tenants/leaver", tokOperator, nil, nil); st != 202 {
		t.Fatalf("offboard: %d", st)
	}
	waitFor(t, 5*time.Second, "router refuses the offboarded tenant", func() bool {
		resp, err := s.hc.Get(s.routers[0].url + "/t/leaver/orders")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 403
	})
	ctx := testContext(t)
	waitFor(t, 15*time.Second, "data and catalog entry removed", func() bool {
		_, err := s.store.GetTenant(ctx, "leaver")
		return err != nil
	})
	var n int
	_ = sqlxMust(t, s.pgPool.DSN("pool")).Get(&n, `SELECT count(*) FROM orders WHERE tenant_id = 'leaver'`)
	if n != 0 {
		t.Fatalf("%d rows of the offboarded tenant remain", n)
	}
	_ = sqlxMust(t, s.pgPool.DSN("pool")).Get(&n, `SELECT count(*) FROM orders WHERE tenant_id = 'stayer'`)
	if n != 5 {
		t.Fatalf("the other tenant has %d rows, want 5", n)
	}
	// The removed tenant's custom domain is released: another may claim it.
	waitFor(t, 10*time.Second, "the removed tenant's domain released to another", func() bool {
		st, _ := call(t, "POST", base+"/v1/tenants/stayer/domains", tokOperator, map[string]any{"domain": "app.leaver.example"}, nil)
		return st == 201
	})
}

// Idempotency-Key: a repeated POST gets the first answer and does nothing
// twice; the same key with another body is refused.
func TestControllerIdempotencyKey(t *testing.T) {
	s := newMoveStack(t)
	_, base, _ := s.startController(nil)
	hdr := map[string]string{"Idempotency-Key": "create-once-42"}
	st1, b1 := call(t, "POST", base+"/v1/tenants", tokBilling, map[string]any{"id": "once", "plan": "free"}, hdr)
	st2, b2 := call(t, "POST", base+"/v1/tenants", tokBilling, map[string]any{"id": "once", "plan": "free"}, hdr)
	if st1 != 201 || st2 != 201 || fmt.Sprint(b1) != fmt.Sprint(b2) {
		t.Fatalf("repeat with the same key: %d %v then %d %v", st1, b1, st2, b2)
	}
	st3, b3 := call(t, "POST", base+"/v1/tenants", tokBilling, map[string]any{"id": "twice", "plan": "free"}, hdr)
	if st3 != 422 {
		t.Fatalf("same key, other body: %d %v", st3, b3)
	}
	if _, err := s.store.GetTenant(context.Background(), "twice"); err == nil {
		t.Fatal("the refused request created a tenant")
	}
	// Without a key, a repeat is a conflict, not a second tenant.
	if st, _ := call(t, "POST", base+"/v1/tenants", tokBilling, map[string]any{"id": "once", "plan": "free"}, nil); st != 409 {
		t.Fatalf("repeat without a key: %d", st)
	}
}

// A plan change while a move is under way must agree with it: another tier
// is refused (409), the same tier returns the move under way; a new tenant
// never inherits a database left by an earlier tenant with its id.
func TestControllerPlanChangeDuringMoveAndStaleDatabase(t *testing.T) {
	s := newMoveStack(t)
	s.seedTenantBulk("busy", 3000)
	_, base, _ := s.startController(func(c *controller.Config) { c.MoveRateRows = 1000 })
	st, body := call(t, "PUT", base+"/v1/tenants/busy/plan", tokBilling, map[string]any{"plan": "pro"}, nil)
	if st != 202 {
		t.Fatalf("upgrade: %d %v", st, body)
	}
	id := body["move"].(map[string]any)["id"]
	if st, body := call(t, "PUT", base+"/v1/tenants/busy/plan", tokBilling, map[string]any{"plan": "free"}, nil); st != 409 {
		t.Fatalf("downgrade during the move: %d %v", st, body)
	}
	st, body = call(t, "PUT", base+"/v1/tenants/busy/plan", tokBilling, map[string]any{"plan": "pro"}, nil)
	if st != 202 || body["move"].(map[string]any)["id"] != id {
		t.Fatalf("same plan again: %d %v", st, body)
	}
	if err := s.pgDedicated.CreateDatabase(context.Background(), "tenant_ghost"); err != nil {
		t.Fatal(err)
	}
	if st, body := call(t, "POST", base+"/v1/tenants", tokBilling, map[string]any{"id": "ghost", "plan": "pro"}, nil); st != 409 || body["error"] != "stale_database" {
		t.Fatalf("create over a stale database: %d %v", st, body)
	}
	if _, err := s.store.GetTenant(context.Background(), "ghost"); err == nil {
		t.Fatal("the refused create left a tenant")
	}
}

// Listing pages through tenants in id order with filters, from the watched
// snapshot (tier, target, state) or the catalog itself (plan).
func TestControllerListTenants(t *testing.T) {
	s := newMoveStack(t)
	ctx := testContext(t)
	var tenants []catalog.Tenant
	for i := 0; i < 25; i++ {
		plan, target := "free", "pool-1"
		if i%5 == 0 {
			plan, target = "starter", "pool-2"
		}
		tenants = append(tenants, catalog.Tenant{ID: fmt.Sprintf("lt-%02d", i), Plan: plan, Tier: catalog.TierShared, Target: target})
	}
	if err := s.store.BulkLoad(ctx, tenants, nil); err != nil {
		t.Fatal(err)
	}
	_, base, _ := s.startController(nil)
	page := func(q string) ([]string, string) {
		st, body := call(t, "GET", base+"/v1/tenants?"+q, tokViewer, nil, nil)
		if st != 200 {
			t.Fatalf("list %s: %d %v", q, st, body)
		}
		var ids []string
		for _, x := range body["tenants"].([]any) {
			ids = append(ids, x.(map[string]any)["id"].(string))
		}
		return ids, body["next_after"].(string)
	}
	waitFor(t, 10*time.Second, "snapshot loaded", func() bool {
		ids, _ := page("limit=1000")
		return len(ids) == 25
	})
	var all []string
	after := ""
	for {
		ids, next := page("limit=10&after=" + after)
		all = append(all, ids...)
		if next == "" {
			break
		}
		after = next
	}
	if len(all) != 25 || all[0] != "lt-00" || all[24] != "lt-24" {
		t.Fatalf("paged listing: %v", all)
	}
	if ids, _ := page("target=pool-2"); len(ids) != 5 || ids[0] != "lt-00" || ids[4] != "lt-20" {
		t.Fatalf("target filter: %v", ids)
	}
	if ids, _ := page("plan=starter"); len(ids) != 5 {
		t.Fatalf("plan filter: %v", ids)
	}
	if ids, _ := page("plan=starter&limit=2"); len(ids) != 2 {
		t.Fatalf("plan filter with limit: %v", ids)
	}
	if st, _ := call(t, "GET", base+"/v1/tenants?tier=gold", tokViewer, nil, nil); st != 400 {
		t.Fatalf("bad tier filter: %d", st)
	}
}
