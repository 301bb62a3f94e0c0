package integration

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/migrator"
	"github.com/switchyard/switchyard/test/harness"
)

// Scenario e: a PostgreSQL server restarted under a move — the source
// during the catch-up, the destination during the copy (timed by the
// migrator's hooks; each hook returns once the server has gone down, so the
// migrator's next statements meet the restart). The move rides the restart
// out by itself (no operator retry) and finishes; no acknowledged write is
// lost and the history is linearizable. Requests that reach the source while it restarts fail (the
// orders app answers 5xx): those are counted, not lost.
func TestScaleOutPostgresRestarted(t *testing.T) {
	for _, tc := range []struct {
		name string
		pg   func(*scaleStack) *harness.Postgres
		hook func(h *migrator.Hooks, restart func())
	}{
		{"source during the catch-up", func(s *scaleStack) *harness.Postgres { return s.pgPool }, func(h *migrator.Hooks, restart func()) {
			h.BeforeApply = func(m *migrator.Move, _ int) error {
				if m.Phase == migrator.PhaseCatchUp {
					restart()
				}
				return nil
			}
		}},
		{"destination during the copy", func(s *scaleStack) *harness.Postgres { return s.pgDed }, func(h *migrator.Hooks, restart func()) {
			var chunks atomic.Int64
			h.AfterChunk = func(*migrator.Move) error {
				if chunks.Add(1) == 15 {
					restart()
				}
				return nil
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pgRestarted(t, tc.pg, tc.hook)
		})
	}
}

// pgRestarted runs one variant of scenario e with a migrator of the test's
// own (the controllers are stopped so no replica takes the move).
func pgRestarted(t *testing.T, which func(*scaleStack) *harness.Postgres, hook func(*migrator.Hooks, func())) {
	s := newScaleStack(t)
	s.stopControllers()
	s.seed("phoenix", 6000)
	w := s.workload("phoenix", 4)
	pg := which(s)
	var once sync.Once
	var restartedAt time.Time
	var back sync.WaitGroup
	restart := func() {
		once.Do(func() {
			restartedAt = time.Now()
			back.Go(func() {
				if err := pg.Restart(s.ctx); err != nil {
					t.Errorf("restart PostgreSQL: %v", err)
				}
				t.Logf("PostgreSQL %s back %s after the restart began", pg.Addr(), time.Since(restartedAt).Round(time.Millisecond))
			})
			waitDown(t, pg.Addr())
		})
	}
	hooks := &migrator.Hooks{}
	hook(hooks, restart)
	mg, m := s.ownMove("restarts", "phoenix", hooks)
	// One run, no operator: before the migrator rode outages out, each
	// error of the restart paused the move until someone retried it.
	if err := mg.Run(s.ctx, m.ID); err != nil {
		t.Fatalf("the move did not ride out the restart: %v", err)
	}
	back.Wait()
	if restartedAt.IsZero() {
		t.Fatal("the hook never restarted PostgreSQL")
	}
	m, _ = mg.Get(s.ctx, m.ID)
	t.Logf("move switched %s after the restart began (switch attempts %d, pause %s)",
		m.Switched.Sub(restartedAt).Round(time.Millisecond), m.Attempts, m.Pause.Round(time.Millisecond))
	if m.Phase != migrator.PhaseRetained {
		t.Fatalf("move after the run: %s %s %s", m.Phase, m.Status, m.Error)
	}
	time.Sleep(500 * time.Millisecond)
	// Requests that reach a restarting source fail fast (503
	// db_unavailable), as many as the clients send: bound how long, not
	// how many.
	s.verdict(w, "phoenix", restartedAt, 1<<30)
	if st := w.Rec.Stats(restartedAt); st.Recovery > 20*time.Second {
		t.Errorf("requests failed for %s after the restart began", st.Recovery)
	}
	s.expectFenced(t, "phoenix", "after the move (retained source)")
	if tn, _ := s.store.GetTenant(s.ctx, "phoenix"); tn.Target != "db-1" {
		t.Fatalf("tenant on %s after the move finished", tn.Target)
	}
}

// waitDown waits (at most 5 s) until nothing accepts connections at addr.
func waitDown(t *testing.T, addr string) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%s still accepting connections 5 s into its restart", addr)
}
