package placement

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/switchyard/switchyard/catalog"
)

const gib = int64(1) << 30

// pool is a shared target for table tests.
func pool(id string, capBytes int64, labels ...string) catalog.Target {
	return catalog.Target{ID: id, Tier: catalog.TierShared, Service: "app", DSN: "postgres://db/" + id,
		Capacity: catalog.Capacity{Bytes: capBytes}, Labels: kv(labels...)}
}

func kv(pairs ...string) map[string]string {
	if len(pairs) == 0 {
		return nil
	}
	m := map[string]string{}
	for i := 0; i+1 < len(pairs); i += 2 {
		m[pairs[i]] = pairs[i+1]
	}
	return m
}

func tenant(id, target string, bytes int64, labels ...string) TenantLoad {
	return TenantLoad{Tenant: catalog.Tenant{ID: id, Plan: "free", Tier: catalog.TierShared, Target: target,
		State: catalog.StateActive, Labels: kv(labels...)}, Bytes: bytes}
}

// loads builds TargetLoads whose figures are the sums of their tenants.
func loads(targets []catalog.Target, tenants []TenantLoad) []TargetLoad {
	idx := map[string]int{}
	out := make([]TargetLoad, len(targets))
	for i, t := range targets {
		out[i].Target = t
		idx[t.ID] = i
	}
	for _, tl := range tenants {
		if i, ok := idx[tl.Tenant.Target]; ok {
			out[i].Tenants++
			out[i].Bytes += tl.Bytes
			out[i].RPS += tl.RPS
		}
	}
	return out
}

// fleetSpec describes a random fleet.
type fleetSpec struct {
	pools, tenants int
	regions        []string // pool and tenant region labels; nil: none
	labelShare     float64  // share of tenants carrying their pool's region
	residencyShare float64  // share of tenants resident in their pool's region (and maybe another)
	cordonShare    float64
	tenantCap      bool // set Capacity.Tenants and RPS too
	maxTenantShare float64
}

// genFleet makes a skewed random fleet: pool capacities vary 1–4×, tenants
// pick pools with Zipf-like weights, tenant sizes are log-normal, capped at
// maxTenantShare of the smallest pool's capacity when set. A few
// dedicated-db targets and their tenants are mixed in.
func genFleet(r *rand.Rand, s fleetSpec) ([]TargetLoad, []TenantLoad) {
	var targets []catalog.Target
	weights := make([]float64, s.pools)
	var wsum float64
	minCap := int64(math.MaxInt64)
	for i := range s.pools {
		t := pool(fmt.Sprintf("pool-%03d", i), (1+r.Int64N(4))*1000*gib)
		if s.regions != nil {
			t.Labels = map[string]string{"region": s.regions[i%len(s.regions)]}
		}
		if r.Float64() < s.cordonShare {
			t.Cordoned = true
		}
		if s.tenantCap {
			t.Capacity.Tenants = s.tenants/s.pools*3 + 10
			t.Capacity.RPS = 100000
		}
		minCap = min(minCap, t.Capacity.Bytes)
		targets = append(targets, t)
		weights[i] = 1 / math.Pow(float64(i+1), 0.8+0.4*r.Float64())
		wsum += weights[i]
	}
	for i := range 2 {
		targets = append(targets, catalog.Target{ID: fmt.Sprintf("ded-%d", i), Tier: catalog.TierDedicatedDB,
			Service: "app", DSN: "postgres://ded/x", Capacity: catalog.Capacity{Bytes: 100 * gib}})
	}
	perm := r.Perm(s.pools) // skew does not follow ids
	tenants := make([]TenantLoad, 0, s.tenants+4)
	for i := range s.tenants {
		x, p := r.Float64()*wsum, 0
		for p = 0; p < s.pools-1 && x > weights[p]; p++ {
			x -= weights[p]
		}
		p = perm[p]
		size := int64(math.Exp(r.NormFloat64()*1.5) * float64(gib) / 4)
		if s.maxTenantShare > 0 {
			size = min(size, int64(s.maxTenantShare*float64(minCap)))
		}
		if r.IntN(50) == 0 {
			size = 0
		}
		tl := tenant(fmt.Sprintf("t%05d", i), targets[p].ID, size)
		tl.RPS = float64(r.IntN(200))
		if s.regions != nil && r.Float64() < s.labelShare {
			tl.Tenant.Labels = map[string]string{"region": targets[p].Labels["region"]}
		}
		if s.regions != nil && s.residencyShare > 0 && r.Float64() < s.residencyShare {
			tl.Tenant.Residency = []string{targets[p].Labels["region"]}
			if other := s.regions[r.IntN(len(s.regions))]; other != tl.Tenant.Residency[0] && r.IntN(2) == 0 {
				tl.Tenant.Residency = append(tl.Tenant.Residency, other)
			}
		}
		tenants = append(tenants, tl)
	}
	for i := range 4 {
		tenants = append(tenants, tenant(fmt.Sprintf("d%d", i), fmt.Sprintf("ded-%d", i%2), 3*gib))
	}
	return loads(targets, tenants), tenants
}

// shuffled returns shuffled copies.
func shuffled(r *rand.Rand, targets []TargetLoad, tenants []TenantLoad) ([]TargetLoad, []TenantLoad) {
	t := append([]TargetLoad(nil), targets...)
	n := append([]TenantLoad(nil), tenants...)
	r.Shuffle(len(t), func(i, j int) { t[i], t[j] = t[j], t[i] })
	r.Shuffle(len(n), func(i, j int) { n[i], n[j] = n[j], n[i] })
	return t, n
}

// checkRebalance verifies a plan against the rules: moves apply in order
// between shared pools, never to a cordoned pool, one outside the tenant's
// residency or one missing the tenant's
// constrained labels, never past capacity less headroom, each tenant at most
// once, at most MaxMoves; After matches the applied state; a converged plan
// leaves every pool in the band and re-plans empty.
func checkRebalance(t *testing.T, targets []TargetLoad, tenants []TenantLoad, cfg RebalanceConfig, p Plan) {
	t.Helper()
	if cfg.MaxMoves > 0 && len(p.Moves) > cfg.MaxMoves {
		t.Fatalf("%d moves > MaxMoves %d", len(p.Moves), cfg.MaxMoves)
	}
	byID := map[string]int{}
	for i := range targets {
		byID[targets[i].Target.ID] = i
	}
	ten := map[string]TenantLoad{}
	for _, tl := range tenants {
		ten[tl.Tenant.ID] = tl
	}
	cur := append([]TargetLoad(nil), targets...)
	seen := map[string]bool{}
	for k, m := range p.Moves {
		if seen[m.Tenant] {
			t.Fatalf("move %d: tenant %s moved twice", k, m.Tenant)
		}
		seen[m.Tenant] = true
		tl, ok := ten[m.Tenant]
		if !ok || tl.Tenant.Target != m.From || m.Bytes != tl.Bytes || m.From == m.To {
			t.Fatalf("move %d %+v does not match tenant %+v", k, m, tl.Tenant)
		}
		if m.Reason == "" {
			t.Fatalf("move %d has no reason", k)
		}
		from, to := &cur[byID[m.From]], &cur[byID[m.To]]
		if from.Target.Tier != catalog.TierShared || to.Target.Tier != catalog.TierShared {
			t.Fatalf("move %d between non-shared targets: %+v", k, m)
		}
		if err := Eligible(tl.Tenant, to.Target, cfg.Config); err != nil {
			t.Fatalf("move %d: %s to %s breaks constraints: %v", k, m.Tenant, m.To, err)
		}
		if err := Fits(tl, *to, cfg.Headroom); err != nil {
			t.Fatalf("move %d: %s to %s breaks capacity: %v", k, m.Tenant, m.To, err)
		}
		from.Tenants--
		from.Bytes -= tl.Bytes
		from.RPS -= tl.RPS
		to.Tenants++
		to.Bytes += tl.Bytes
		to.RPS += tl.RPS
	}
	nt, nn, err := ApplyPlan(targets, tenants, p)
	if err != nil {
		t.Fatal(err)
	}
	metric := cfg.metric()
	var total, capSum float64
	for _, tl := range nt {
		if tl.Target.Tier == catalog.TierShared {
			total += metricLoad(metric, tl)
			capSum += metricCapacity(metric, tl.Target.Capacity)
		}
	}
	capOf := func(tl TargetLoad) float64 { return metricCapacity(metric, tl.Target.Capacity) }
	if capSum == 0 { // no capacity figures: balanced by raw load
		pools := 0
		for _, tl := range nt {
			if tl.Target.Tier == catalog.TierShared {
				pools++
			}
		}
		c := total / float64(pools)
		if c <= 0 {
			c = 1
		}
		capOf = func(TargetLoad) float64 { return c }
		capSum = c * float64(pools)
	}
	mean := total / capSum
	s := cfg.spread()
	for _, tl := range nt {
		if tl.Target.Tier != catalog.TierShared {
			continue
		}
		u := metricLoad(metric, tl) / capOf(tl)
		if a := p.After[tl.Target.ID]; math.Abs(a-u) > 1e-9 {
			t.Fatalf("After[%s] = %v, applied state has %v", tl.Target.ID, a, u)
		}
		if p.Converged && (u > mean+s+1e-6 || !tl.Target.Cordoned && u < mean-s-1e-6) {
			t.Fatalf("converged plan leaves %s at %.4f outside %.4f±%.2f", tl.Target.ID, u, mean, s)
		}
	}
	if p.Converged {
		again, err := PlanRebalance(nt, nn, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if len(again.Moves) != 0 || !again.Converged {
			t.Fatalf("re-plan after a converged plan: %d moves, converged %v: %s", len(again.Moves), again.Converged, again.Note)
		}
	}
}

func metricLoad(m Metric, tl TargetLoad) float64 {
	switch m {
	case MetricTenants:
		return float64(tl.Tenants)
	case MetricRPS:
		return tl.RPS
	}
	return float64(tl.Bytes)
}
