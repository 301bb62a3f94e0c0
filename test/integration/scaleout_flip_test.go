package integration

import (
	"bytes"
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

// isFlip matches the migrator's catalog transaction (a bucket CAS) in the
// bytes of a request to Consul.
func isFlip(b []byte) bool {
	return bytes.Contains(b, []byte("PUT /v1/txn")) && bytes.Contains(b, []byte("/tenants/b/"))
}

// Scenario c: the migrator's path to Consul is cut exactly at the flip —
// before the CAS reaches Consul, or after it commits and before the answer
// returns. The tenant must end in exactly one place: while the migrator is
// cut off, the source takes no direct write if the catalog already says
// the destination; once the path heals the move finishes (retained on the
// destination, the source fenced) and the history through the routers is
// linearizable with no acknowledged write lost.
func TestScaleOutFlipAnswerLost(t *testing.T) {
	for _, tc := range []struct {
		name         string
		afterForward bool
	}{
		{name: "before the CAS reaches Consul"},
		// Before the fix, the rollback unfenced the source although the
		// flip had committed: the tenant had two writable homes.
		{name: "after the CAS commits", afterForward: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flipCut(t, tc.afterForward)
		})
	}
}

// flipCut runs one variant of scenario c with a migrator of the test's own
// (the controllers are stopped so no replica takes the move over).
func flipCut(t *testing.T, afterForward bool) {
	s := newScaleStack(t)
	for _, c := range s.controllers {
		s.signal(c, syscall.SIGTERM)
	}
	s.seed("flipper", 200)
	w := s.workload("flipper", 4)
	client, proxy := s.consulVia(1)
	var fired <-chan struct{}
	mg := newMigrator(t, client, migrator.Config{ID: "cut-off", Logger: testLogger(t), LockTTL: 5 * time.Second,
		Hooks: &migrator.Hooks{AfterFence: func(*migrator.Move) error {
			if fired == nil {
				fired = proxy.CutOn(isFlip, afterForward)
			}
			return nil
		}}})
	m, _, err := mg.Create(s.ctx, migrator.Request{Tenant: "flipper", To: "db-1", Options: migrator.Options{ChunkRows: 100, Retention: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	err = mg.Run(s.ctx, m.ID)
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatalf("the flip was never cut (run: %v)", err)
	}
	fault := time.Now()
	if err == nil {
		t.Fatal("the move reported success although its path to Consul was cut at the flip")
	}
	t.Logf("run with the flip cut: %v", err)
	tn, gerr := s.store.GetTenant(s.ctx, "flipper")
	if gerr != nil {
		t.Fatal(gerr)
	}
	t.Logf("catalog while the migrator is cut off: %s %s epoch %d", tn.Target, tn.State, tn.Epoch)
	if tn.Target == "db-1" {
		s.expectFenced(t, "flipper", "while the catalog says db-1 and the migrator is cut off")
	}
	time.Sleep(time.Second)
	proxy.Heal()
	s.finishMove(t, mg, m.ID)
	time.Sleep(500 * time.Millisecond)
	s.verdict(w, "flipper", fault, 1000)
	s.expectFenced(t, "flipper", "after the move finished")
	if tn, _ := s.store.GetTenant(s.ctx, "flipper"); tn.Target != "db-1" {
		t.Fatalf("tenant on %s after the move finished", tn.Target)
	}
}

// expectFenced fails the test if the source pool takes a direct write of
// the tenant's.
func (s *scaleStack) expectFenced(t *testing.T, tenant, when string) {
	t.Helper()
	db := sqlxMustB(t, s.pgPool.DSN("pool"))
	_, err := db.Exec(`INSERT INTO orders (tenant_id, item, quantity, price_cents) VALUES ($1, 'direct-to-source', 1, 1)`, tenant)
	if err == nil {
		t.Errorf("the source took a direct write of %s %s: the tenant is in two places", tenant, when)
	}
}

// finishMove runs the move again (waiting out the cut-off migrator's lock)
// until it has switched.
func (s *scaleStack) finishMove(t *testing.T, mg *migrator.Migrator, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 60*time.Second)
	defer cancel()
	for {
		err := mg.Run(ctx, id)
		if errors.Is(err, migrator.ErrLocked) || err != nil && ctx.Err() == nil {
			t.Logf("rerun: %v", err)
			time.Sleep(500 * time.Millisecond)
			if m, gerr := mg.Get(ctx, id); gerr == nil && m.Status == migrator.StatusPaused {
				if _, rerr := mg.Retry(ctx, id); rerr != nil {
					t.Logf("retry: %v", rerr)
				}
			}
			continue
		}
		if err != nil {
			t.Fatalf("move did not finish: %v", err)
		}
		break
	}
	m, err := mg.Get(s.ctx, id)
	if err != nil || m.Phase != migrator.PhaseRetained && m.Phase != migrator.PhaseDone {
		t.Fatalf("move after the rerun: %+v %v", m, err)
	}
	if tn, _ := s.store.GetTenant(s.ctx, m.Tenant); tn.State != catalog.StateActive {
		t.Fatalf("tenant %s after the move", tn.State)
	}
}
