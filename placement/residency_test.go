package placement

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/catalog"
)

// resident returns t resident in regions.
func resident(t TenantLoad, regions ...string) TenantLoad {
	t.Tenant.Residency = regions
	return t
}

func TestCheckResidency(t *testing.T) {
	eu, us, none := pool("pool-eu", 0, "region", "eu"), pool("pool-us", 0, "region", "us"), pool("pool-x", 0)
	cases := []struct {
		name      string
		residency []string
		target    catalog.Target
		want      string // "" = allowed; else the exact refusal
	}{
		{"no constraint, any region", nil, us, ""},
		{"no constraint, no region", nil, none, ""},
		{"in its region", []string{"eu"}, eu, ""},
		{"one of its regions", []string{"us", "eu"}, eu, ""},
		{"another region", []string{"eu"}, us, "residency: tenant acme may live only in [eu]; target pool-us is in us"},
		{"several regions, none matches", []string{"eu", "eu2"}, us, "residency: tenant acme may live only in [eu, eu2]; target pool-us is in us"},
		{"target without a region", []string{"eu"}, none, "residency: tenant acme may live only in [eu]; target pool-x has no region label (an unknown region is not allowed)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tn := catalog.Tenant{ID: "acme", Residency: tc.residency}
			err := CheckResidency(&tn, &tc.target)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var re *ResidencyError
			if !errors.Is(err, ErrResidency) || !errors.As(err, &re) || err.Error() != tc.want {
				t.Fatalf("err = %v, want %q (a *ResidencyError)", err, tc.want)
			}
			if re.Tenant != "acme" || re.Target != tc.target.ID || re.Region != tc.target.Region() {
				t.Fatalf("error fields %+v", re)
			}
			// Eligible (what accepting a named target checks) refuses the same way.
			if eerr := Eligible(tn, tc.target, Config{}); !errors.Is(eerr, ErrResidency) || eerr.Error() != tc.want {
				t.Fatalf("Eligible = %v", eerr)
			}
		})
	}
}

// TestChooseResidency covers placing a new tenant and a plan change (a new
// tier's target): Choose never picks a target outside the tenant's regions.
func TestChooseResidency(t *testing.T) {
	db := func(id, region string) catalog.Target {
		tg := pool(id, 0, "region", region)
		tg.Tier = catalog.TierDedicatedDB
		if region == "" {
			tg.Labels = nil
		}
		return tg
	}
	euFull := pool("pool-eu", 10*gib, "region", "eu")
	euCordoned := pool("pool-eu", 100*gib, "region", "eu")
	euCordoned.Cordoned = true
	cases := []struct {
		name      string
		tenant    TenantLoad
		tier      catalog.Tier
		targets   []TargetLoad
		want      string // chosen target; "" = none
		residency bool   // the error wraps ErrResidency
		msg       []string
	}{
		{name: "new tenant goes to its region though another is emptier",
			tenant: resident(tenant("acme", "pending", gib), "eu"), tier: catalog.TierShared,
			targets: []TargetLoad{{Target: pool("pool-eu", 100*gib, "region", "eu"), Bytes: 80 * gib}, {Target: pool("pool-us", 100*gib, "region", "us")}},
			want:    "pool-eu"},
		{name: "one of several regions",
			tenant: resident(tenant("acme", "pending", gib), "eu", "eu2"), tier: catalog.TierShared,
			targets: []TargetLoad{{Target: pool("pool-eu", 100*gib, "region", "eu"), Bytes: 80 * gib}, {Target: pool("pool-eu2", 100*gib, "region", "eu2")}, {Target: pool("pool-us", 100*gib, "region", "us")}},
			want:    "pool-eu2"},
		{name: "no target in its region",
			tenant: resident(tenant("acme", "pending", gib), "eu"), tier: catalog.TierShared,
			targets:   []TargetLoad{{Target: pool("pool-us", 100*gib, "region", "us")}, {Target: pool("pool-x", 100*gib)}},
			residency: true,
			msg:       []string{"pool-us: residency: tenant acme may live only in [eu]; target pool-us is in us", "pool-x: residency: tenant acme may live only in [eu]; target pool-x has no region label"}},
		{name: "its region is full: capacity, not residency",
			tenant: resident(tenant("acme", "pending", gib), "eu"), tier: catalog.TierShared,
			targets: []TargetLoad{{Target: euFull, Bytes: 10 * gib}, {Target: pool("pool-us", 100*gib, "region", "us")}},
			msg:     []string{"pool-eu: over capacity", "pool-us: residency: tenant acme may live only in [eu]; target pool-us is in us"}},
		{name: "its region is cordoned: cordon, not residency",
			tenant: resident(tenant("acme", "pending", gib), "eu"), tier: catalog.TierShared,
			targets: []TargetLoad{{Target: euCordoned}, {Target: pool("pool-us", 100*gib, "region", "us")}},
			msg:     []string{"pool-eu: cordoned", "pool-us: residency"}},
		{name: "plan change to dedicated-db stays in region",
			tenant: resident(tenant("acme", "pool-eu", gib), "eu"), tier: catalog.TierDedicatedDB,
			targets: []TargetLoad{{Target: pool("pool-eu", 0, "region", "eu")}, {Target: db("db-us", "us")}, {Target: db("db-eu", "eu"), Tenants: 50}},
			want:    "db-eu"},
		{name: "plan change with no dedicated-db in region",
			tenant: resident(tenant("acme", "pool-eu", gib), "eu"), tier: catalog.TierDedicatedDB,
			targets:   []TargetLoad{{Target: pool("pool-eu", 0, "region", "eu")}, {Target: db("db-us", "us")}},
			residency: true,
			msg:       []string{"db-us: residency: tenant acme may live only in [eu]; target db-us is in us"}},
		{name: "rebalancing one tenant: only its current target is in region",
			tenant: resident(tenant("acme", "pool-eu", gib), "eu"), tier: catalog.TierShared,
			targets:   []TargetLoad{{Target: pool("pool-eu", 0, "region", "eu")}, {Target: pool("pool-us", 0, "region", "us")}},
			residency: true,
			msg:       []string{"pool-us: residency"}},
		{name: "no constraint: anywhere",
			tenant: tenant("bolt", "pending", gib), tier: catalog.TierShared,
			targets: []TargetLoad{{Target: pool("pool-eu", 100*gib, "region", "eu"), Bytes: 80 * gib}, {Target: pool("pool-x", 100*gib)}},
			want:    "pool-x"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Choose(tc.tenant, tc.tier, tc.targets, Config{})
			if tc.want != "" {
				if err != nil || d.Target != tc.want {
					t.Fatalf("Choose = %q, %v; want %s", d.Target, err, tc.want)
				}
				return
			}
			if !errors.Is(err, ErrNoTarget) || d.Target != "" {
				t.Fatalf("Choose = %q, %v; want ErrNoTarget", d.Target, err)
			}
			if got := errors.Is(err, ErrResidency); got != tc.residency {
				t.Fatalf("errors.Is(ErrResidency) = %v, want %v: %v", got, tc.residency, err)
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not say %q", err, m)
				}
			}
		})
	}
}

func TestPlanDrainResidency(t *testing.T) {
	targets := []catalog.Target{
		pool("pool-eu1", 100*gib, "region", "eu"), pool("pool-eu2", 100*gib, "region", "eu"),
		pool("pool-us", 100*gib, "region", "us"),
	}
	cases := []struct {
		name      string
		drain     string
		tenants   []TenantLoad
		moves     map[string]string // tenant → destination
		unplaced  []string
		residency []string
	}{
		{name: "resident tenants go to the other eu pool though us is emptier", drain: "pool-eu1",
			tenants: []TenantLoad{resident(tenant("acme", "pool-eu1", 2*gib), "eu"), tenant("bolt", "pool-eu1", gib),
				tenant("fill", "pool-eu2", 60*gib)},
			moves: map[string]string{"acme": "pool-eu2", "bolt": "pool-us"}},
		{name: "resident tenant with no other target in region is refused, the rest planned", drain: "pool-us",
			tenants: []TenantLoad{resident(tenant("ussy", "pool-us", gib), "us"), tenant("bolt", "pool-us", gib)},
			moves:   map[string]string{"bolt": "pool-eu1"}, unplaced: []string{"ussy"}, residency: []string{"ussy"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlanDrain(tc.drain, loads(targets, tc.tenants), tc.tenants, Config{})
			got := map[string]string{}
			for _, m := range p.Moves {
				got[m.Tenant] = m.To
			}
			if len(got) != len(tc.moves) {
				t.Fatalf("moves %v, want %v", got, tc.moves)
			}
			for id, to := range tc.moves {
				if got[id] != to {
					t.Fatalf("moves %v, want %v", got, tc.moves)
				}
			}
			if len(tc.unplaced) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ue *UnplacedError
			if !errors.As(err, &ue) || !errors.Is(err, ErrNoTarget) || !errors.Is(err, ErrResidency) || strings.Join(ue.Residency, ",") != strings.Join(tc.residency, ",") {
				t.Fatalf("err = %v (%+v)", err, ue)
			}
			for _, id := range tc.unplaced {
				want := "residency: tenant " + id + " may live only in [us]; target pool-eu1 is in eu"
				if !strings.Contains(ue.Tenants[id], want) || !strings.Contains(err.Error(), want) {
					t.Fatalf("unplaced %s: %q does not say %q", id, ue.Tenants[id], want)
				}
			}
		})
	}
}

func TestPlanRebalanceResidency(t *testing.T) {
	euFull := func(n int, regions ...string) []TenantLoad {
		var ts []TenantLoad
		for i := range n {
			ts = append(ts, resident(tenant("r"+string(rune('a'+i)), "pool-eu1", gib), regions...))
		}
		return ts
	}
	cases := []struct {
		name    string
		targets []catalog.Target
		tenants []TenantLoad
		moved   map[string]string // resident tenants that may move, and where (others: none)
		skipped string            // what every refusal in Plan.Skipped says after "may live only in " ("" = none)
		nskip   int
	}{
		{name: "all resident in eu, the only other pool is us: nothing moves, skipped says why",
			targets: []catalog.Target{pool("pool-eu1", 10*gib, "region", "eu"), pool("pool-us", 10*gib, "region", "us")},
			tenants: euFull(8, "eu"),
			skipped: "[eu]; target pool-us is in us", nskip: 8},
		{name: "a pool without a region takes no resident tenant",
			targets: []catalog.Target{pool("pool-eu1", 10*gib, "region", "eu"), pool("pool-x", 10*gib)},
			tenants: euFull(8, "eu"),
			skipped: "[eu]; target pool-x has no region label (an unknown region is not allowed)", nskip: 8},
		{name: "a second eu pool takes what the band lets it; the rest is kept from us",
			targets: []catalog.Target{pool("pool-eu1", 10*gib, "region", "eu"), pool("pool-eu2", 10*gib, "region", "eu"), pool("pool-us", 10*gib, "region", "us")},
			tenants: euFull(9, "eu"),
			moved:   map[string]string{"*": "pool-eu2"}, skipped: "[eu]; target pool-us is in us", nskip: 5},
		{name: "resident in eu or us: us is fine",
			targets: []catalog.Target{pool("pool-eu1", 10*gib, "region", "eu"), pool("pool-us", 10*gib, "region", "us")},
			tenants: euFull(8, "eu", "us"),
			moved:   map[string]string{"*": "pool-us"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := RebalanceConfig{Metric: MetricBytes}
			tl := loads(tc.targets, tc.tenants)
			p, err := PlanRebalance(tl, tc.tenants, cfg)
			if err != nil {
				t.Fatal(err)
			}
			checkRebalance(t, tl, tc.tenants, cfg, p)
			for _, m := range p.Moves {
				if to, ok := tc.moved["*"]; !ok || to != m.To {
					t.Fatalf("move %+v not allowed (want %v)", m, tc.moved)
				}
			}
			if tc.moved != nil && len(p.Moves) == 0 {
				t.Fatalf("no moves: %s", p.Note)
			}
			if tc.skipped == "" {
				if len(p.Skipped) != 0 {
					t.Fatalf("skipped %v", p.Skipped)
				}
				return
			}
			if p.Converged || len(p.Skipped) != tc.nskip || !strings.Contains(p.Note, fmt.Sprintf("residency keeps %d tenant(s)", tc.nskip)) {
				t.Fatalf("converged %v, skipped %v, note %s", p.Converged, p.Skipped, p.Note)
			}
			for id, why := range p.Skipped {
				if moved := slices.ContainsFunc(p.Moves, func(m Move) bool { return m.Tenant == id }); moved || why != "residency: tenant "+id+" may live only in "+tc.skipped {
					t.Fatalf("skipped %s (moved %v): %q", id, moved, why)
				}
			}
		})
	}
}
