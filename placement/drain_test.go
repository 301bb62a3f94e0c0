package placement

import (
	"errors"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/catalog"
)

func TestPlanDrain(t *testing.T) {
	cordoned := func(tg catalog.Target) catalog.Target { tg.Cordoned = true; return tg }
	cluster := func(id string) catalog.Target {
		return catalog.Target{ID: id, Tier: catalog.TierDedicatedCluster, Service: "app", DSN: "postgres://c/x"}
	}
	type fleet struct {
		targets []catalog.Target
		tenants []TenantLoad
	}
	cases := []struct {
		name      string
		fleet     fleet
		drain     string
		cfg       Config
		moves     []string // "tenant>to"
		unplaced  []string
		err       error
		note      []string
		converged bool
	}{
		{name: "spreads largest first",
			fleet: fleet{[]catalog.Target{cordoned(pool("a", 100)), pool("b", 100), pool("c", 100)},
				[]TenantLoad{tenant("s", "a", 10), tenant("l", "a", 40), tenant("m", "a", 20), tenant("x", "b", 15)}},
			drain: "a", moves: []string{"l>c", "m>b", "s>b"}, converged: true,
			note: []string{"drain a (shared): 3 tenant(s); 3 move(s) totalling 70 B to 2 target(s)"}},
		{name: "warns when not cordoned",
			fleet: fleet{[]catalog.Target{pool("a", 100), pool("b", 100)}, []TenantLoad{tenant("t", "a", 10)}},
			drain: "a", moves: []string{"t>b"}, converged: true, note: []string{"a is not cordoned"}},
		{name: "respects labels",
			fleet: fleet{[]catalog.Target{cordoned(pool("a", 100, "region", "eu")), pool("b", 100, "region", "us"), pool("c", 100, "region", "eu")},
				[]TenantLoad{tenant("e", "a", 10, "region", "eu"), tenant("n", "a", 5)}},
			drain: "a", moves: []string{"e>c", "n>b"}, converged: true},
		{name: "unplaced named",
			fleet: fleet{[]catalog.Target{cordoned(pool("a", 100, "region", "eu")), pool("b", 30, "region", "us")},
				[]TenantLoad{tenant("e", "a", 10, "region", "eu"), tenant("big", "a", 40), tenant("ok", "a", 20)}},
			drain: "a", moves: []string{"ok>b"}, unplaced: []string{"big", "e"}, err: ErrNoTarget,
			note: []string{"not converged: 2 tenant(s) fit nowhere: big, e"}},
		{name: "dedicated clusters take one each",
			fleet: fleet{[]catalog.Target{cluster("c1"), cluster("c2"), cluster("c3")},
				[]TenantLoad{tenant("ent", "c1", 500), tenant("other", "c2", 1)}},
			drain: "c1", moves: []string{"ent>c3"}, converged: true},
		{name: "no other target of the tier",
			fleet: fleet{[]catalog.Target{cluster("c1"), pool("p", 0)}, []TenantLoad{tenant("ent", "c1", 500)}},
			drain: "c1", unplaced: []string{"ent"}, err: ErrNoTarget},
		{name: "empty target", fleet: fleet{[]catalog.Target{pool("a", 10), pool("b", 10)}, nil}, drain: "a", converged: true},
		{name: "unknown target", fleet: fleet{[]catalog.Target{pool("a", 10)}, nil}, drain: "zz", err: ErrUnknownTarget},
		{name: "bad config", fleet: fleet{[]catalog.Target{pool("a", 10)}, nil}, drain: "a", cfg: Config{Headroom: Headroom{-1}}, err: ErrInvalidConfig},
		{name: "duplicate tenant", fleet: fleet{[]catalog.Target{pool("a", 10), pool("b", 10)}, []TenantLoad{tenant("x", "a", 1), tenant("x", "a", 2)}}, drain: "a", err: ErrInvalidInput},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			targets := loads(c.fleet.targets, c.fleet.tenants)
			p, err := PlanDrain(c.drain, targets, c.fleet.tenants, c.cfg)
			if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			var u *UnplacedError
			if errors.As(err, &u) {
				for _, id := range c.unplaced {
					if u.Tenants[id] == "" || !strings.Contains(err.Error(), id+" (") {
						t.Errorf("unplaced %s not named with a reason: %v", id, err)
					}
				}
				if len(u.Tenants) != len(c.unplaced) {
					t.Errorf("unplaced %v, want %v", u.Tenants, c.unplaced)
				}
			} else if len(c.unplaced) > 0 {
				t.Fatalf("want UnplacedError, got %v", err)
			}
			var got []string
			for _, m := range p.Moves {
				got = append(got, m.Tenant+">"+m.To)
				if !strings.HasPrefix(m.Reason, "drain "+c.drain+": "+m.Tenant+" → "+m.To) {
					t.Errorf("reason %q", m.Reason)
				}
			}
			if strings.Join(got, " ") != strings.Join(c.moves, " ") {
				t.Errorf("moves %v, want %v", got, c.moves)
			}
			if p.Converged != c.converged {
				t.Errorf("converged %v, want %v", p.Converged, c.converged)
			}
			for _, s := range c.note {
				if !strings.Contains(p.Note, s) {
					t.Errorf("note %q does not say %q", p.Note, s)
				}
			}
			if err == nil || u != nil {
				if _, ok := p.After[c.drain]; !ok {
					t.Errorf("After lacks the drained target: %v", p.After)
				}
			}
		})
	}
}

func TestPlanDrainUnplacedReasons(t *testing.T) {
	targets := loads([]catalog.Target{pool("a", 100, "region", "eu"), pool("b", 100, "region", "us"), cordonedPool("c")},
		[]TenantLoad{tenant("e", "a", 10, "region", "eu")})
	_, err := PlanDrain("a", targets, []TenantLoad{tenant("e", "a", 10, "region", "eu")}, Config{})
	want := "no target fits: draining a: 1 tenant(s) fit nowhere: e (b: label constraint not met: tenant requires region=eu, target has region=us; c: cordoned: takes no new tenants)"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant  %s", err, want)
	}
}

func cordonedPool(id string) catalog.Target {
	p := pool(id, 100)
	p.Cordoned = true
	return p
}
