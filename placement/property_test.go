package placement

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/switchyard/switchyard/catalog"
)

// randomSpec draws a fleet shape: 3–20 pools, 10–2000 tenants.
func randomSpec(r *rand.Rand) fleetSpec {
	s := fleetSpec{pools: 3 + r.IntN(18), tenants: 10 + r.IntN(1991), tenantCap: r.IntN(2) == 0}
	if r.IntN(3) > 0 {
		s.regions = []string{"eu", "us", "ap"}[:1+r.IntN(3)]
		s.labelShare = r.Float64() * 0.6
		if r.IntN(2) == 0 {
			s.residencyShare = r.Float64() * 0.5
		}
	}
	if r.IntN(3) == 0 {
		s.cordonShare = 0.2
	}
	return s
}

func randomRebalanceConfig(r *rand.Rand) RebalanceConfig {
	cfg := RebalanceConfig{
		Config: Config{Headroom: Headroom{float64(r.IntN(4)) * 0.05}},
		Spread: 0.02 + r.Float64()*0.18,
	}
	switch r.IntN(4) {
	case 0:
		cfg.Metric = MetricTenants
	case 1:
		cfg.Metric = MetricRPS
	}
	if r.IntN(3) == 0 {
		cfg.MaxMoves = 1 + r.IntN(50)
	}
	return cfg
}

// Property: over random skewed fleets with regions and cordons, a plan is
// deterministic (twice, and with inputs shuffled), respects capacity,
// constraints and cordons, moves each tenant at most once, stays within
// MaxMoves, reports After truthfully, and when converged re-plans empty.
func TestPlanRebalanceProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(20240601, 1))
	iters := 300
	if testing.Short() {
		iters = 60
	}
	converged := 0
	for range iters {
		seed := r.Uint64()
		rr := rand.New(rand.NewPCG(seed, 0))
		spec := randomSpec(rr)
		cfg := randomRebalanceConfig(rr)
		if !spec.tenantCap && cfg.Metric != "" && cfg.Metric != MetricBytes {
			spec.tenantCap = true // tenant and rps capacity figures for those metrics
		}
		targets, tenants := genFleet(rr, spec)
		p, err := PlanRebalance(targets, tenants, cfg)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		p2, _ := PlanRebalance(targets, tenants, cfg)
		if !reflect.DeepEqual(p, p2) {
			t.Fatalf("seed %d: same input, different plan", seed)
		}
		st, sn := shuffled(rr, targets, tenants)
		p3, err := PlanRebalance(st, sn, cfg)
		if err != nil || !reflect.DeepEqual(p, p3) {
			t.Fatalf("seed %d: shuffled input, different plan (%v)", seed, err)
		}
		checkRebalance(t, targets, tenants, cfg, p)
		if p.Converged {
			converged++
		}
	}
	t.Logf("%d/%d random plans converged", converged, iters)
}

// feasibleSpec is a fleet where convergence is guaranteed: no labels, no
// cordons, every tenant at most a quarter of the band of the smallest pool,
// and capacity well above the band.
func feasibleSpec(r *rand.Rand, spread float64) fleetSpec {
	return fleetSpec{pools: 3 + r.IntN(18), tenants: 10 + r.IntN(1991), tenantCap: r.IntN(2) == 0, maxTenantShare: spread / 4}
}

// Property: when the band is reachable, the plan converges; and plans
// bounded by MaxMoves, applied one after another, converge too.
func TestPlanRebalanceConvergesWhenFeasible(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	iters := 200
	if testing.Short() {
		iters = 40
	}
	for range iters {
		seed := r.Uint64()
		rr := rand.New(rand.NewPCG(seed, 0))
		cfg := RebalanceConfig{Spread: 0.02 + rr.Float64()*0.18, Config: Config{Headroom: Headroom{0.1}}}
		spec := feasibleSpec(rr, cfg.Spread)
		if spec.tenantCap && rr.IntN(2) == 0 {
			cfg.Metric = []Metric{MetricTenants, MetricRPS}[rr.IntN(2)]
		}
		targets, tenants := genFleet(rr, spec)
		p, err := PlanRebalance(targets, tenants, cfg)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if !p.Converged {
			t.Fatalf("seed %d: feasible fleet (%d pools, %d tenants, %s) did not converge: %s", seed, spec.pools, spec.tenants, cfg.metric(), p.Note)
		}
		checkRebalance(t, targets, tenants, cfg, p)

		// the same, a few moves at a time (every other fleet, to keep -race quick)
		if rr.IntN(2) == 0 {
			continue
		}
		cfg.MaxMoves = 5 + rr.IntN(30)
		for round := 0; ; round++ {
			if round > len(tenants) {
				t.Fatalf("seed %d: bounded plans did not converge in %d rounds", seed, round)
			}
			p, err := PlanRebalance(targets, tenants, cfg)
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			checkRebalance(t, targets, tenants, cfg, p)
			if p.Converged {
				break
			}
			if len(p.Moves) == 0 {
				t.Fatalf("seed %d: bounded plan stuck: %s", seed, p.Note)
			}
			targets, tenants, err = ApplyPlan(targets, tenants, p)
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// Property: a drain of a random pool moves every tenant to another pool of
// the same tier within constraints and capacity, or names it as unplaced;
// the plan ignores input order.
func TestPlanDrainProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(99, 1))
	iters := 200
	if testing.Short() {
		iters = 40
	}
	for range iters {
		seed := r.Uint64()
		rr := rand.New(rand.NewPCG(seed, 0))
		spec := randomSpec(rr)
		spec.tenants = 10 + rr.IntN(500)
		targets, tenants := genFleet(rr, spec)
		cfg := Config{Headroom: Headroom{float64(rr.IntN(3)) * 0.1}}
		victim := targets[rr.IntN(len(targets))].Target.ID
		p, err := PlanDrain(victim, targets, tenants, cfg)
		var unplaced *UnplacedError
		if err != nil && (!errors.As(err, &unplaced) || !errors.Is(err, ErrNoTarget)) {
			t.Fatalf("seed %d: %v", seed, err)
		}
		st, sn := shuffled(rr, targets, tenants)
		p2, err2 := PlanDrain(victim, st, sn, cfg)
		if !reflect.DeepEqual(p, p2) || (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("seed %d: shuffled input, different drain plan", seed)
		}
		on := map[string]TenantLoad{}
		for _, tl := range tenants {
			if tl.Tenant.Target == victim {
				on[tl.Tenant.ID] = tl
			}
		}
		byID := map[string]int{}
		cur := append([]TargetLoad(nil), targets...)
		for i := range cur {
			byID[cur[i].Target.ID] = i
		}
		tier := cur[byID[victim]].Target.Tier
		for _, m := range p.Moves {
			tl, ok := on[m.Tenant]
			if !ok || m.From != victim || m.To == victim {
				t.Fatalf("seed %d: bad move %+v", seed, m)
			}
			delete(on, m.Tenant)
			to := &cur[byID[m.To]]
			if to.Target.Tier != tier {
				t.Fatalf("seed %d: move to tier %s", seed, to.Target.Tier)
			}
			if err := Eligible(tl.Tenant, to.Target, cfg); err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			if err := Fits(tl, *to, cfg.Headroom); err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			to.Tenants++
			to.Bytes += tl.Bytes
			to.RPS += tl.RPS
		}
		if p.Converged != (len(on) == 0) || (unplaced == nil) != (len(on) == 0) {
			t.Fatalf("seed %d: converged %v with %d tenants left", seed, p.Converged, len(on))
		}
		if unplaced != nil && len(unplaced.Tenants) != len(on) {
			t.Fatalf("seed %d: %d unplaced reported, %d left", seed, len(unplaced.Tenants), len(on))
		}
		for id := range on {
			if unplaced.Tenants[id] == "" {
				t.Fatalf("seed %d: %s left without a reason", seed, id)
			}
		}
		if tier == catalog.TierShared && len(p.After) != len(p.Before) {
			t.Fatalf("seed %d: before/after cover different targets", seed)
		}
	}
}
