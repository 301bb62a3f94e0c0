package router

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard/switchyard/catalog"
)

type usageAdd struct {
	tenant   string
	at       time.Time
	status   int
	in, out  int64
	upstream time.Duration
}

func TestMeterAggregates(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	m0 := t0.Unix() / 60
	cases := []struct {
		name    string
		adds    []usageAdd
		harvest time.Time
		want    map[int64]map[string]catalog.UsageCounts
	}{
		{
			name: "status classes, bytes and upstream time in one minute",
			adds: []usageAdd{
				{"acme", t0.Add(time.Second), 200, 10, 100, 2 * time.Millisecond},
				{"acme", t0.Add(2 * time.Second), 204, 0, 0, time.Millisecond},
				{"acme", t0.Add(3 * time.Second), 503, 5, 7, 0},
				{"acme", t0.Add(4 * time.Second), 499, 0, 0, 0},
				{"acme", t0.Add(5 * time.Second), 101, 0, 0, 0},
				{"acme", t0.Add(6 * time.Second), 302, 0, 3, 0},
				{"acme", t0.Add(7 * time.Second), 0, 0, 0, 0}, // nothing written: 2xx
			},
			harvest: t0.Add(10 * time.Second),
			want: map[int64]map[string]catalog.UsageCounts{m0: {"acme": {
				Requests: [5]uint64{1, 3, 1, 1, 1}, BytesIn: 15, BytesOut: 110, UpstreamMicros: 3000,
			}}},
		},
		{
			name: "tenants kept apart",
			adds: []usageAdd{
				{"acme", t0, 200, 1, 1, 0},
				{"globex", t0, 404, 2, 2, 0},
				{"acme", t0, 200, 1, 1, 0},
			},
			harvest: t0,
			want: map[int64]map[string]catalog.UsageCounts{m0: {
				"acme":   {Requests: [5]uint64{0, 2}, BytesIn: 2, BytesOut: 2},
				"globex": {Requests: [5]uint64{0, 0, 0, 1}, BytesIn: 2, BytesOut: 2},
			}},
		},
		{
			name: "minutes up to three back are told apart",
			adds: []usageAdd{
				{"acme", t0, 200, 0, 0, 0},
				{"acme", t0.Add(time.Minute), 200, 0, 0, 0},
				{"acme", t0.Add(time.Minute), 200, 0, 0, 0},
				{"acme", t0.Add(3*time.Minute + 59*time.Second), 500, 0, 0, 0},
			},
			harvest: t0.Add(3*time.Minute + 59*time.Second),
			want: map[int64]map[string]catalog.UsageCounts{
				m0:     {"acme": {Requests: [5]uint64{0, 1}}},
				m0 + 1: {"acme": {Requests: [5]uint64{0, 2}}},
				m0 + 3: {"acme": {Requests: [5]uint64{0, 0, 0, 0, 1}}},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMeter()
			for _, a := range tc.adds {
				m.Add(a.tenant, a.at, a.status, a.in, a.out, a.upstream)
			}
			got := map[int64]map[string]catalog.UsageCounts{}
			m.harvest(tc.harvest.Unix()/60, got)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("harvest:\n got %v\nwant %v", got, tc.want)
			}
			again := map[int64]map[string]catalog.UsageCounts{}
			m.harvest(tc.harvest.Unix()/60, again)
			if len(again) != 0 {
				t.Fatalf("a second harvest found %v: counts taken twice", again)
			}
		})
	}
}

// Concurrent adds, harvests, table growth and evictions lose nothing.
func TestMeterConcurrentExact(t *testing.T) {
	m := NewMeter()
	const writers, perWriter, tenants = 4, 20000, 3000
	now := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				m.Add(fmt.Sprintf("t%d", (i*7+w)%tenants), now, 200, 1, 2, 0)
			}
		}(w)
	}
	total := map[int64]map[string]catalog.UsageCounts{}
	stop := make(chan struct{})
	harvested := make(chan struct{})
	go func() {
		defer close(harvested)
		for {
			select {
			case <-stop:
				return
			default:
				m.harvest(now.Unix()/60, total)
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-harvested
	m.harvest(now.Unix()/60, total)
	var n, in, out uint64
	for _, ts := range total {
		for _, c := range ts {
			n += c.Total()
			in += c.BytesIn
			out += c.BytesOut
		}
	}
	if want := uint64(writers * perWriter); n != want || in != want || out != 2*want {
		t.Fatalf("counted %d requests, %d in, %d out; want %d, %d, %d", n, in, out, want, want, 2*want)
	}
}

// Idle tenants are forgotten, and counts added to a record just evicted
// still arrive at the next harvest.
func TestMeterEvictsIdleTenants(t *testing.T) {
	m := NewMeter()
	t0 := time.Now()
	for i := 0; i < 5000; i++ {
		m.Add(fmt.Sprintf("t%d", i), t0, 200, 0, 0, 0)
	}
	acc := map[int64]map[string]catalog.UsageCounts{}
	m.harvest(t0.Unix()/60, acc)
	old := m.record("t1") // held across the eviction, as a request may
	later := t0.Add(20 * time.Minute)
	m.harvest(later.Unix()/60, acc)
	if n := m.Tenants(); n != 0 {
		t.Fatalf("%d tenants kept after 20 idle minutes, want 0", n)
	}
	old.slots[uint64(later.Unix()/60)%usageSlots].n[1].Add(1)
	late := map[int64]map[string]catalog.UsageCounts{}
	m.harvest(later.Unix()/60, late)
	if c := late[later.Unix()/60]["t1"]; c.Total() != 1 {
		t.Fatalf("late add to an evicted record: got %v, want 1 request", late)
	}
}

type fakeUsageStore struct {
	mu     sync.Mutex
	puts   map[string]catalog.UsageMinute // by minute and source
	fail   bool
	prunes int
}

func (f *fakeUsageStore) PutUsage(_ context.Context, m *catalog.UsageMinute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return fmt.Errorf("consul down")
	}
	cp := map[string]catalog.UsageCounts{}
	for k, v := range m.Tenants {
		cp[k] = v
	}
	f.puts[m.Minute.Format(time.RFC3339)+"/"+m.Source] = catalog.UsageMinute{Minute: m.Minute, Source: m.Source, Tenants: cp}
	return nil
}

func (f *fakeUsageStore) PruneUsage(context.Context, time.Time) (int, error) {
	f.prunes++
	return 0, nil
}

// The publisher rewrites a minute's running totals, retries what Consul
// did not take, and two processes of one router write different keys.
func TestUsagePublisherRunningTotals(t *testing.T) {
	store := &fakeUsageStore{puts: map[string]catalog.UsageMinute{}}
	m := NewMeter()
	cfg := ObserveConfig{}
	cfg.setDefaults()
	pub := newUsagePublisher(m, store, "r1", cfg, slog.Default())
	t0 := time.Date(2026, 12, 2, 6, 0, 10, 0, time.UTC)
	key := t0.Truncate(time.Minute).Format(time.RFC3339) + "/" + pub.source
	steps := []struct {
		adds int
		fail bool
		want uint64 // the minute's total in the store after the flush
	}{
		{adds: 3, want: 3},
		{adds: 2, want: 5},
		{adds: 4, fail: true, want: 5},
		{adds: 1, want: 10},
	}
	for i, s := range steps {
		for j := 0; j < s.adds; j++ {
			m.Add("acme", t0, 200, 0, 0, 0)
		}
		store.fail = s.fail
		pub.flush(context.Background(), t0.Add(time.Duration(i)*time.Second))
		if got := store.puts[key].Tenants["acme"].Total(); got != s.want {
			t.Fatalf("step %d: stored total %d, want %d", i, got, s.want)
		}
	}
	pub2 := newUsagePublisher(NewMeter(), store, "r1", cfg, slog.Default())
	if pub2.source == pub.source {
		t.Fatalf("a second process of router r1 got the same source %q", pub.source)
	}
	pub.flush(context.Background(), t0.Add(10*time.Minute))
	if len(pub.minutes) != 0 {
		t.Fatalf("minutes kept after they were written and closed: %v", pub.minutes)
	}
}

func BenchmarkMeterAdd(b *testing.B) {
	m := NewMeter()
	tenants := make([]string, 64)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("tenant-%d", i)
	}
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Add(tenants[i&63], now, 200, 0, 512, time.Millisecond)
			i++
		}
	})
}

func BenchmarkRequestID(b *testing.B) {
	g := newRequestIDs()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 0, 64)
		for pb.Next() {
			id := requestID{n: g.next()}
			buf = id.appendTo(buf[:0], g)
		}
	})
}

// The whole per-request cost of observing a request with metering and a
// request id on and the access log off, as both engines pay it.
func BenchmarkObserveRequest(b *testing.B) {
	p := &Proxy{obs: newObserver(ObserveConfig{})}
	var c completion
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		p.obs.begin(&c, "GET", "/t/acme/orders")
		c.tenant, c.resolved, c.status, c.bytesOut, c.upstream = "acme", true, 200, 512, time.Millisecond
		p.completed(&c)
	}
}

// A tenant in the catalog is metered whatever it was answered; an unknown
// one never (unbounded ids must not fill the meter).
func TestCompletionRouted(t *testing.T) {
	route := catalog.Route{ID: "acme", Tier: catalog.TierShared, Target: "pool-1"}
	cases := []struct {
		err      *routeError
		resolved bool
	}{
		{nil, true},
		{errTenantMoving, true},
		{errHoldCancelled, true},
		{errTenantDisabled, true},
		{errUnknownTenant, false},
	}
	for _, tc := range cases {
		var c completion
		c.routed(route, tc.err)
		if c.resolved != tc.resolved || tc.resolved && (c.tier != "shared" || c.target != "pool-1") {
			t.Errorf("after %v: %+v, want resolved=%v", tc.err, c, tc.resolved)
		}
	}
}

// The busiest-tenants metric shows at most usageTopN tenants, the busiest.
func TestUsageTopTenants(t *testing.T) {
	store := &fakeUsageStore{puts: map[string]catalog.UsageMinute{}}
	m := NewMeter()
	cfg := ObserveConfig{}
	cfg.setDefaults()
	pub := newUsagePublisher(m, store, "r1", cfg, slog.Default())
	t0 := time.Now()
	pub.flush(context.Background(), t0)
	for i := 0; i < 15; i++ {
		for j := 0; j <= i; j++ {
			m.Add(fmt.Sprintf("t%02d", i), t0, 200, 0, 0, 0)
		}
	}
	pub.flush(context.Background(), t0.Add(time.Second))
	reg := prometheus.NewRegistry()
	reg.MustRegister(pub.top)
	families, err := reg.Gather()
	if err != nil || len(families) != 1 {
		t.Fatalf("gather: %v %v", families, err)
	}
	got := map[string]float64{}
	for _, mt := range families[0].GetMetric() {
		got[mt.GetLabel()[0].GetValue()] = mt.GetGauge().GetValue()
	}
	if len(got) != usageTopN || got["t14"] != 15 || got["t05"] != 6 || got["t04"] != 0 {
		t.Fatalf("top tenants %v", got)
	}
}
