package placement

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/catalog"
)

func TestPlanRebalance(t *testing.T) {
	cordoned := func(tg catalog.Target) catalog.Target { tg.Cordoned = true; return tg }
	capd := func(tg catalog.Target, c catalog.Capacity) catalog.Target { tg.Capacity = c; return tg }
	withRPS := func(tl TenantLoad, r float64) TenantLoad { tl.RPS = r; return tl }
	type fleet struct {
		targets []catalog.Target
		tenants []TenantLoad
	}
	many := fleet{targets: []catalog.Target{pool("a", 100), pool("b", 100)}}
	for i := range 20 {
		many.tenants = append(many.tenants, tenant(fmt.Sprintf("m%02d", i), "a", 4))
	}
	cases := []struct {
		name      string
		fleet     fleet
		cfg       RebalanceConfig
		moves     []string // "tenant>to"
		converged bool
		err       error
		note      []string
	}{
		{name: "balanced already",
			fleet:     fleet{[]catalog.Target{pool("a", 100), pool("b", 100)}, []TenantLoad{tenant("t1", "a", 50), tenant("t2", "b", 45)}},
			converged: true, note: []string{"0 move(s)", "converged"}},
		{name: "exact fit",
			fleet: fleet{[]catalog.Target{pool("a", 100), pool("b", 100)},
				[]TenantLoad{tenant("t30", "a", 30), tenant("t20", "a", 20), tenant("t10", "a", 10), tenant("t05", "a", 5), tenant("b5", "b", 5)}},
			moves: []string{"t20>b"}, converged: true, note: []string{"mean utilisation 0.350, band ±0.100", "1 move(s) totalling 20 B"}},
		{name: "best fit, not largest: fewer bytes",
			fleet: fleet{[]catalog.Target{pool("a", 100), pool("b", 100)},
				[]TenantLoad{tenant("t30", "a", 30), tenant("t18", "a", 18), tenant("t12", "a", 12), tenant("t05", "a", 5), tenant("b5", "b", 5)}},
			moves: []string{"t18>b", "t05>b"}, converged: true},
		{name: "cordoned pool gives, never takes",
			fleet: fleet{[]catalog.Target{cordoned(pool("a", 100)), pool("b", 100), pool("c", 100)},
				[]TenantLoad{tenant("a30", "a", 30), tenant("a25", "a", 25), tenant("a15", "a", 15), tenant("b10", "b", 10)}},
			moves: []string{"a30>c", "a15>b"}, converged: true},
		{name: "cordoned empty pool cannot take",
			fleet: fleet{[]catalog.Target{cordoned(pool("a", 100)), pool("b", 100)},
				[]TenantLoad{tenant("b1", "b", 30), tenant("b2", "b", 30)}},
			converged: false, note: []string{"not converged (no further move fits)", "b at 0.600 > 0.400"}},
		{name: "labels keep tenants home",
			fleet: fleet{[]catalog.Target{pool("eu", 100, "region", "eu"), pool("us", 100, "region", "us")},
				[]TenantLoad{tenant("e1", "eu", 30, "region", "eu"), tenant("e2", "eu", 20, "region", "eu"), tenant("u1", "eu", 10)}},
			moves: []string{"u1>us"}, converged: false, note: []string{"eu at 0.500 > 0.400"}},
		{name: "constraint keys configurable",
			fleet: fleet{[]catalog.Target{pool("eu", 100, "region", "eu"), pool("us", 100, "region", "us")},
				[]TenantLoad{tenant("e1", "eu", 30, "region", "eu"), tenant("e2", "eu", 20, "region", "eu"), tenant("u1", "eu", 10)}},
			cfg:   RebalanceConfig{Config: Config{ConstraintKeys: []string{}}},
			moves: []string{"e2>us"}, converged: true},
		{name: "max moves",
			fleet: many, cfg: RebalanceConfig{MaxMoves: 3},
			moves: []string{"m00>b", "m01>b", "m02>b"}, converged: false, note: []string{"stopped at MaxMoves=3"}},
		{name: "many small moves converge", fleet: many, converged: true,
			moves: []string{"m00>b", "m01>b", "m02>b", "m03>b", "m04>b", "m05>b", "m06>b", "m07>b"}},
		{name: "tenants metric moves the smallest",
			fleet: fleet{[]catalog.Target{capd(pool("a", 0), catalog.Capacity{Tenants: 10}), capd(pool("b", 0), catalog.Capacity{Tenants: 10})},
				[]TenantLoad{tenant("t1", "a", 80), tenant("t2", "a", 10), tenant("t3", "a", 70), tenant("t4", "a", 20),
					tenant("t5", "a", 60), tenant("t6", "a", 30), tenant("t7", "a", 50), tenant("t8", "a", 40)}},
			cfg:   RebalanceConfig{Metric: MetricTenants},
			moves: []string{"t2>b", "t4>b", "t6>b"}, converged: true},
		{name: "rps metric",
			fleet: fleet{[]catalog.Target{capd(pool("a", 0), catalog.Capacity{RPS: 1000}), capd(pool("b", 0), catalog.Capacity{RPS: 1000})},
				[]TenantLoad{withRPS(tenant("hot", "a", 1), 500), withRPS(tenant("warm", "a", 1), 300), withRPS(tenant("cold", "b", 1), 100)}},
			cfg:   RebalanceConfig{Metric: MetricRPS},
			moves: []string{"warm>b"}, converged: true},
		{name: "no capacity figures: raw load",
			fleet: fleet{[]catalog.Target{pool("a", 0), pool("b", 0)},
				[]TenantLoad{tenant("t40", "a", 40), tenant("t35", "a", 35), tenant("t15", "a", 15), tenant("b10", "b", 10)}},
			moves: []string{"t35>b"}, converged: true, note: []string{"over mean load"}},
		{name: "headroom blocks the taker",
			fleet: fleet{[]catalog.Target{pool("a", 100), pool("b", 100)},
				[]TenantLoad{tenant("a1", "a", 40), tenant("a2", "a", 40)}},
			cfg:       RebalanceConfig{Config: Config{Headroom: Headroom{0.7}}},
			converged: false},
		{name: "tenant count blocks the taker",
			fleet: fleet{[]catalog.Target{pool("a", 100), capd(pool("b", 0), catalog.Capacity{Bytes: 100, Tenants: 1})},
				[]TenantLoad{tenant("a1", "a", 30), tenant("a2", "a", 30), tenant("b1", "b", 1)}},
			converged: false},
		{name: "non-shared ignored",
			fleet: fleet{[]catalog.Target{pool("a", 100), pool("b", 100), {ID: "d", Tier: catalog.TierDedicatedDB, Capacity: catalog.Capacity{Bytes: 10}}},
				[]TenantLoad{tenant("t1", "a", 50), tenant("t2", "b", 45), tenant("d1", "d", 500)}},
			converged: true, note: []string{"ignored 1 tenant(s) not on a shared pool"}},
		{name: "zero-size tenants not considered",
			fleet: fleet{[]catalog.Target{pool("a", 100), pool("b", 100)},
				[]TenantLoad{tenant("z", "a", 0), tenant("t1", "a", 50), tenant("t2", "b", 45)}},
			converged: true, note: []string{"1 tenant(s) with zero bytes not considered"}},
		{name: "no shared pools",
			fleet:     fleet{[]catalog.Target{{ID: "d", Tier: catalog.TierDedicatedDB}}, nil},
			converged: true, note: []string{"no shared pools"}},
		{name: "mixed capacity",
			fleet: fleet{[]catalog.Target{pool("a", 100), pool("b", 0)}, nil}, err: ErrInvalidInput},
		{name: "duplicate tenant",
			fleet: fleet{[]catalog.Target{pool("a", 100), pool("b", 100)}, []TenantLoad{tenant("x", "a", 5), tenant("x", "a", 5)}}, err: ErrInvalidInput},
		{name: "duplicate pool",
			fleet: fleet{[]catalog.Target{pool("a", 100), pool("a", 100)}, nil}, err: ErrInvalidInput},
		{name: "bad config", fleet: many, cfg: RebalanceConfig{Metric: "cpu"}, err: ErrInvalidConfig},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			targets := loads(c.fleet.targets, c.fleet.tenants)
			p, err := PlanRebalance(targets, c.fleet.tenants, c.cfg)
			if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			if err != nil {
				return
			}
			var got []string
			for _, m := range p.Moves {
				got = append(got, m.Tenant+">"+m.To)
			}
			if strings.Join(got, " ") != strings.Join(c.moves, " ") {
				t.Errorf("moves %v, want %v\n%s", got, c.moves, p.Note)
			}
			if p.Converged != c.converged {
				t.Errorf("converged %v, want %v: %s", p.Converged, c.converged, p.Note)
			}
			for _, s := range c.note {
				if !strings.Contains(p.Note, s) {
					t.Errorf("note %q does not say %q", p.Note, s)
				}
			}
			checkRebalance(t, targets, c.fleet.tenants, c.cfg, p)
		})
	}
}

// A move's reason names the pool outside the band (over it or under it),
// the pool that takes or gives, the tenant and the utilisations.
func TestPlanRebalanceReasons(t *testing.T) {
	targets := []catalog.Target{pool("a", 100), pool("b", 100), pool("c", 100)}
	for _, c := range []struct {
		name    string
		tenants []TenantLoad
		says    []string
	}{
		{"over band", []TenantLoad{tenant("big", "a", 20), tenant("small", "b", 30), tenant("tiny", "a", 2), tenant("x", "a", 44)},
			[]string{"a over band (0.660 > 0.420 = mean 0.320 + 0.100)", "c is the least utilised pool that can take it (0.000)", "big 20 B best fits the 24 B excess", "bytes utilisation: a 0.660 → 0.460, c 0.000 → 0.200"}},
		{"under band", []TenantLoad{tenant("p", "a", 10), tenant("q", "a", 20), tenant("r", "b", 30)},
			[]string{"c under band (0.000 < 0.100 = mean 0.200 - 0.100); ", " is the most utilised pool that can give it (0.300); ", "shortfall"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := PlanRebalance(loads(targets, c.tenants), c.tenants, RebalanceConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Moves) == 0 {
				t.Fatalf("no moves: %s", p.Note)
			}
			r := p.Moves[0].Reason
			for _, s := range c.says {
				if !strings.Contains(r, s) {
					t.Errorf("reason %q does not say %q", r, s)
				}
			}
			if c.name == "over band" && (p.Before["a"] != 0.66 || p.After["a"] == p.Before["a"]) {
				t.Errorf("before/after: %v %v", p.Before, p.After)
			}
		})
	}
}
