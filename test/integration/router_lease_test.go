package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router"
)

// The router's lease, both sides of the rule: a router that loses Consul
// keeps serving from its snapshot for up to its lease TTL; past it, it
// forwards nothing (503 router_lease_lapsed), and when Consul answers again
// it serves only after reading what changed meanwhile — never from the
// snapshot it held when the lease lapsed.
func TestRouterLease(t *testing.T) {
	const ttl = 4 * time.Second
	ctx := testContext(t)
	agent, _, store := outageStack(t, "beta")
	r := startRouter(t, agent.Client(), func(c *router.Config) { c.LeaseTTL = ttl })
	hc := &http.Client{Timeout: 5 * time.Second}
	served := func() (int, string, string) {
		resp, err := hc.Get(r.url + "/t/beta/")
		if err != nil {
			return 0, "", ""
		}
		defer resp.Body.Close()
		var e struct{ Error string }
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, &e)
		return resp.StatusCode, resp.Header.Get("X-Served-By"), e.Error
	}
	waitFor(t, 15*time.Second, "served from pool-1", func() bool { st, by, _ := served(); return st == 200 && by == "app-shared" })

	if err := agent.Kill(); err != nil {
		t.Fatal(err)
	}
	lostAt := time.Now()
	// Within the lease (the last renewal was at most a third of it before
	// the loss): served from the snapshot, no errors.
	for time.Since(lostAt) < ttl/3 {
		sent := time.Since(lostAt)
		if st, by, _ := served(); st != 200 || by != "app-shared" {
			t.Fatalf("within the lease (%s after losing Consul): %d from %q, want 200 from the snapshot's app-shared", sent, st, by)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The catalog changes where the router cannot see it.
	if _, err := store.UpdateTenant(ctx, "beta", func(t *catalog.Tenant) error { t.Target = "pool-2"; return nil }); err != nil {
		t.Fatal(err)
	}
	// Past it: nothing forwarded.
	var lapsedAfter time.Duration
	waitFor(t, 2*ttl+5*time.Second, "the lease lapses", func() bool {
		st, by, code := served()
		if st == 200 && by != "app-shared" {
			t.Fatalf("served from %q while Consul is unreachable", by)
		}
		lapsedAfter = time.Since(lostAt)
		return st == 503 && code == "router_lease_lapsed"
	})
	if lapsedAfter < ttl*2/3-200*time.Millisecond {
		t.Errorf("lease lapsed %s after losing Consul, before its TTL %s", lapsedAfter, ttl)
	}
	t.Logf("lease lapsed %s after the router lost Consul (TTL %s)", lapsedAfter.Round(time.Millisecond), ttl)

	if err := agent.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitFor(t, 30*time.Second, "served again", func() bool {
		st, by, code := served()
		switch {
		case st == 200 && by != "app-shared-2":
			t.Fatalf("after the lapse the router served from %q, its stale snapshot's target", by)
		case st == 503 && code == "router_lease_lapsed":
		case st != 200 && st != 0:
			t.Logf("while recovering: %d %s", st, code)
		}
		return st == 200
	})
	t.Logf("serving again from app-shared-2 %s after Consul came back", time.Since(back).Round(time.Millisecond))
}
