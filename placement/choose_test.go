package placement

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"testing/quick"

	"github.com/switchyard/switchyard/catalog"
)

func TestChoose(t *testing.T) {
	tl := func(tg catalog.Target, n int, b int64, r float64) TargetLoad {
		return TargetLoad{Target: tg, Tenants: n, Bytes: b, RPS: r}
	}
	cluster := func(id string) catalog.Target {
		return catalog.Target{ID: id, Tier: catalog.TierDedicatedCluster, Service: "app", DSN: "postgres://c/x"}
	}
	capd := func(tg catalog.Target, c catalog.Capacity) catalog.Target { tg.Capacity = c; return tg }
	cordon := func(tg catalog.Target) catalog.Target { tg.Cordoned = true; return tg }
	small := tenant("t", "", 10*gib)
	eu := tenant("t", "", 10*gib, "region", "eu")

	cases := []struct {
		name    string
		tenant  TenantLoad
		tier    catalog.Tier
		targets []TargetLoad
		cfg     Config
		want    string   // chosen target
		err     error    // wanted error
		reasons []string // substrings of the reason or error
		reject  map[string]string
	}{
		{name: "least loaded wins", tenant: small, tier: catalog.TierShared,
			targets: []TargetLoad{tl(pool("a", 100*gib), 1, 50*gib, 0), tl(pool("b", 100*gib), 1, 20*gib, 0), tl(pool("c", 100*gib), 1, 30*gib, 0)},
			want:    "b", reasons: []string{"least utilised of 3 eligible shared", "0.300", "next c at 0.400"}},
		{name: "utilisation after placement counts capacity", tenant: small, tier: catalog.TierShared,
			targets: []TargetLoad{tl(pool("a", 20*gib), 0, 0, 0), tl(pool("b", 100*gib), 0, 30*gib, 0)},
			want:    "b"},
		{name: "max of the fractions", tenant: small, tier: catalog.TierShared,
			targets: []TargetLoad{
				tl(capd(pool("a", 0), catalog.Capacity{Bytes: 100 * gib, RPS: 100}), 0, 0, 90),
				tl(capd(pool("b", 0), catalog.Capacity{Bytes: 100 * gib, RPS: 100}), 0, 50*gib, 0)},
			want: "b"},
		{name: "tie broken by id", tenant: small, tier: catalog.TierShared,
			targets: []TargetLoad{tl(pool("b", 100*gib), 2, 20*gib, 0), tl(pool("a", 100*gib), 2, 20*gib, 0)},
			want:    "a", reasons: []string{"tie broken by id"}},
		{name: "unlimited targets fill by count", tenant: small, tier: catalog.TierShared,
			targets: []TargetLoad{tl(pool("a", 0), 3, 0, 0), tl(pool("b", 0), 2, 90*gib, 0), tl(pool("c", 0), 3, 0, 0)},
			want:    "b", reasons: []string{"tie broken by fewer tenants"}},
		{name: "tier filter", tenant: small, tier: catalog.TierDedicatedCluster,
			targets: []TargetLoad{tl(pool("a", 0), 0, 0, 0), tl(cluster("c1"), 0, 0, 0)},
			want:    "c1"},
		{name: "dedicated cluster holds one", tenant: small, tier: catalog.TierDedicatedCluster,
			targets: []TargetLoad{tl(cluster("c1"), 1, 0, 0), tl(cluster("c2"), 0, 0, 0)},
			want:    "c2", reject: map[string]string{"c1": "holds at most one"}},
		{name: "region constraint", tenant: eu, tier: catalog.TierShared,
			targets: []TargetLoad{tl(pool("us", 100*gib, "region", "us"), 0, 0, 0), tl(pool("eu", 100*gib, "region", "eu"), 5, 80*gib, 0)},
			want:    "eu", reject: map[string]string{"us": "tenant requires region=eu, target has region=us"}, reasons: []string{"1 rejected"}},
		{name: "cordoned skipped", tenant: small, tier: catalog.TierShared,
			targets: []TargetLoad{tl(cordon(pool("a", 100*gib)), 0, 0, 0), tl(pool("b", 100*gib), 0, 50*gib, 0)},
			want:    "b", reject: map[string]string{"a": "cordoned"}},
		{name: "headroom rejects", tenant: small, tier: catalog.TierShared, cfg: Config{Headroom: Headroom{0.1}},
			targets: []TargetLoad{tl(pool("a", 100*gib), 0, 85*gib, 0), tl(pool("b", 100*gib), 0, 80*gib, 0)},
			want:    "b", reject: map[string]string{"a": "limit 90.0 GiB"}},
		{name: "current target excluded", tenant: tenant("t", "a", 10*gib), tier: catalog.TierShared,
			targets: []TargetLoad{tl(pool("a", 100*gib), 1, 10*gib, 0), tl(pool("b", 100*gib), 0, 50*gib, 0)},
			want:    "b", reject: map[string]string{"a": "current target"}},
		{name: "none fits", tenant: eu, tier: catalog.TierShared, cfg: Config{Headroom: Headroom{0.1}},
			targets: []TargetLoad{
				tl(cordon(pool("a", 100*gib, "region", "eu")), 0, 0, 0),
				tl(pool("b", 100*gib, "region", "us"), 0, 0, 0),
				tl(capd(pool("c", 0, "region", "eu"), catalog.Capacity{Tenants: 3}), 3, 0, 0),
				tl(pool("d", 100*gib, "region", "eu"), 0, 85*gib, 0),
				tl(cluster("x"), 0, 0, 0)},
			err: ErrNoTarget, reasons: []string{"fits none of 4 shared target(s)", "a: cordoned", "b: label constraint not met: tenant requires region=eu, target has region=us",
				"c: over capacity: tenants 3+1 > limit 2 (capacity 3 less 10% headroom)", "d: over capacity: bytes 85.0 GiB+10.0 GiB > limit 90.0 GiB"}},
		{name: "no targets of tier", tenant: small, tier: catalog.TierDedicatedDB,
			targets: []TargetLoad{tl(pool("a", 0), 0, 0, 0)}, err: ErrNoTarget, reasons: []string{"no dedicated-db targets among 1"}},
		{name: "invalid tier", tenant: small, tier: "moon", err: ErrInvalidInput},
		{name: "invalid headroom", tenant: small, tier: catalog.TierShared, cfg: Config{Headroom: Headroom{1}}, err: ErrInvalidConfig},
		{name: "negative tenant load", tenant: tenant("t", "", -1), tier: catalog.TierShared, err: ErrInvalidInput},
		{name: "negative target load", tenant: small, tier: catalog.TierShared, targets: []TargetLoad{tl(pool("a", 0), -1, 0, 0)}, err: ErrInvalidInput},
		{name: "duplicate target", tenant: small, tier: catalog.TierShared, targets: []TargetLoad{tl(pool("a", 0), 0, 0, 0), tl(pool("a", 0), 0, 0, 0)}, err: ErrInvalidInput},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := Choose(c.tenant, c.tier, c.targets, c.cfg)
			if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			if d.Target != c.want {
				t.Fatalf("target = %q, want %q (%s)", d.Target, c.want, d.Reason)
			}
			text := d.Reason
			if err != nil {
				text = err.Error()
			} else if d.Reason == "" {
				t.Fatal("no reason")
			}
			for _, s := range c.reasons {
				if !strings.Contains(text, s) {
					t.Errorf("%q does not say %q", text, s)
				}
			}
			for id, s := range c.reject {
				if !strings.Contains(d.Rejected[id], s) {
					t.Errorf("Rejected[%s] = %q, want it to say %q", id, d.Rejected[id], s)
				}
			}
		})
	}
}

// randomTargets makes a small random fleet of mixed tiers for Choose.
func randomTargets(r *rand.Rand, n int) []TargetLoad {
	regions := []string{"eu", "us"}
	out := make([]TargetLoad, n)
	for i := range out {
		tg := pool(fmt.Sprintf("t%02d", i), int64(r.IntN(4))*100*gib, "region", regions[r.IntN(2)])
		tg.Tier = catalog.Tiers[r.IntN(3)]
		tg.Cordoned = r.IntN(8) == 0
		if r.IntN(2) == 0 {
			tg.Capacity.Tenants = r.IntN(20)
		}
		if r.IntN(2) == 0 {
			tg.Capacity.RPS = float64(r.IntN(1000))
		}
		out[i] = TargetLoad{Target: tg, Tenants: r.IntN(20), Bytes: r.Int64N(300 * gib), RPS: float64(r.IntN(1000))}
	}
	return out
}

func randomTenant(r *rand.Rand) TenantLoad {
	t := tenant("x", "", r.Int64N(50*gib))
	t.RPS = float64(r.IntN(100))
	if r.IntN(2) == 0 {
		t.Tenant.Labels = kv("region", []string{"eu", "us", "ap"}[r.IntN(3)])
	}
	if r.IntN(3) == 0 { // resident in one or two regions
		t.Tenant.Residency = []string{[]string{"eu", "us", "ap"}[r.IntN(3)]}
		if r.IntN(2) == 0 {
			t.Tenant.Residency = append(t.Tenant.Residency, "eu2")
		}
	}
	return t
}

// Property: Choose picks an eligible, fitting target of the tier; no other
// such target has a strictly lower utilisation after placement; every other
// same-tier target is in Rejected or fits; the answer ignores target order.
func TestChooseProperties(t *testing.T) {
	prop := func(seed uint64) bool {
		r := rand.New(rand.NewPCG(seed, 7))
		targets := randomTargets(r, 1+r.IntN(12))
		ten := randomTenant(r)
		tier := catalog.Tiers[r.IntN(3)]
		cfg := Config{Headroom: Headroom{float64(r.IntN(3)) / 10}}
		d, err := Choose(ten, tier, targets, cfg)
		sh := append([]TargetLoad(nil), targets...)
		r.Shuffle(len(sh), func(i, j int) { sh[i], sh[j] = sh[j], sh[i] })
		d2, err2 := Choose(ten, tier, sh, cfg)
		if !reflect.DeepEqual(d, d2) || (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Logf("seed %d: order changed the decision: %+v vs %+v", seed, d, d2)
			return false
		}
		var chosen *TargetLoad
		sameTier := 0
		for i := range targets {
			tg := &targets[i]
			if tg.Target.Tier != tier {
				if _, ok := d.Rejected[tg.Target.ID]; ok {
					return false
				}
				continue
			}
			sameTier++
			ok := Eligible(ten.Tenant, tg.Target, cfg) == nil && Fits(ten, *tg, cfg.Headroom) == nil
			if _, rej := d.Rejected[tg.Target.ID]; rej == ok {
				t.Logf("seed %d: %s eligible=%v but rejected=%v", seed, tg.Target.ID, ok, rej)
				return false
			}
			if tg.Target.ID == d.Target {
				chosen = tg
			}
		}
		if err != nil {
			return errors.Is(err, ErrNoTarget) && len(d.Rejected) == sameTier && d.Target == ""
		}
		if chosen == nil {
			return false
		}
		after := func(tg *TargetLoad) float64 {
			return utilisation(tg.Target.Capacity, tg.Tenants+1, tg.Bytes+ten.Bytes, tg.RPS+ten.RPS)
		}
		for i := range targets {
			tg := &targets[i]
			if _, rej := d.Rejected[tg.Target.ID]; tg.Target.Tier == tier && !rej && after(tg) < after(chosen) {
				t.Logf("seed %d: %s (%v) beats chosen %s (%v)", seed, tg.Target.ID, after(tg), d.Target, after(chosen))
				return false
			}
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 2000, Rand: nil}); err != nil {
		t.Fatal(err)
	}
}

// FuzzChoose builds a fleet from fuzz bytes and checks Choose never panics,
// and that it either picks a fitting, eligible target or explains every
// same-tier rejection under ErrNoTarget.
func FuzzChoose(f *testing.F) {
	f.Add(uint64(1), []byte{3, 10, 200, 7, 1, 0, 9})
	f.Add(uint64(42), []byte{})
	f.Add(uint64(0), []byte{255, 255, 255, 255, 0, 0, 0, 0, 128})
	f.Fuzz(func(t *testing.T, seed uint64, data []byte) {
		at := func(i int) int {
			if len(data) == 0 {
				return 0
			}
			return int(data[i%len(data)])
		}
		n := at(0) % 16
		var targets []TargetLoad
		for i := range n {
			b := at(1 + i*5)
			tg := pool(fmt.Sprintf("p%d", i), int64(at(2+i*5))*gib, "region", []string{"eu", "us"}[b&1])
			tg.Tier = catalog.Tiers[(b>>1)%3]
			tg.Cordoned = b&8 != 0
			tg.Capacity.Tenants = at(3+i*5) % 4
			tg.Capacity.RPS = float64(at(4 + i*5))
			targets = append(targets, TargetLoad{Target: tg, Tenants: at(5+i*5) % 5, Bytes: int64(at(i)) * gib / 2, RPS: float64(b)})
		}
		r := rand.New(rand.NewPCG(seed, seed))
		ten := randomTenant(r)
		tier := catalog.Tiers[at(7)%3]
		cfg := Config{Headroom: Headroom{float64(at(9)%10) / 10}}
		d, err := Choose(ten, tier, targets, cfg)
		if err != nil {
			if !errors.Is(err, ErrNoTarget) || d.Target != "" {
				t.Fatalf("unexpected error %v", err)
			}
			for i := range targets {
				if targets[i].Target.Tier == tier && d.Rejected[targets[i].Target.ID] == "" {
					t.Fatalf("%s not explained: %v", targets[i].Target.ID, err)
				}
			}
			return
		}
		for i := range targets {
			tg := targets[i]
			if tg.Target.ID == d.Target {
				if tg.Target.Tier != tier || Eligible(ten.Tenant, tg.Target, cfg) != nil || Fits(ten, tg, cfg.Headroom) != nil {
					t.Fatalf("chose unfit %+v", tg)
				}
				return
			}
		}
		t.Fatalf("chose unknown target %q", d.Target)
	})
}
