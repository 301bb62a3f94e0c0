package integration

import (
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/migrator"
	"github.com/switchyard/switchyard/test/history"
)

// routerLease is the routers' -lease-ttl (the default).
const routerLease = 10 * time.Second

// Scenario a: a router SIGSTOPped before the freeze and resumed after the
// flip. The switch skips it once its registration has not moved for its
// lease (by the migrator's clock), so it waits at most the lease, not the
// Consul session's 2 × TTL, and the wait is no failed attempt. The other
// side of the rule: once resumed, the router serves nothing stale — its
// held and new requests for the moved tenant go to the new home or get
// 503, never to the old source — and no write reaches the source after the
// flip.
func TestScaleOutRouterStalled(t *testing.T) {
	s := newScaleStack(t)
	s.stopControllers()
	s.seed("sleeper", 200)
	w := s.workload("sleeper", 4)
	stalled := s.routers[2]
	var stoppedAt time.Time
	mg, m := s.ownMove("stall", "sleeper", &migrator.Hooks{BeforeSwitch: func(*migrator.Move) error {
		if stoppedAt.IsZero() {
			s.signal(stalled, syscall.SIGSTOP)
			stoppedAt = time.Now()
		}
		return nil
	}})
	if err := mg.Run(s.ctx, m.ID); err != nil {
		t.Fatalf("move with a stalled router: %v", err)
	}
	m, err := mg.Get(s.ctx, m.ID)
	if err != nil || m.Phase != migrator.PhaseRetained {
		t.Fatalf("move after the run: %+v %v", m, err)
	}
	waited := m.Switched.Sub(stoppedAt)
	t.Logf("FIGURES %s: router stopped → flip %s (lease %s), failed switch attempts counted %d, pause %s",
		t.Name(), waited.Round(time.Millisecond), routerLease, m.Attempts, m.Pause.Round(time.Millisecond))
	// The lease after the first sighting of the stopped router's key, plus
	// one catch-up and switch; without the skip the session lives 2 × TTL.
	if waited > routerLease+5*time.Second {
		t.Errorf("the switch waited %s for the stopped router, more than its lease %s (+5 s for one attempt)", waited, routerLease)
	}
	s.resumeStalled(t, w, stalled)
	recovered := time.Since(stoppedAt)
	s.verdict(w, "sleeper", stoppedAt, 1000)
	t.Logf("resumed router serving again %s after it was stopped", recovered.Round(time.Millisecond))
	for _, op := range w.Rec.Ops() {
		if strings.Contains(op.Detail, "tenant_fenced") && op.Return.After(m.Switched) {
			t.Errorf("a write reached the fenced source after the flip: %s", op)
		}
		if op.Failed() && !strings.Contains(op.Via, stalled.url) {
			t.Errorf("failed through a router that was not stopped: %s", op)
		}
	}
	s.expectFenced(t, "sleeper", "after the move (retained source)")
}

// resumeStalled probes the stopped router after the flip, resumes it and
// checks its answers: a read of an order written after the flip is the
// fresh value or a 503, a create lands on the new home or gets a 503.
// It returns once the router serves the tenant again.
func (s *scaleStack) resumeStalled(t *testing.T, w *history.Workload, stalled *sproc) {
	t.Helper()
	via := s.routers[0].url
	created := w.Do(via, 100, history.Input{Kind: history.Create, Item: "after-flip", Quantity: 1})
	if created.Failed() {
		t.Fatalf("create after the flip: %s", created)
	}
	updated := w.Do(via, 100, history.Input{Kind: history.Update, ID: created.Out.ID, Item: "after-flip-2", Quantity: 2})
	if updated.Failed() {
		t.Fatalf("update after the flip: %s", updated)
	}
	var read, made history.Op
	var wg sync.WaitGroup
	wg.Go(func() { read = w.Do(stalled.url, 101, history.Input{Kind: history.Read, ID: created.Out.ID}) })
	wg.Go(func() {
		made = w.Do(stalled.url, 102, history.Input{Kind: history.Create, Item: "held-in-stopped-router", Quantity: 3})
	})
	time.Sleep(300 * time.Millisecond) // the probes wait in the stopped router's socket
	s.signal(stalled, syscall.SIGCONT)
	wg.Wait()
	t.Logf("resumed router answered: read %s; create %s", read, made)
	for _, op := range []history.Op{read, made} {
		if op.Failed() && !strings.HasPrefix(op.Detail, "503") {
			t.Errorf("the resumed router's answer is neither the new home's nor a 503: %s", op)
		}
	}
	if read.Out.Found && read.Out.Value != updated.Out.Value || !read.Failed() && !read.Out.Found {
		t.Errorf("stale read through the resumed router: %s, written %s", read, updated)
	}
	waitFor(t, 30*time.Second, "the resumed router serving the tenant", func() bool {
		return !w.Do(stalled.url, 103, history.Input{Kind: history.Read, ID: created.Out.ID}).Failed()
	})
}
