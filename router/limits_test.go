package router

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/internal/ratelimit"
)

func TestLimiterAdmit(t *testing.T) {
	type try struct {
		at       time.Duration // on the limiter's clock
		body     int64
		inflight int // requests of the tenant in flight, this one included
		want     string
		retry    int
	}
	cases := []struct {
		name   string
		lim    catalog.Limits
		shares *shareTable
		tries  []try
	}{
		{"body over the tenant's limit", catalog.Limits{MaxBodyBytes: 100}, nil,
			[]try{{0, 100, 1, "", 0}, {0, 101, 1, "body_too_large", 0}}},
		{"concurrency", catalog.Limits{ConcurrentRequests: 2}, nil,
			[]try{{0, 0, 2, "", 0}, {0, 0, 3, "concurrency_limited", 1}}},
		{"burst then the rate", catalog.Limits{RequestsPerSecond: 1, Burst: 2}, nil,
			[]try{{0, 0, 1, "", 0}, {0, 0, 1, "", 0}, {0, 0, 1, "rate_limited", 1}, {time.Second, 0, 1, "", 0}}},
		{"Retry-After from the deficit", catalog.Limits{RequestsPerSecond: 0.25, Burst: 1}, nil,
			[]try{{0, 0, 1, "", 0}, {0, 0, 1, "rate_limited", 4}}},
		{"half the limit of two quiet routers", catalog.Limits{RequestsPerSecond: 10, Burst: 4}, &shareTable{routers: 2},
			[]try{{0, 0, 1, "", 0}, {0, 0, 1, "", 0}, {0, 0, 1, "rate_limited", 1}, {200 * time.Millisecond, 0, 1, "", 0}}},
		{"concurrency share of two routers", catalog.Limits{ConcurrentRequests: 4}, &shareTable{routers: 2},
			[]try{{0, 0, 2, "", 0}, {0, 0, 3, "concurrency_limited", 1}}},
		{"flood here, other router idle: nearly all", catalog.Limits{RequestsPerSecond: 10, Burst: 10},
			&shareTable{routers: 2, demand: map[string]ratelimit.Demand{"t": {Self: 100, Total: 100}}},
			[]try{{0, 0, 1, "", 0}, {0, 0, 1, "", 0}, {0, 0, 1, "", 0}, {0, 0, 1, "", 0}, {0, 0, 1, "", 0}, {0, 0, 1, "", 0}, {0, 0, 1, "", 0}, {0, 0, 1, "", 0}, {0, 0, 1, "", 0}, {0, 0, 1, "rate_limited", 1}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLimiter(prometheus.NewRegistry())
			if c.shares != nil {
				l.shares.Store(c.shares)
			}
			for i, tr := range c.tries {
				f := NewInflight()
				var entry *InflightEntry
				for range tr.inflight {
					entry = f.Enter("t")
				}
				e := l.admit("t", c.lim, entry, tr.body, int64(tr.at))
				switch {
				case tr.want == "" && e != nil:
					t.Fatalf("try %d: refused %s", i, e.code)
				case tr.want != "" && (e == nil || e.code != tr.want || e.retryAfter != tr.retry):
					t.Fatalf("try %d: got %+v, want %s with Retry-After %d", i, e, tr.want, tr.retry)
				}
			}
		})
	}
}

func TestBuildShares(t *testing.T) {
	now := time.Now()
	report := func(age time.Duration, rps map[string]float64) catalog.RouterLoad {
		return catalog.RouterLoad{At: now.Add(-age), RPS: rps}
	}
	cases := []struct {
		name    string
		live    []string
		loads   map[string]catalog.RouterLoad
		routers int
		demand  map[string]ratelimit.Demand
	}{
		{"alone, not registered yet", nil, nil, 1, map[string]ratelimit.Demand{}},
		{"three routers, demand summed", []string{"a", "b", "c"}, map[string]catalog.RouterLoad{
			"a": report(time.Second, map[string]float64{"t": 10, "u": 1}),
			"b": report(time.Second, map[string]float64{"t": 30}),
		}, 3, map[string]ratelimit.Demand{"t": {Self: 10, Total: 40}, "u": {Self: 1, Total: 1}}},
		{"stale and dead routers' reports ignored", []string{"a", "b"}, map[string]catalog.RouterLoad{
			"b": report(time.Hour, map[string]float64{"t": 30}),
			"c": report(time.Second, map[string]float64{"t": 30}),
		}, 2, map[string]ratelimit.Demand{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := buildShares("a", c.live, c.loads, now)
			if got.routers != c.routers || len(got.demand) != len(c.demand) {
				t.Fatalf("got %+v, want %d routers and %v", got, c.routers, c.demand)
			}
			for k, v := range c.demand {
				if got.demand[k] != v {
					t.Fatalf("demand %s = %+v, want %+v", k, got.demand[k], v)
				}
			}
		})
	}
}

// TestLimiterSweep: a tenant's bucket goes once it is idle and full again;
// so the state held is bounded by the tenants active lately.
func TestLimiterSweep(t *testing.T) {
	l := newLimiter(prometheus.NewRegistry())
	entry := NewInflight().Enter("x")
	lim := catalog.Limits{RequestsPerSecond: 10, Burst: 10}
	for _, id := range []string{"a", "b", "c"} {
		_ = l.admit(id, lim, entry, 0, 0)
	}
	_ = l.admit("c", lim, entry, 0, int64(2*limiterIdle))
	if kept := l.sweep(int64(2*limiterIdle) + int64(time.Second)); kept != 1 {
		t.Fatalf("kept %d buckets, want 1 (the recently used one)", kept)
	}
}

// TestRouterErrorNamesLimit: the JSON body of a refusal names the limit.
func TestRouterErrorNamesLimit(t *testing.T) {
	for _, e := range []*routeError{errRateLimited[3], errConcurrencyLimited, errTenantBodyTooLarge, errBodyTooLarge, errUnknownTenant} {
		rec := httptest.NewRecorder()
		e.write(rec, "acme")
		var body map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		if body["error"] != e.code || body["tenant"] != "acme" || body["limit"] != limitOfCode(e.code) {
			t.Fatalf("%s: body %v", e.code, body)
		}
		if rec.Code != e.status || (e.retryAfter > 0) != (rec.Header().Get("Retry-After") != "") {
			t.Fatalf("%s: status %d, Retry-After %q", e.code, rec.Code, rec.Header().Get("Retry-After"))
		}
	}
}

// BenchmarkLimiterAdmit is the limiter's cost per admitted request of a
// tenant with a rate and a concurrency limit (run with -benchmem: it must
// not allocate).
func BenchmarkLimiterAdmit(b *testing.B) {
	l := newLimiter(prometheus.NewRegistry())
	l.shares.Store(&shareTable{routers: 3, demand: map[string]ratelimit.Demand{"acme": {Self: 50, Total: 120}}})
	entry := NewInflight().Enter("acme")
	lim := catalog.Limits{RequestsPerSecond: 1e9, Burst: 1e9, ConcurrentRequests: 100}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if e := l.admit("acme", lim, entry, 0, int64(i)); e != nil {
			b.Fatal(e.code)
		}
	}
}
