package router

import (
	"context"
	"net/http"
	"time"

	"github.com/switchyard/switchyard/catalog"
)

// hold waits while a tenant is frozen for a cutover: until a newer snapshot
// shows it unfrozen (status 0, with the route to use and the snapshot it
// came from), HoldMax passes (503),
// the tenant disappears (404) or the client goes away (499). Only the frozen
// tenant's requests wait; nothing else is buffered.
func (p *Proxy) hold(ctx context.Context, snap *catalog.Snapshot, id string, limit time.Duration) (catalog.Route, *catalog.Snapshot, int) {
	start := time.Now()
	if limit <= 0 {
		p.metrics.holds.WithLabelValues("expired").Inc()
		return catalog.Route{}, snap, http.StatusServiceUnavailable
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	observe := func(outcome string) {
		p.metrics.holds.WithLabelValues(outcome).Inc()
		p.metrics.holdSeconds.Observe(time.Since(start).Seconds())
	}
	for {
		select {
		case <-snap.Changed():
			snap = p.catalog.Snapshot()
			route, ok := snap.Lookup(id)
			if !ok {
				observe("released")
				return catalog.Route{}, snap, http.StatusNotFound
			}
			if route.State != catalog.StateFrozen {
				observe("released")
				return route, snap, 0
			}
		case <-timer.C:
			observe("expired")
			return catalog.Route{}, snap, http.StatusServiceUnavailable
		case <-ctx.Done():
			observe("cancelled")
			return catalog.Route{}, snap, 499
		}
	}
}
