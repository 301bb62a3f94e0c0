package integration

import (
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router"
	"github.com/switchyard/switchyard/test/harness"
)

// A placement change written to Consul is obeyed by two routers; the time
// from the write to the first request landing on the new target is logged.
func TestPlacementChangeObeyedByTwoRouters(t *testing.T) {
	s := newStack(t)
	c := s.consul.Client()
	startBackend(t, c, "app-shared", nil)
	startBackend(t, c, "app-shared-2", nil)
	s.tenant("roamer", "free", catalog.TierShared, "pool-1")
	routers := []*runningRouter{s.router(nil), s.router(nil)}
	hc := &http.Client{Timeout: 5 * time.Second}
	for _, r := range routers {
		waitFor(t, 10*time.Second, "served", func() bool {
			resp, _ := get(t, hc, r.url+"/t/roamer/", nil)
			return resp.StatusCode == 200 && resp.Header.Get("X-Served-By") == "app-shared"
		})
	}
	ctx := testContext(t)
	var lat []time.Duration
	for round := 0; round < 10; round++ {
		to, service := "pool-2", "app-shared-2"
		if round%2 == 1 {
			to, service = "pool-1", "app-shared"
		}
		var wg sync.WaitGroup
		obeyed := make([]time.Duration, len(routers))
		start := time.Now()
		if _, err := s.store.UpdateTenant(ctx, "roamer", func(t *catalog.Tenant) error { t.Target = to; return nil }); err != nil {
			t.Fatal(err)
		}
		for i, r := range routers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(start) < 5*time.Second {
					resp, err := hc.Get(r.url + "/t/roamer/")
					if err == nil {
						resp.Body.Close()
						if resp.Header.Get("X-Served-By") == service {
							obeyed[i] = time.Since(start)
							return
						}
					}
				}
				obeyed[i] = -1
			}()
		}
		wg.Wait()
		for i, d := range obeyed {
			if d < 0 {
				t.Fatalf("round %d: router %d never obeyed the move to %s", round, i, to)
			}
			lat = append(lat, d)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("placement write → first request on new target, 2 routers × 10 moves: p50 %s, max %s", lat[len(lat)/2], lat[len(lat)-1])
}

// outageStack is a 3-node Consul cluster with a catalog of two shared
// pools (app-shared, app-shared-2, backends registered through the Raft
// leader) and the given tenants on pool-1. agent is a follower for the
// routers to talk to: stopping it cuts them off without an election;
// the leader and store keep working.
func outageStack(t *testing.T, tenants ...string) (agent, leader *harness.Consul, store *catalog.Store) {
	t.Helper()
	cluster := harness.ConsulClusterT(t, 3)
	ctx := testContext(t)
	leader, err := cluster.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	agent = cluster.Nodes[0]
	if agent == leader {
		agent = cluster.Nodes[1]
	}
	store = catalog.NewStore(leader.Client(), "")
	if err := store.Init(ctx, 64); err != nil {
		t.Fatal(err)
	}
	for _, tg := range []catalog.Target{
		{ID: "pool-1", Tier: catalog.TierShared, Service: "app-shared", DSN: "postgres://x@127.0.0.1:1/a"},
		{ID: "pool-2", Tier: catalog.TierShared, Service: "app-shared-2", DSN: "postgres://x@127.0.0.1:1/b"},
	} {
		if err := store.CreateTarget(ctx, tg); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range tenants {
		if _, err := store.CreateTenant(ctx, catalog.Tenant{ID: id, Plan: "free", Tier: catalog.TierShared, Target: "pool-1"}); err != nil {
			t.Fatal(err)
		}
	}
	startBackend(t, leader.Client(), "app-shared", nil)
	startBackend(t, leader.Client(), "app-shared-2", nil)
	return agent, leader, store
}

// Consul goes away: routers keep routing from their snapshot with no errors;
// when it is back they catch up with what changed meanwhile. Uses a 3-node
// cluster: the routers' agent is stopped while the change is written through
// another node.
func TestRoutersSurviveConsulOutage(t *testing.T) {
	ctx := testContext(t)
	agent, _, store := outageStack(t, "alpha", "beta")
	routers := []*runningRouter{startRouter(t, agent.Client(), nil), startRouter(t, agent.Client(), nil)}
	hc := &http.Client{Timeout: 5 * time.Second}
	for _, r := range routers {
		waitFor(t, 15*time.Second, "served", func() bool {
			resp, _ := get(t, hc, r.url+"/t/alpha/", nil)
			return resp.StatusCode == 200
		})
	}
	var urls []string
	for _, r := range routers {
		urls = append(urls, r.url+"/t/alpha/", r.url+"/t/beta/")
	}
	load := startGetLoop(hc, urls, 5*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	if err := agent.Kill(); err != nil {
		t.Fatal(err)
	}
	// Meanwhile the catalog changes through another node.
	if _, err := store.UpdateTenant(ctx, "beta", func(t *catalog.Tenant) error { t.Target = "pool-2"; return nil }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	for _, r := range routers {
		if rt, _ := r.Watcher().Snapshot().Lookup("beta"); rt.Target != "pool-1" {
			t.Fatalf("router saw a change while its Consul agent was down: %+v", rt)
		}
		if r.Watcher().LastError() == "" {
			t.Error("router reports no watch error while Consul is down")
		}
	}
	total, failed := load.halt()
	if failed != 0 {
		t.Fatalf("%d of %d requests failed while Consul was down", failed, total)
	}
	t.Logf("%d requests, 0 failed, during the outage", total)
	if err := agent.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range routers {
		waitFor(t, 30*time.Second, "router catches up after restart", func() bool {
			resp, _ := get(t, hc, r.url+"/t/beta/", nil)
			return resp.StatusCode == 200 && resp.Header.Get("X-Served-By") == "app-shared-2"
		})
	}
}

// A backend instance dies: its breaker opens; its tenants fail over (GETs,
// retried on a sibling) or get 503 fast; tenants on other backends see no
// errors.
func TestBackendDeathOpensBreakerAndIsolates(t *testing.T) {
	s := newStack(t)
	c := s.consul.Client()
	sharedA := startBackend(t, c, "app-shared", nil)
	startBackend(t, c, "app-shared", nil)
	cluster := startBackend(t, c, "app-cl-1", nil)
	startBackend(t, c, "app-shared-2", nil)
	s.tenant("pooled", "free", catalog.TierShared, "pool-1")
	s.tenant("other", "free", catalog.TierShared, "pool-2")
	s.tenant("big", "enterprise", catalog.TierDedicatedCluster, "cl-1")
	r := s.router(func(c *router.Config) {
		c.Breaker = router.BreakerConfig{ConsecutiveFailures: 3, OpenTimeout: 30 * time.Second}
	})
	hc := &http.Client{Timeout: 5 * time.Second}
	waitFor(t, 10*time.Second, "all served", func() bool {
		for _, id := range []string{"pooled", "other", "big"} {
			if resp, _ := get(t, hc, r.url+"/t/"+id+"/", nil); resp.StatusCode != 200 {
				return false
			}
		}
		return true
	})
	sharedA.kill()
	cluster.kill()
	// The shared pool's tenant: every GET succeeds (retried on the sibling).
	for i := 0; i < 40; i++ {
		if resp, _ := get(t, hc, r.url+"/t/pooled/", nil); resp.StatusCode != 200 {
			t.Fatalf("pooled tenant request %d failed with %d after one instance died", i, resp.StatusCode)
		}
		if resp, _ := get(t, hc, r.url+"/t/other/", nil); resp.StatusCode != 200 {
			t.Fatalf("tenant on another backend failed with %d", resp.StatusCode)
		}
	}
	// The cluster tenant's only instance is dead: after the breaker trips,
	// answers are 503 and fast.
	var statuses []int
	for i := 0; i < 6; i++ {
		resp, _ := get(t, hc, r.url+"/t/big/", nil)
		statuses = append(statuses, resp.StatusCode)
	}
	start := time.Now()
	resp, _ := get(t, hc, r.url+"/t/big/", nil)
	took := time.Since(start)
	if resp.StatusCode != 503 {
		t.Fatalf("dead cluster backend: statuses %v then %d, want 503 once the breaker is open", statuses, resp.StatusCode)
	}
	if took > 100*time.Millisecond {
		t.Fatalf("open breaker answered in %s, want fast", took)
	}
	for _, st := range statuses {
		if st != 502 && st != 503 {
			t.Fatalf("dead backend statuses %v: want only 502/503", statuses)
		}
	}
	// Health checks eventually drop the dead instances; still no errors for others.
	if resp, _ := get(t, hc, r.url+"/t/other/", nil); resp.StatusCode != 200 {
		t.Fatalf("other tenant: %d", resp.StatusCode)
	}
	metrics := scrape(t, r.admin)
	if !containsLine(metrics, `switchyard_router_breaker_state{instance="`+cluster.addr+`",service="app-cl-1"} 2`) {
		t.Errorf("breaker of %s not reported open in metrics", cluster.addr)
	}
}

func scrape(t testing.TB, admin string) string {
	resp, err := shortClient.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func containsLine(text, line string) bool {
	return slices.Contains(strings.Split(text, "\n"), line)
}
