package placement

import (
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/switchyard/switchyard/catalog"
)

// millionFleet is 1,000,000 tenants over 100 shared pools in 3 regions:
// pool capacities 8, 16 or 24 TiB, skewed fill (a pool's share of tenants is
// its capacity times a factor from 0.1 to 2.5, so utilisation runs from
// under 0.05 to about 0.9 around a mean near 0.3), tenant sizes log-normal
// (median 192 MiB, a long tail of tens of GiB), a fifth of the tenants pinned
// to their pool's region, two pools cordoned.
var millionFleet = sync.OnceValues(func() ([]TargetLoad, []TenantLoad) {
	const pools, tenants = 100, 1_000_000
	r := rand.New(rand.NewPCG(1, 1_000_000))
	regions := []string{"eu", "us", "ap"}
	targets := make([]catalog.Target, pools)
	cum := make([]float64, pools)
	var w float64
	for i := range targets {
		targets[i] = pool("pool-"+strconv.Itoa(1000 + i)[1:], (8+8*r.Int64N(3))<<40, "region", regions[i%3])
		targets[i].Cordoned = i == 17 || i == 71
		w += float64(targets[i].Capacity.Bytes>>40) * (0.1 + 2.4*r.Float64()*r.Float64())
		cum[i] = w
	}
	ts := make([]TenantLoad, tenants)
	for i := range ts {
		x := r.Float64() * w
		p := 0
		for lo, hi := 0, pools-1; lo < hi; {
			m := (lo + hi) / 2
			if cum[m] < x {
				lo = m + 1
			} else {
				hi = m
			}
			p = hi
		}
		ts[i] = TenantLoad{Tenant: catalog.Tenant{ID: "t" + strconv.Itoa(i), Plan: "free", Tier: catalog.TierShared,
			Target: targets[p].ID, State: catalog.StateActive},
			Bytes: int64(math.Exp(r.NormFloat64()*1.3) * float64(192<<20)), RPS: math.Floor(math.Exp(r.NormFloat64()) * 5)}
		if r.IntN(5) == 0 {
			ts[i].Tenant.Labels = map[string]string{"region": targets[p].Labels["region"]}
		}
	}
	return loads(targets, ts), ts
})

// BenchmarkPlanRebalanceMillion plans a rebalance of 1,000,000 tenants over
// 100 skewed pools (unbounded moves, ±0.1 band, 10% headroom). Goal: ≤ 1 s
// per plan on a 2-core machine.
func BenchmarkPlanRebalanceMillion(b *testing.B) {
	targets, tenants := millionFleet()
	cfg := RebalanceConfig{Config: Config{Headroom: Headroom{0.1}}, Spread: 0.1}
	runtime.GC()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ReportAllocs()
	b.ResetTimer()
	var p Plan
	for b.Loop() {
		var err error
		if p, err = PlanRebalance(targets, tenants, cfg); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	allocPerOp := float64(ms1.TotalAlloc-ms0.TotalAlloc) / float64(b.N)
	runtime.GC()
	var ms2 runtime.MemStats
	runtime.ReadMemStats(&ms2)
	var moved int64
	for _, m := range p.Moves {
		moved += m.Bytes
	}
	b.ReportMetric(allocPerOp/1e6, "alloc-MB/op")
	b.ReportMetric(float64(ms0.HeapAlloc)/1e6, "input-heap-MB")
	b.ReportMetric((float64(ms2.HeapAlloc)-float64(ms0.HeapAlloc))/1e6, "plan-heap-MB")
	b.ReportMetric(float64(len(p.Moves)), "moves")
	b.ReportMetric(float64(moved)/(1<<40), "moved-TiB")
	if !p.Converged {
		b.Logf("not converged: %s", p.Note)
	}
	runtime.KeepAlive(p)
}

// BenchmarkChoose places one tenant among 100 targets.
func BenchmarkChoose(b *testing.B) {
	targets, _ := millionFleet()
	t := tenant("new", "", 1<<30, "region", "eu")
	cfg := Config{Headroom: Headroom{0.1}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Choose(t, catalog.TierShared, targets, cfg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlanDrain drains the busiest of 100 pools (about 25,000 tenants).
func BenchmarkPlanDrain(b *testing.B) {
	targets, tenants := millionFleet()
	busiest := 0
	for i := range targets {
		if targets[i].Tenants > targets[busiest].Tenants {
			busiest = i
		}
	}
	id := targets[busiest].Target.ID
	cfg := Config{Headroom: Headroom{0.1}}
	b.ReportAllocs()
	var p Plan
	for b.Loop() {
		p, _ = PlanDrain(id, targets, tenants, cfg)
	}
	b.ReportMetric(float64(len(p.Moves)), "moves")
}
