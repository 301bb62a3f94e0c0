package integration

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/migrator"
)

// phaseGate holds a tenant's move before the step of one phase until the
// test releases it.
type phaseGate struct {
	mu    sync.Mutex
	gates map[string]*gate // tenant → its gate
}

type gate struct {
	phase            migrator.Phase
	reached, release chan struct{}
	once             sync.Once
}

// at arms a gate for tenant at phase.
func (g *phaseGate) at(tenant string, phase migrator.Phase) *gate {
	g.mu.Lock()
	defer g.mu.Unlock()
	gt := &gate{phase: phase, reached: make(chan struct{}), release: make(chan struct{})}
	g.gates[tenant] = gt
	return gt
}

// hook is the migrator's BeforeStep: it holds the move once, at its phase.
func (g *phaseGate) hook(m *migrator.Move) error {
	g.mu.Lock()
	gt := g.gates[m.Tenant]
	g.mu.Unlock()
	if gt == nil || m.Phase != gt.phase {
		return nil
	}
	held := false
	gt.once.Do(func() { held = true; close(gt.reached) })
	if held {
		select {
		case <-gt.release:
		case <-time.After(2 * time.Minute):
		}
	}
	return nil
}

// Issue 8's bad input: an abort, a retry or a plan change arriving while a
// move is in each phase (held there by a hook in the controller's
// migrator) gets a clear answer — a status and a JSON body with an error
// code — and leaves the tenant served from one place with its data whole.
// The cleanup phase is a move retained with its source copy waiting for
// the cleanup.
func TestControllerActionsDuringEachPhase(t *testing.T) {
	s := newMoveStack(t)
	g := &phaseGate{gates: map[string]*gate{}}
	_, base, _ := s.startController(func(c *controller.Config) {
		c.MoveHooks = &migrator.Hooks{BeforeStep: g.hook}
		c.MaxConcurrentMoves = 24
		c.MoveChunkRows = 50
	})
	type action struct {
		name   string
		do     func(tenant, move string) (int, map[string]any)
		status map[migrator.Phase]int // by phase; missing: the move's own phases' default
		code   map[migrator.Phase]string
	}
	mid := []migrator.Phase{migrator.PhasePreflight, migrator.PhaseCopy, migrator.PhaseCatchUp, migrator.PhaseSwitch}
	every := func(during, retained int) map[migrator.Phase]int {
		out := map[migrator.Phase]int{migrator.PhaseRetained: retained}
		for _, p := range mid {
			out[p] = during
		}
		return out
	}
	codes := func(during, retained string) map[migrator.Phase]string {
		out := map[migrator.Phase]string{migrator.PhaseRetained: retained}
		for _, p := range mid {
			out[p] = during
		}
		return out
	}
	plan := func(p string) func(tenant, move string) (int, map[string]any) {
		return func(tenant, _ string) (int, map[string]any) {
			return call(t, "PUT", base+"/v1/tenants/"+tenant+"/plan", tokOperator, map[string]any{"plan": p}, nil)
		}
	}
	actions := []action{
		{"abort", func(_, move string) (int, map[string]any) {
			return call(t, "POST", base+"/v1/moves/"+move+"/abort", tokOperator, nil, nil)
		}, every(http.StatusAccepted, http.StatusConflict), codes("", "too_late")},
		{"retry", func(_, move string) (int, map[string]any) {
			return call(t, "POST", base+"/v1/moves/"+move+"/retry", tokOperator, nil, nil)
		}, every(http.StatusConflict, http.StatusConflict), codes("conflict", "conflict")},
		{"plan change back", plan("free"), every(http.StatusConflict, http.StatusAccepted), codes("conflict", "")},
		{"plan change to where it goes", plan("pro"), every(http.StatusAccepted, http.StatusOK), codes("", "")},
	}
	phases := append(append([]migrator.Phase{}, mid...), migrator.PhaseRetained)
	type run struct {
		tenant, move string
		phase        migrator.Phase
		act          action
		gt           *gate
	}
	var runs []*run
	for _, ph := range phases {
		for _, a := range actions {
			tenant := fmt.Sprintf("ph-%s-%d", ph, len(runs))
			s.seedTenantBulk(tenant, 300)
			r := &run{tenant: tenant, phase: ph, act: a, gt: g.at(tenant, ph)}
			st, body := call(t, "PUT", base+"/v1/tenants/"+tenant+"/plan", tokOperator, map[string]any{"plan": "pro"}, nil)
			if st != http.StatusAccepted {
				t.Fatalf("%s: upgrade: %d %v", tenant, st, body)
			}
			r.move = body["move"].(map[string]any)["id"].(string)
			runs = append(runs, r)
		}
	}
	for _, r := range runs {
		t.Run(fmt.Sprintf("%s during %s", r.act.name, r.phase), func(t *testing.T) {
			select {
			case <-r.gt.reached:
			case <-time.After(90 * time.Second):
				t.Fatalf("the move never reached %s", r.phase)
			}
			st, body := r.act.do(r.tenant, r.move)
			t.Logf("%s during %s: %d %v", r.act.name, r.phase, st, body)
			if st != r.act.status[r.phase] {
				t.Errorf("status %d, want %d: %v", st, r.act.status[r.phase], body)
			}
			if want := r.act.code[r.phase]; want != "" && (body["error"] != want || body["message"] == nil || body["message"] == "") {
				t.Errorf("body %v, want error %q with a message", body, want)
			}
			close(r.gt.release)
			s.settled(t, base, r.tenant)
			s.servedFromOnePlace(t, r.tenant, 300)
		})
	}
}

// settled waits until the tenant has no move under way and is active.
func (s *moveStack) settled(t *testing.T, base, tenant string) {
	t.Helper()
	waitFor(t, 90*time.Second, tenant+" settled", func() bool {
		_, body := call(t, "GET", base+"/v1/moves", tokOperator, nil, nil)
		moves, _ := body["moves"].([]any)
		for _, x := range moves {
			m, _ := x.(map[string]any)
			if m["tenant"] != tenant {
				continue
			}
			switch migrator.Phase(fmt.Sprint(m["phase"])) {
			case migrator.PhaseRetained, migrator.PhaseDone, migrator.PhaseAborted:
			default:
				return false
			}
		}
		tn, err := s.store.GetTenant(testContext(t), tenant)
		return err == nil && tn.State == catalog.StateActive
	})
}

// servedFromOnePlace checks the tenant's n orders are whole where the
// catalog places it, and that the other place either refuses its writes
// (fenced) or holds none of its rows.
func (s *moveStack) servedFromOnePlace(t *testing.T, tenant string, n int) {
	t.Helper()
	tn, err := s.store.GetTenant(testContext(t), tenant)
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"pool-1", "db-1"} {
		tg, _, err := s.store.GetTarget(testContext(t), target)
		if err != nil {
			t.Fatal(err)
		}
		dsn, err := tg.DSNFor(tenant)
		if err != nil {
			t.Fatal(err)
		}
		db, err := sqlx.Connect("postgres", dsn)
		if err != nil {
			if target == tn.Target {
				t.Fatalf("%s's home %s: %v", tenant, target, err)
			}
			continue // no database there: nothing of the tenant's
		}
		var rows, sum int
		if err := db.QueryRow(`SELECT count(*), coalesce(sum(quantity), 0) FROM orders WHERE tenant_id = $1`, tenant).Scan(&rows, &sum); err != nil {
			rows = 0
		}
		if target == tn.Target {
			want := 0
			for g := 1; g <= n; g++ {
				want += g%100 + 1
			}
			if rows != n || sum != want {
				t.Errorf("%s on %s: %d orders (sum %d), want %d (sum %d)", tenant, target, rows, sum, n, want)
			}
		} else if rows > 0 {
			if _, err := db.Exec(`INSERT INTO orders (tenant_id, item, quantity, price_cents) VALUES ($1, 'direct', 1, 1)`, tenant); err == nil {
				t.Errorf("%s: %s holds %d of its rows and takes writes while the catalog says %s", tenant, target, rows, tn.Target)
			}
		}
		db.Close()
	}
}
