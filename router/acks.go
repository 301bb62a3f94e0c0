package router

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/internal/watch"
)

// ackTimeout bounds how long a router tries to acknowledge one freeze.
const ackTimeout = 10 * time.Second

// acknowledger answers cutover freezes: it keeps the router registered in
// Consul and, for each announced freeze, acknowledges once this router's
// snapshot holds the tenant frozen at that epoch and no request of the
// tenant is in flight.
type acknowledger struct {
	r     *Router
	store *catalog.Store
	mu    sync.Mutex
	acked map[string]uint64 // tenant → epoch acked (or being acked)
}

func (a *acknowledger) run(ctx context.Context) {
	for ctx.Err() == nil {
		sentAt := monoNow()
		sess, err := a.store.RegisterRouter(ctx, a.r.cfg.ID, a.r.lease.ttl)
		if err != nil {
			a.r.log.Warn("router registration failed; not forwarding once the lease lapses", "err", err)
			if retry.Sleep(ctx, time.Second) != nil {
				return
			}
			continue
		}
		a.r.log.Info("router registered for cutover acks", "session", sess.Session)
		sctx, cancel := context.WithCancel(ctx)
		go a.reportLoad(sctx, sess)
		go func() {
			if err := a.keepAlive(sctx, sess, sentAt); errors.Is(err, catalog.ErrSessionGone) {
				a.r.lease.until.Store(0) // cutovers may have gone on without this router
				a.r.log.Warn("router session lost; registering again")
			}
			cancel()
		}()
		a.watch(sctx, sess)
		cancel()
		if ctx.Err() != nil {
			ectx, ecancel := context.WithTimeout(context.Background(), time.Second)
			sess.End(ectx) // no cutover waits for a router that is gone
			ecancel()
		}
		a.mu.Lock()
		a.acked = map[string]uint64{}
		a.mu.Unlock()
	}
}

// watch acknowledges each freeze announced while the session lasts.
func (a *acknowledger) watch(ctx context.Context, sess *catalog.RouterSession) {
	l := &watch.Loop{Name: "freezes", Logger: a.r.log, Fetch: func(ctx context.Context, index uint64) (uint64, error) {
		freezes, next, err := a.store.WatchFreezes(ctx, index, 5*time.Minute)
		if err != nil {
			return index, err
		}
		for _, f := range freezes {
			a.mu.Lock()
			done := a.acked[f.Tenant] >= f.Epoch
			if !done {
				a.acked[f.Tenant] = f.Epoch
			}
			a.mu.Unlock()
			if !done {
				go a.ack(ctx, sess, f)
			}
		}
		return next, nil
	}}
	l.Run(ctx)
}

func (a *acknowledger) ack(ctx context.Context, sess *catalog.RouterSession, f catalog.Freeze) {
	ctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	for {
		snap := a.r.watcher.Snapshot()
		rt, ok := snap.Lookup(f.Tenant)
		if !ok || rt.Epoch > f.Epoch {
			return // moved on already: nothing to hold
		}
		if rt.State == catalog.StateFrozen && rt.Epoch == f.Epoch {
			break
		}
		select {
		case <-snap.Changed():
		case <-ctx.Done():
			a.forget(f)
			return
		}
	}
	if err := a.r.inflight.WaitIdle(ctx, f.Tenant); err != nil {
		a.forget(f)
		return
	}
	if err := sess.Ack(ctx, f.Tenant, f.Epoch); err != nil {
		a.r.log.Warn("cutover ack failed", "err", err, "epoch", f.Epoch)
		a.forget(f)
		return
	}
	a.r.metrics.acks.Inc()
}

func (a *acknowledger) forget(f catalog.Freeze) {
	a.mu.Lock()
	if a.acked[f.Tenant] == f.Epoch {
		delete(a.acked, f.Tenant)
	}
	a.mu.Unlock()
}

// loadReportEvery is how often a router publishes its per-tenant request
// rates for the planner.
const loadReportEvery = 5 * time.Second

// reportLoad publishes the requests per second of every tenant this router
// served in the last window, under the router's session (it vanishes with
// the router). Only active tenants appear.
func (a *acknowledger) reportLoad(ctx context.Context, sess *catalog.RouterSession) {
	last := time.Now()
	a.r.inflight.TakeCounts()
	for {
		if retry.Sleep(ctx, loadReportEvery) != nil {
			return
		}
		counts := a.r.inflight.TakeCounts()
		window := time.Since(last).Seconds()
		last = time.Now()
		rps := make(map[string]float64, len(counts))
		for t, n := range counts {
			rps[t] = float64(n) / window
		}
		if err := sess.PutLoad(ctx, catalog.RouterLoad{At: last.UTC(), WindowS: window, RPS: rps}); err != nil {
			a.r.log.Debug("load report", "err", err)
		}
	}
}
