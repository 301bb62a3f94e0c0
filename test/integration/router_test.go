package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router"
)

// Three tenants in three tiers, each answered by its own tier's backend;
// unknown tenants get 404; spoofed headers and forged hosts reach nobody else.
func TestRouterRoutesEachTierToItsOwnBackend(t *testing.T) {
	s := newStack(t)
	c := s.consul.Client()
	startBackend(t, c, "app-shared", nil)
	startBackend(t, c, "app-cl-1", nil)
	s.tenant("freeco", "free", catalog.TierShared, "pool-1")
	s.tenant("proco", "pro", catalog.TierDedicatedDB, "db-1")
	s.tenant("bigco", "enterprise", catalog.TierDedicatedCluster, "cl-1")
	r := s.router(nil)
	hc := &http.Client{Timeout: 5 * time.Second}
	waitFor(t, 10*time.Second, "backends healthy", func() bool {
		for _, id := range []string{"freeco", "proco", "bigco"} {
			if resp, _ := get(t, hc, r.url+"/t/"+id+"/x", nil); resp.StatusCode != 200 {
				return false
			}
		}
		return true
	})

	type want struct {
		service, tier, target string
	}
	cases := []struct {
		name    string
		path    string
		headers map[string]string
		status  int
		want    want
	}{
		{"shared by path", "/t/freeco/orders", nil, 200, want{"app-shared", "shared", "pool-1"}},
		{"dedicated-db by host", "/orders", map[string]string{"Host": "proco.saas.test"}, 200, want{"app-shared", "dedicated-db", "db-1"}},
		{"cluster by token", "/orders", map[string]string{"Authorization": "Bearer " + router.SignToken(jwtSecret, "bigco", time.Minute)}, 200, want{"app-cl-1", "dedicated-cluster", "cl-1"}},
		{"unknown tenant", "/t/nobody/orders", nil, 404, want{}},
		{"spoofed X-Tenant-ID is stripped", "/t/freeco/orders", map[string]string{"X-Tenant-ID": "bigco", "X-Tenant-Target": "cl-1", "X-Tenant-Tier": "dedicated-cluster"}, 200, want{"app-shared", "shared", "pool-1"}},
		{"Connection header cannot strip router headers", "/t/freeco/orders", map[string]string{"Connection": "X-Tenant-ID, X-Tenant-Target, X-Tenant-Tier", "X-Tenant-ID": "bigco"}, 200, want{"app-shared", "shared", "pool-1"}},
		{"underscore spellings are stripped too", "/t/freeco/orders", map[string]string{"X-Tenant_Id": "bigco", "X_Forwarded_For": "10.9.9.9"}, 200, want{"app-shared", "shared", "pool-1"}},
		{"spoofed X-Tenant-ID alone names no tenant", "/orders", map[string]string{"X-Tenant-ID": "bigco"}, 400, want{}},
		{"forged host against token", "/orders", map[string]string{"Host": "bigco.saas.test", "Authorization": "Bearer " + router.SignToken(jwtSecret, "freeco", time.Minute)}, 400, want{}},
		{"forged host against path", "/t/freeco/x", map[string]string{"Host": "bigco.saas.test"}, 400, want{}},
		{"token signed with another key", "/orders", map[string]string{"Authorization": "Bearer " + router.SignToken([]byte("another-secret-0123456789abcdefgh"), "bigco", time.Minute)}, 401, want{}},
		// Not under the base domain: a custom domain nobody claims, so not bigco's (404 unknown_tenant).
		{"host suffix trick", "/orders", map[string]string{"Host": "bigco.saas.test.evil.example"}, 404, want{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, echo := get(t, hc, r.url+tc.path, tc.headers)
			if resp.StatusCode != tc.status {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status != 200 {
				var e map[string]any
				if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e["error"] == nil || e["message"] == nil {
					t.Fatalf("error body is not JSON with error and message: %v %v", e, err)
				}
				return
			}
			if got := resp.Header.Get("X-Served-By"); got != tc.want.service {
				t.Fatalf("served by %q, want %q", got, tc.want.service)
			}
			h := echo.Headers
			wantTenant := map[string]string{"pool-1": "freeco", "db-1": "proco", "cl-1": "bigco"}[tc.want.target]
			if got := h.Values("X-Tenant-Id"); len(got) != 1 || got[0] != wantTenant {
				t.Fatalf("upstream X-Tenant-Id = %v, want %s", got, wantTenant)
			}
			if h.Get("X-Tenant-Tier") != tc.want.tier || h.Get("X-Tenant-Target") != tc.want.target {
				t.Fatalf("upstream tier/target = %q/%q, want %q/%q", h.Get("X-Tenant-Tier"), h.Get("X-Tenant-Target"), tc.want.tier, tc.want.target)
			}
			for k := range h {
				if strings.Contains(k, "_") {
					t.Fatalf("upstream got the client's %s header", k)
				}
			}
			if len(h.Values("X-Tenant-Tier")) != 1 || len(h.Values("X-Tenant-Target")) != 1 {
				t.Fatalf("duplicated tenant headers: %v", h)
			}
			if h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("X-Forwarded-Proto") != "http" {
				t.Fatalf("X-Forwarded-* = %q %q", h.Get("X-Forwarded-For"), h.Get("X-Forwarded-Proto"))
			}
			if strings.HasPrefix(tc.path, "/t/") && strings.HasPrefix(echo.Path, "/t/") {
				t.Fatalf("path prefix not stripped: %s", echo.Path)
			}
		})
	}
	// The tenant id the upstream sees is always the one the router resolved.
	resp, echo := get(t, hc, r.url+"/t/freeco/orders", map[string]string{"X-Tenant-ID": "bigco"})
	if resp.StatusCode != 200 || echo.Headers.Get("X-Tenant-Id") != "freeco" {
		t.Fatalf("upstream saw tenant %q", echo.Headers.Get("X-Tenant-Id"))
	}
}

// The admin listener answers /livez, /readyz and /metrics, and metrics carry
// no tenant ids.
func TestRouterAdminEndpoints(t *testing.T) {
	s := newStack(t)
	startBackend(t, s.consul.Client(), "app-shared", nil)
	s.tenant("secret-tenant-name", "free", catalog.TierShared, "pool-1")
	r := s.router(nil)
	hc := &http.Client{Timeout: 5 * time.Second}
	waitFor(t, 10*time.Second, "tenant served", func() bool {
		resp, _ := get(t, hc, r.url+"/t/secret-tenant-name/", nil)
		return resp.StatusCode == 200
	})
	get(t, hc, r.url+"/t/unknown-tenant-name/", nil)
	for _, path := range []string{"/livez", "/readyz"} {
		resp, err := hc.Get(r.admin + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, err, resp)
		}
		resp.Body.Close()
	}
	want := []string{
		`switchyard_router_requests_total{code="200",target="pool-1",tier="shared"}`,
		`switchyard_router_requests_total{code="404",target="",tier=""}`,
		"switchyard_router_upstream_seconds_bucket", "switchyard_router_breaker_state",
		"switchyard_router_catalog_age_seconds", "switchyard_router_catalog_version",
	}
	// A request is counted when its handler returns, a moment after the
	// client has its answer: read until every series is there (or fail).
	var text string
	var lacking []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := hc.Get(r.admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		text, lacking = string(body), nil
		for _, m := range want {
			if !strings.Contains(text, m) {
				lacking = append(lacking, m)
			}
		}
		if len(lacking) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, m := range lacking {
		t.Errorf("metrics lack %s", m)
	}
	if strings.Contains(text, "secret-tenant-name") || strings.Contains(text, "unknown-tenant-name") {
		t.Error("metrics expose a tenant id")
	}
}

// A frozen tenant's requests are held until it is unfrozen, then released
// to the (new) target; a hold past HoldMax gets 503 with Retry-After.
func TestRouterHoldsFrozenTenant(t *testing.T) {
	s := newStack(t)
	c := s.consul.Client()
	startBackend(t, c, "app-shared", nil)
	startBackend(t, c, "app-cl-1", nil)
	s.tenant("mover", "free", catalog.TierShared, "pool-1")
	s.tenant("bystander", "free", catalog.TierShared, "pool-1")
	r := s.router(func(c *router.Config) { c.HoldMax = 1500 * time.Millisecond })
	hc := &http.Client{Timeout: 5 * time.Second}
	waitFor(t, 10*time.Second, "served", func() bool {
		resp, _ := get(t, hc, r.url+"/t/mover/", nil)
		return resp.StatusCode == 200
	})
	ctx := testContext(t)
	freeze := func() {
		if _, err := s.store.UpdateTenant(ctx, "mover", func(t *catalog.Tenant) error { t.State = catalog.StateFrozen; return nil }); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "router sees freeze", func() bool {
			rt, _ := r.Watcher().Snapshot().Lookup("mover")
			return rt.State == catalog.StateFrozen
		})
	}
	freeze()
	type result struct {
		status  int
		service string
		held    time.Duration
	}
	results := make(chan result, 5)
	for i := 0; i < 5; i++ {
		go func() {
			start := time.Now()
			resp, err := hc.Get(r.url + "/t/mover/orders")
			if err != nil {
				results <- result{status: -1}
				return
			}
			resp.Body.Close()
			results <- result{resp.StatusCode, resp.Header.Get("X-Served-By"), time.Since(start)}
		}()
	}
	// The bystander in the same pool is not held.
	start := time.Now()
	if resp, _ := get(t, hc, r.url+"/t/bystander/", nil); resp.StatusCode != 200 || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("bystander: %d after %s", resp.StatusCode, time.Since(start))
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := s.store.UpdateTenant(ctx, "mover", func(t *catalog.Tenant) error {
		t.State, t.Tier, t.Target = catalog.StateActive, catalog.TierDedicatedCluster, "cl-1"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		res := <-results
		if res.status != 200 || res.service != "app-cl-1" {
			t.Fatalf("held request: status %d served by %q", res.status, res.service)
		}
		if res.held < 150*time.Millisecond {
			t.Fatalf("request was not held (%s)", res.held)
		}
	}
	// Past HoldMax: 503 with Retry-After and a JSON body.
	freeze()
	start = time.Now()
	resp, err := hc.Get(r.url + "/t/mover/orders")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	held := time.Since(start)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("expired hold: %d Retry-After=%q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if held < 1400*time.Millisecond || held > 3*time.Second {
		t.Fatalf("expired after %s, want about 1.5s", held)
	}
}
