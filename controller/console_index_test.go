package controller

import (
	"fmt"
	"hash/fnv"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/catalog"
)

// fakeRoutes is a routeSource over a slice, in a scrambled order (as the
// snapshot's hash tables give them).
type fakeRoutes struct {
	routes []catalog.Route
	plans  map[string]string
}

var _ routeSource = (*fakeRoutes)(nil)

func (f *fakeRoutes) Range(fn func(catalog.Route)) {
	for _, r := range f.routes {
		fn(r)
	}
}

func (f *fakeRoutes) Plan(r catalog.Route) string { return f.plans[r.ID] }

func hash(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// fleet makes n tenants t0000000..: plan, tier, target and state by hash.
func fleet(n int) *fakeRoutes {
	f := &fakeRoutes{plans: make(map[string]string, n)}
	plans := []string{"free", "starter", "pro", "enterprise"}
	tiers := []catalog.Tier{catalog.TierShared, catalog.TierShared, catalog.TierDedicatedDB, catalog.TierDedicatedCluster}
	states := []catalog.State{catalog.StateActive, catalog.StateActive, catalog.StateActive, catalog.StateDisabled}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("t%07d", (i*7919)%n) // not in id order
		h := hash(id)
		p := int(h % 4)
		f.plans[id] = plans[p]
		f.routes = append(f.routes, catalog.Route{ID: id, Tier: tiers[p], Target: fmt.Sprintf("pool-%d", h%50), State: states[(h>>8)%4], Epoch: uint64(i)})
	}
	return f
}

// brute is the reference: every route that matches q, in id order.
func brute(f *fakeRoutes, q tenantQuery) []string {
	ix := buildIndex(f, 0) // only for the sorted order
	var out []string
	for _, r := range ix.rows {
		row := ix.row(&r)
		if (q.Prefix == "" || len(row.ID) >= len(q.Prefix) && row.ID[:len(q.Prefix)] == q.Prefix) && (q.After == "" || row.ID > q.After) &&
			(q.Plan == "" || row.Plan == q.Plan) && (q.Tier == "" || string(row.Tier) == q.Tier) &&
			(q.Target == "" || row.Target == q.Target) && (q.State == "" || string(row.State) == q.State) {
			out = append(out, row.ID)
		}
	}
	return out
}

func TestTenantIndexPages(t *testing.T) {
	f := fleet(5000)
	ix := buildIndex(f, len(f.routes))
	cases := []struct {
		name string
		q    tenantQuery
	}{
		{"all", tenantQuery{}},
		{"prefix", tenantQuery{Prefix: "t00012"}},
		{"plan", tenantQuery{Plan: "pro"}},
		{"tier and state", tenantQuery{Tier: "shared", State: "disabled"}},
		{"target", tenantQuery{Target: "pool-7"}},
		{"target after a cursor", tenantQuery{Target: "pool-7", After: "t0002500"}},
		{"target, prefix and state", tenantQuery{Target: "pool-3", Prefix: "t0001", State: "active"}},
		{"prefix and plan", tenantQuery{Prefix: "t0003", Plan: "free"}},
		{"unknown plan", tenantQuery{Plan: "gold"}},
		{"unknown target", tenantQuery{Target: "nowhere"}},
		{"prefix matching nothing", tenantQuery{Prefix: "x"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := brute(f, tc.q)
			var got []string
			q := tc.q
			q.Limit = 37
			for pages := 0; ; pages++ {
				if pages > len(f.routes) {
					t.Fatal("paging does not end")
				}
				rows, next := ix.page(q)
				for _, r := range rows {
					got = append(got, r.ID)
				}
				if next == "" {
					break
				}
				if len(rows) != q.Limit {
					t.Fatalf("a page of %d rows has a next cursor", len(rows))
				}
				q.After = next
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("paged %d tenants, want %d (first %v vs %v)", len(got), len(want), head(got), head(want))
			}
			if tc.name != "unknown plan" && tc.name != "unknown target" && tc.name != "prefix matching nothing" && len(want) == 0 {
				t.Fatal("the case selects nothing: it tests nothing")
			}
		})
	}
}

func head(s []string) []string { return s[:min(len(s), 3)] }

func TestIndexCacheRebuildsOnNewSnapshot(t *testing.T) {
	c := indexCache{every: time.Nanosecond}
	a, b := fleet(10), fleet(20)
	if got := c.get(a, 10); got.src != routeSource(a) || len(got.rows) != 10 {
		t.Fatalf("first index: %d rows", len(got.rows))
	}
	stale := c.get(b, 20) // rebuilt in the background; the old one meanwhile
	if stale.src != routeSource(a) && stale.src != routeSource(b) {
		t.Fatal("index of neither snapshot")
	}
	for i := 0; ; i++ {
		if got := c.get(b, 20); got.src == routeSource(b) {
			if len(got.rows) != 20 {
				t.Fatalf("rebuilt index: %d rows", len(got.rows))
			}
			return
		}
		if i > 1e6 {
			t.Fatal("never rebuilt")
		}
	}
}

func TestIndexCacheRebuildsAtMostEvery(t *testing.T) {
	c := indexCache{every: time.Hour}
	a, b := fleet(10), fleet(20)
	c.get(a, 10)
	for i := 0; i < 100; i++ {
		if got := c.get(b, 20); got.src != routeSource(a) {
			t.Fatal("rebuilt within the interval")
		}
	}
}

// BenchmarkConsoleIndexMillion is one tenants page of the console at a
// million tenants: the index query (a filter that matches about a tenth,
// from a cursor deep in the list) and the page rendered, without the
// HTTP round trip. The goal is ≤ 100 ms per page.
func BenchmarkConsoleIndexMillion(b *testing.B) {
	f := fleet(1_000_000)
	ix := buildIndex(f, len(f.routes))
	b.Logf("index of %d tenants built in %s", len(ix.rows), ix.took)
	con, err := newConsole()
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{console: con}
	queries := []tenantQuery{
		{Limit: tenantsPerPage, After: "t0500000"},
		{Limit: tenantsPerPage, Plan: "pro", State: "disabled", After: "t0700000"},
		{Limit: tenantsPerPage, Prefix: "t09", Target: "pool-3"},
		{Limit: tenantsPerPage, Target: "pool-49", Tier: "dedicated-cluster", State: "frozen"}, // matches none: a full scan
	}
	gin.SetMode(gin.ReleaseMode)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, q := range queries {
			rows, next := ix.page(q)
			c, _ := gin.CreateTestContext(httptest.NewRecorder())
			c.Request = httptest.NewRequest("GET", "/ui/tenants", nil)
			s.render(c, 200, "tenants", "tenants", map[string]any{"Q": q, "Rows": rows, "NextURL": q.url(next), "Plans": ix.plans})
			if q.State != "frozen" && len(rows) == 0 {
				b.Fatalf("query %+v found nothing", q)
			}
		}
	}
	b.StopTimer()
	per := b.Elapsed() / time.Duration(b.N*len(queries))
	b.ReportMetric(float64(per.Microseconds())/1000, "ms/page")
}
