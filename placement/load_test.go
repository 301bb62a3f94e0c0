package placement

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/catalog"
)

func TestHeadroomLimits(t *testing.T) {
	cases := []struct {
		name string
		f    float64
		c    catalog.Capacity
		want limits
	}{
		{"unlimited", 0.1, catalog.Capacity{}, limits{math.MaxInt, math.MaxInt64, math.Inf(1)}},
		{"no headroom", 0, catalog.Capacity{Tenants: 10, Bytes: 100, RPS: 50}, limits{10, 100, 50}},
		{"ten percent", 0.1, catalog.Capacity{Tenants: 10, Bytes: 100, RPS: 50}, limits{9, 90, 45}},
		{"one tenant stays one", 0.5, catalog.Capacity{Tenants: 1}, limits{1, math.MaxInt64, math.Inf(1)}},
		{"rounds down", 0.25, catalog.Capacity{Tenants: 7, Bytes: 7}, limits{5, 5, math.Inf(1)}},
	}
	for _, c := range cases {
		if got := (Headroom{c.f}).limits(c.c); got != c.want {
			t.Errorf("%s: limits = %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestFits(t *testing.T) {
	target := func(tier catalog.Tier, n int, b int64, r float64, c catalog.Capacity) TargetLoad {
		return TargetLoad{Target: catalog.Target{ID: "x", Tier: tier, Capacity: c}, Tenants: n, Bytes: b, RPS: r}
	}
	capAll := catalog.Capacity{Tenants: 10, Bytes: 100 * gib, RPS: 1000}
	ten := TenantLoad{Bytes: 10 * gib, RPS: 100}
	cases := []struct {
		name   string
		target TargetLoad
		h      float64
		msg    string // "" = fits
	}{
		{"empty", target(catalog.TierShared, 0, 0, 0, capAll), 0.1, ""},
		{"unlimited", target(catalog.TierShared, 1e6, 1<<50, 1e9, catalog.Capacity{}), 0.1, ""},
		{"exactly at limit", target(catalog.TierShared, 8, 80*gib, 800, capAll), 0.1, ""},
		{"tenants", target(catalog.TierShared, 9, 0, 0, capAll), 0.1, "tenants 9+1 > limit 9 (capacity 10 less 10% headroom)"},
		{"bytes", target(catalog.TierShared, 0, 81*gib, 0, capAll), 0.1, "bytes 81.0 GiB+10.0 GiB > limit 90.0 GiB"},
		{"bytes no headroom", target(catalog.TierShared, 0, 91*gib, 0, capAll), 0, "bytes 91.0 GiB+10.0 GiB > capacity 100.0 GiB"},
		{"rps", target(catalog.TierShared, 0, 0, 801, capAll), 0.1, "rps 801+100 > limit 900"},
		{"all three", target(catalog.TierShared, 10, 100*gib, 1000, capAll), 0, "tenants 10+1"},
		{"dedicated cluster empty", target(catalog.TierDedicatedCluster, 0, 0, 0, catalog.Capacity{}), 0.1, ""},
		{"dedicated cluster taken", target(catalog.TierDedicatedCluster, 1, 0, 0, catalog.Capacity{}), 0, "holds at most one"},
	}
	for _, c := range cases {
		err := Fits(ten, c.target, Headroom{c.h})
		if c.msg == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrCapacity) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err = %v, want ErrCapacity saying %q", c.name, err, c.msg)
		}
	}
	if err := Fits(ten, target(catalog.TierShared, 0, 0, 0, capAll), Headroom{2}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("bad headroom: %v", err)
	}
}

func TestUtilisation(t *testing.T) {
	cases := []struct {
		l    TargetLoad
		want float64
	}{
		{TargetLoad{}, 0},
		{TargetLoad{Tenants: 5, Bytes: 10, RPS: 3}, 0},
		{TargetLoad{Target: catalog.Target{Capacity: catalog.Capacity{Tenants: 10, Bytes: 100, RPS: 10}}, Tenants: 5, Bytes: 20, RPS: 1}, 0.5},
		{TargetLoad{Target: catalog.Target{Capacity: catalog.Capacity{Bytes: 100, RPS: 10}}, Tenants: 500, Bytes: 20, RPS: 9}, 0.9},
	}
	for i, c := range cases {
		if got := c.l.Utilisation(); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("%d: utilisation %v, want %v", i, got, c.want)
		}
	}
}

func TestApplyPlan(t *testing.T) {
	targets := []catalog.Target{pool("a", 100), pool("b", 100)}
	tenants := []TenantLoad{tenant("t1", "a", 10), tenant("t2", "a", 20)}
	tl := loads(targets, tenants)
	nt, nn, err := ApplyPlan(tl, tenants, Plan{Moves: []Move{{Tenant: "t2", From: "a", To: "b", Bytes: 20}}})
	if err != nil {
		t.Fatal(err)
	}
	if nt[0].Bytes != 10 || nt[1].Bytes != 20 || nt[0].Tenants != 1 || nt[1].Tenants != 1 || nn[1].Tenant.Target != "b" {
		t.Fatalf("applied: %+v %+v", nt, nn)
	}
	if tl[0].Bytes != 30 || tenants[1].Tenant.Target != "a" {
		t.Fatal("ApplyPlan changed its inputs")
	}
	for name, m := range map[string]Move{
		"unknown tenant": {Tenant: "zz", From: "a", To: "b"},
		"unknown target": {Tenant: "t1", From: "a", To: "zz"},
		"wrong from":     {Tenant: "t1", From: "b", To: "a"},
	} {
		if _, _, err := ApplyPlan(tl, tenants, Plan{Moves: []Move{m}}); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 * gib / 2: "1.5 GiB", math.MaxInt64: "unlimited"} {
		if got := formatBytes(in); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", in, got, want)
		}
	}
}
