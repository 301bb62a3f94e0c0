package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/migrator"
)

// phaseGate stops one tenant's move, once, when it is about to work on a
// chosen phase, until the test releases it (a migrator.Hooks.BeforePhase).
type phaseGate struct {
	mu      sync.Mutex
	tenant  string
	phase   migrator.Phase
	reached chan struct{}
	release chan struct{}
}

// arm makes the next move of tenant stop before phase.
func (g *phaseGate) arm(tenant string, phase migrator.Phase) (reached, release chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.tenant, g.phase = tenant, phase
	g.reached, g.release = make(chan struct{}), make(chan struct{})
	return g.reached, g.release
}

func (g *phaseGate) beforePhase(m *migrator.Move) error {
	g.mu.Lock()
	if m.Tenant != g.tenant || m.Phase != g.phase || g.reached == nil {
		g.mu.Unlock()
		return nil
	}
	reached, release := g.reached, g.release
	g.reached = nil // once
	g.mu.Unlock()
	close(reached)
	select {
	case <-release:
	case <-time.After(time.Minute):
	}
	return nil
}

// TestMoveInterruptedInEveryPhase: while a plan change's move is stopped in
// each phase in turn (writers keep writing), a second plan change, a retry
// and an abort arrive through the API. Each gets a clear answer (status and
// JSON code); an abort before the switch leaves the tenant active on its
// source, after it is refused (and a plan change then starts the next
// move); either way the tenant is served from one place and every
// acknowledged write is there.
func TestMoveInterruptedInEveryPhase(t *testing.T) {
	s := newMoveStack(t)
	gate := &phaseGate{}
	inPause := &pauseGate{tenant: "ph-inpause", reached: make(chan struct{}), hold: 300 * time.Millisecond}
	_, base, _ := s.startController(func(c *controller.Config) {
		c.MoveHooks = &migrator.Hooks{BeforePhase: gate.beforePhase, AfterFence: inPause.afterFence}
	})
	t.Run("inside the pause", func(t *testing.T) { abortInsideThePause(t, s, base, inPause) })
	for _, phase := range []migrator.Phase{migrator.PhasePreflight, migrator.PhaseProvision, migrator.PhaseCapture, migrator.PhaseCopy,
		migrator.PhaseCatchUp, migrator.PhaseSwitch, migrator.PhaseRetained} {
		t.Run(string(phase), func(t *testing.T) {
			tenant := "ph-" + strings.ReplaceAll(string(phase), "-", "")
			s.seedTenant(tenant, "free", catalog.TierShared, "pool-1", 150)
			reached, release := gate.arm(tenant, phase)
			var once sync.Once
			free := func() { once.Do(func() { close(release) }) }
			defer free()                                         // a failed subtest must not keep the leader's move stopped
			storm := s.startStorm(tenant, 2, 5*time.Millisecond) // storms are other tests' job
			defer storm.halt()
			id := startPlanMove(t, base, tenant, "pro")
			select {
			case <-reached:
			case <-time.After(45 * time.Second):
				_, out := call(t, "GET", base+"/v1/moves/"+id, tokViewer, nil, nil)
				t.Fatalf("the move never reached %s: %v", phase, out)
			}
			next := interrupt(t, base, tenant, id, phase)
			free()
			after := settleMove(t, base, id, phase == migrator.PhaseRetained)
			wantTarget := "pool-1"
			if next != "" { // the plan change after the switch moves it on
				settleMove(t, base, next, true)
				wantTarget = "cl-1"
			}
			storm.halt()
			if f := storm.failures.Load(); f != 0 {
				t.Fatalf("%d of %d requests failed: %v", f, storm.requests.Load(), storm.failLog)
			}
			tn, err := s.store.GetTenant(context.Background(), tenant)
			if err != nil || tn.Target != wantTarget || tn.State != catalog.StateActive {
				t.Fatalf("tenant after the move ended %s: %+v %v; want active on %s", after, tn, err, wantTarget)
			}
			storm.checkModel(t, dsnOf(t, s, wantTarget, tenant))
			t.Logf("%s: move %s ended %s; %d requests, 0 failed; tenant active on %s with every acknowledged write",
				phase, id, after, storm.requests.Load(), wantTarget)
		})
	}
}

// startPlanMove changes tenant's plan through the API and returns the id of
// the move it started.
func startPlanMove(t *testing.T, base, tenant, plan string) string {
	t.Helper()
	st, out := call(t, "PUT", base+"/v1/tenants/"+tenant+"/plan", tokBilling, map[string]any{"plan": plan}, nil)
	mv, _ := out["move"].(map[string]any)
	id, _ := mv["id"].(string)
	if st != 202 || id == "" {
		t.Fatalf("plan change: %d %v", st, out)
	}
	return id
}

// interrupt sends, while move id is stopped in phase, a plan change to
// another tier, a retry and an abort, and checks each answer. It returns
// the id of a move the plan change started (only once the move is
// retained).
func interrupt(t *testing.T, base, tenant, id string, phase migrator.Phase) (next string) {
	t.Helper()
	retained := phase == migrator.PhaseRetained
	type want struct {
		status int
		code   string
		says   string
	}
	for _, tc := range []struct {
		what, method, path string
		body               any
		token              string
		want               want
	}{
		// Once switched the tenant is on its new tier: the retained
		// source copy is no move in progress, and a new plan moves on.
		{"plan change to another tier", "PUT", "/v1/tenants/" + tenant + "/plan", map[string]any{"plan": "enterprise"}, tokBilling,
			map[bool]want{false: {409, "conflict", id}, true: {202, "", "to:cl-1"}}[retained]},
		{"retry of a running move", "POST", "/v1/moves/" + id + "/retry", nil, tokOperator, want{409, "not_paused", "only a paused move"}},
		{"abort", "POST", "/v1/moves/" + id + "/abort", nil, tokOperator, map[bool]want{false: {202, "", ""}, true: {409, "too_late", "move the tenant back"}}[retained]},
	} {
		st, out := call(t, tc.method, base+tc.path, tc.token, tc.body, nil)
		code, _ := out["error"].(string)
		msg := fmt.Sprint(out["message"])
		if st != tc.want.status || code != tc.want.code || !strings.Contains(msg+fmt.Sprint(out), tc.want.says) {
			t.Fatalf("%s during %s: %d %v; want %d code %q saying %q", tc.what, phase, st, out, tc.want.status, tc.want.code, tc.want.says)
		}
		t.Logf("%s during %s: %d %s %s", tc.what, phase, st, code, msg)
		if mv, ok := out["move"].(map[string]any); ok && tc.method == "PUT" {
			next, _ = mv["id"].(string)
		}
	}
	return next
}

// settleMove waits for move id to end: aborted, or (retained) to stay
// retained. It returns the phase it ended in.
func settleMove(t *testing.T, base, id string, retained bool) migrator.Phase {
	t.Helper()
	want := migrator.PhaseAborted
	if retained {
		want = migrator.PhaseRetained
	}
	var last map[string]any
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		st, out := call(t, "GET", base+"/v1/moves/"+id, tokViewer, nil, nil)
		last = out
		if mv, ok := out["move"].(map[string]any); ok && st == 200 {
			out = mv
		}
		if migrator.Phase(fmt.Sprint(out["phase"])) == want && fmt.Sprint(out["status"]) != string(migrator.StatusAborting) {
			return want
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("move %s did not end %s within a minute: %v", id, want, last)
	return ""
}

// pauseGate holds one tenant's switch, once, for a moment just after the
// fence (inside the pause, well within its budget).
type pauseGate struct {
	tenant  string
	once    sync.Once
	reached chan struct{}
	hold    time.Duration
}

func (g *pauseGate) afterFence(m *migrator.Move) error {
	if m.Tenant == g.tenant {
		g.once.Do(func() { close(g.reached); time.Sleep(g.hold) })
	}
	return nil
}

// abortInsideThePause: an abort that arrives while the switch is inside its
// pause waits for the outcome and tells it: the flip went through, so 409
// too_late and the tenant is active on its new target (or, the switch
// rolled back, 202 and aborted) — never a 202 the flip then overtakes.
func abortInsideThePause(t *testing.T, s *moveStack, base string, g *pauseGate) {
	s.seedTenant(g.tenant, "free", catalog.TierShared, "pool-1", 100)
	storm := s.startStorm(g.tenant, 2, 5*time.Millisecond)
	defer storm.halt()
	id := startPlanMove(t, base, g.tenant, "pro")
	select {
	case <-g.reached:
	case <-time.After(45 * time.Second):
		t.Fatal("the move never reached its pause")
	}
	st, out := call(t, "POST", base+"/v1/moves/"+id+"/abort", tokOperator, nil, nil)
	// The switch either flipped (the usual case: the hold is well within the
	// budget) or, on a slow machine, rolled back first; the answer must
	// say which, and the tenant must be where it says.
	want, aborted := "db-1", false
	switch {
	case st == 409 && out["error"] == "too_late":
		settleMove(t, base, id, true)
	case st == 202:
		want, aborted = "pool-1", true
		settleMove(t, base, id, false)
	default:
		t.Fatalf("abort inside the pause: %d %v; want 409 too_late, or 202 if the switch rolled back", st, out)
	}
	t.Logf("abort inside the pause: %d (aborted: %v)", st, aborted)
	storm.halt()
	if f := storm.failures.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed: %v", f, storm.requests.Load(), storm.failLog)
	}
	tn, err := s.store.GetTenant(context.Background(), g.tenant)
	if err != nil || tn.Target != want || tn.State != catalog.StateActive {
		t.Fatalf("tenant after an abort answered %d: %+v %v; want active on %s", st, tn, err, want)
	}
	storm.checkModel(t, dsnOf(t, s, want, g.tenant))
}
