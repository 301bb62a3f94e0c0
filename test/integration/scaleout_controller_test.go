package integration

import (
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

// Scenario d: the controller leader dies while it runs a move — SIGTERMed
// during the copy, SIGKILLed inside the switch (the tenant frozen in the
// catalog). The other replica takes the lead and finishes the move; nothing
// is left frozen, no freeze announced, the history is linearizable and no
// acknowledged write is lost. Requests held while the tenant sat frozen
// with no migrator alive may fail (503 after the routers' hold).
func TestScaleOutControllerLeaderDies(t *testing.T) {
	for _, tc := range []struct {
		name        string
		sig         syscall.Signal
		at          func(s *scaleStack, mg *migrator.Migrator, id string) bool
		allowFailed int
	}{
		{"SIGTERM during the copy", syscall.SIGTERM, func(s *scaleStack, mg *migrator.Migrator, id string) bool {
			m, err := mg.Get(s.ctx, id)
			return err == nil && m.Phase == migrator.PhaseCopy && m.Progress() > 0.1
		}, 0},
		{"SIGKILL inside the switch", syscall.SIGKILL, func(s *scaleStack, _ *migrator.Migrator, _ string) bool {
			tn, err := s.store.GetTenant(s.ctx, "victim")
			return err == nil && tn.State == catalog.StateFrozen
		}, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newScaleStack(t)
			s.seed("victim", 6000)
			w := s.workload("victim", 4)
			mg := s.migrator()
			leader := s.leaderController()
			id := s.setPlan(leader, "victim", "pro")
			waitFor(t, 60*time.Second, "the leader at the fault point", func() bool { return tc.at(s, mg, id) })
			s.signal(leader, tc.sig)
			fault := time.Now()
			m, _ := mg.Get(s.ctx, id)
			t.Logf("%s the leader %s in %s", tc.sig, leader.name, m.Phase)
			m = s.waitMove(mg, id, 90*time.Second)
			if next := s.leaderController(); next == leader {
				t.Fatal("the dead replica is still the leader")
			}
			t.Logf("move finished by the other replica %s after the fault: %s → %s", time.Since(fault).Round(time.Millisecond), m.From, m.To)
			time.Sleep(500 * time.Millisecond)
			s.verdict(w, "victim", fault, tc.allowFailed)
			s.expectFenced(t, "victim", "after the move (retained source)")
			if pairs, _, err := s.admin.KV().List(s.store.FreezesPrefix(), nil); err != nil || len(pairs) != 0 {
				t.Errorf("freezes left announced: %d (%v)", len(pairs), err)
			}
		})
	}
}
