package integration

import (
	"context"
	"testing"
	"time"

	"github.com/switchyard/switchyard/migrator"
)

// Scenario b: the Consul leader SIGKILLed while the move is in its switch
// (found through the status API; timed by the migrator's hooks): after the
// fence, so the flip meets the election, and (soak) before the freeze, so
// the freeze does. The remaining two servers elect a leader; the move
// finishes (rolling the switch back and trying again if it must): the
// tenant ends in exactly one place, no acknowledged write is lost and the
// history is linearizable. Requests held while no leader could answer may
// fail (503 after the routers' hold).
func TestScaleOutConsulLeaderKilled(t *testing.T) {
	for _, tc := range []struct {
		name string
		soak bool
		hook func(h *migrator.Hooks, kill func())
	}{
		{name: "after the fence", hook: func(h *migrator.Hooks, kill func()) {
			h.AfterFence = func(*migrator.Move) error { kill(); return nil }
		}},
		{name: "before the freeze", soak: true, hook: func(h *migrator.Hooks, kill func()) {
			h.BeforeSwitch = func(*migrator.Move) error { kill(); return nil }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.soak && !soak() {
				t.Skip("SWITCHYARD_SOAK=1 (make soak)")
			}
			leaderKilled(t, tc.hook)
		})
	}
}

// leaderKilled runs one variant of scenario b with a migrator of the
// test's own (the controllers are stopped so no replica takes the move).
func leaderKilled(t *testing.T, hook func(*migrator.Hooks, func())) {
	s := newScaleStack(t)
	s.stopControllers()
	s.seed("elector", 200)
	w := s.workload("elector", 4)
	var killedAt time.Time
	kill := func() {
		if !killedAt.IsZero() {
			return
		}
		leader, err := s.cluster.Leader(s.ctx)
		if err != nil {
			t.Errorf("find the Consul leader: %v", err)
			return
		}
		if err := leader.Kill(); err != nil {
			t.Errorf("kill the Consul leader: %v", err)
		}
		killedAt = time.Now()
		t.Logf("SIGKILLed the Consul leader %s inside the switch", leader.NodeName())
	}
	hooks := &migrator.Hooks{}
	hook(hooks, kill)
	mg, m := s.ownMove("elected", "elector", hooks)
	// One run, under one lock, rides the election out: before, a catalog
	// read failing without a leader ended the run, its unlock failed too,
	// and the move stayed locked by its own abandoned session for 2×TTL.
	ctx, cancel := context.WithTimeout(s.ctx, 90*time.Second)
	if err := mg.Run(ctx, m.ID); err != nil {
		t.Errorf("the move's run did not ride out the election under its lock: %v", err)
		s.finishMove(t, mg, m.ID)
	}
	cancel()
	if killedAt.IsZero() {
		t.Fatal("the hook never killed the leader")
	}
	finished := time.Since(killedAt)
	leader, err := s.cluster.Leader(s.ctx)
	if err != nil {
		t.Fatalf("no Consul leader after the kill: %v", err)
	}
	m, _ = mg.Get(s.ctx, m.ID)
	t.Logf("move switched %s after the kill (attempts %d, pause %s); new Consul leader %s",
		m.Switched.Sub(killedAt).Round(time.Millisecond), m.Attempts, m.Pause.Round(time.Millisecond), leader.NodeName())
	// The election takes a second or two; the migrator rides it out under
	// its lock (3–5 s seen). A figure, not a timed assertion.
	t.Logf("FIGURES %s: switched %s after the Consul leader was killed", t.Name(), m.Switched.Sub(killedAt).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	s.verdict(w, "elector", killedAt, 1000)
	t.Logf("move finished %s after the kill", finished.Round(time.Millisecond))
	s.expectFenced(t, "elector", "after the move (retained source)")
	if tn, _ := s.store.GetTenant(s.ctx, "elector"); tn.Target != "db-1" {
		t.Fatalf("tenant on %s after the move finished", tn.Target)
	}
}
