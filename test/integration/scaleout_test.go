package integration

import (
	"os"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
)

// soak reports whether the long variants run (make soak).
func soak() bool { return os.Getenv("SWITCHYARD_SOAK") != "" }

// Scenario f: a steady write load through all three routers while the
// controllers move one tenant back and forth N times (pool ↔ dedicated
// database, by plan changes): no request fails, no acknowledged write is
// lost, the history is linearizable.
func TestScaleOutBackAndForth(t *testing.T) {
	n := 4
	if soak() {
		n = 20
	}
	s := newScaleStack(t)
	s.seed("pingpong", 200)
	w := s.workload("pingpong", 6)
	mg := s.migrator()
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	for i := range n {
		plan := map[bool]string{true: "pro", false: "free"}[i%2 == 0]
		id := s.setPlan(s.controllers[i%2], "pingpong", plan)
		m := s.waitMove(mg, id, 60*time.Second)
		t.Logf("move %d: %s → %s, pause %s", i+1, m.From, m.To, m.Pause.Round(time.Millisecond))
	}
	time.Sleep(500 * time.Millisecond)
	t.Logf("%d moves in %s", n, time.Since(start).Round(time.Millisecond))
	s.verdict(w, "pingpong", time.Time{}, 0)
	if tn, _ := s.store.GetTenant(s.ctx, "pingpong"); n%2 == 0 && tn.Tier != catalog.TierShared {
		t.Errorf("after %d moves the tenant is on %s (%s)", n, tn.Target, tn.Tier)
	}
}
