package router

import (
	"context"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/internal/ratelimit"
	"github.com/switchyard/switchyard/internal/retry"
)

// How a tenant's limits hold across N routers (README "Limits across
// routers"): every router publishes each tenant's requests a second, as it
// saw them (refused ones included), every loadReportEvery (acks.go); every
// router reads all the reports and the live routers every sharesEvery, and
// enforces the fraction ratelimit.Fraction gives it. As all routers compute
// from the same published figures, the fractions add up to the limit.

// sharesEvery is how often a router re-reads the routers' reports.
const sharesEvery = time.Second

// staleReport: a load report older than this is ignored (its router is
// stuck; its session would have gone had it died).
const staleReport = 30 * time.Second

// shareTable is what a router knows of the tenants' demand: the live
// routers, and each tenant's published demand here and in all.
type shareTable struct {
	routers int
	demand  map[string]ratelimit.Demand
}

// fraction is the part of the tenant's limits this router enforces.
// It allocates nothing (a map read).
func (l *limiter) fraction(tenant string, lim catalog.Limits) float64 {
	t := l.shares.Load()
	d := t.demand[tenant]
	if lim.RequestsPerSecond > 0 {
		return ratelimit.Fraction(lim.RequestsPerSecond, d, t.routers)
	}
	// Concurrency alone: in proportion to the demand (no headroom to share
	// out in requests a second).
	return ratelimit.Fraction(d.Total, d, t.routers)
}

// buildShares makes the share table from the live routers and their load
// reports, as router self sees them.
func buildShares(self string, live []string, loads map[string]catalog.RouterLoad, now time.Time) *shareTable {
	isLive := make(map[string]bool, len(live)+1)
	for _, id := range live {
		isLive[id] = true
	}
	isLive[self] = true // counted even while (re-)registering
	t := &shareTable{routers: len(isLive), demand: map[string]ratelimit.Demand{}}
	for id, l := range loads {
		if !isLive[id] || now.Sub(l.At) > staleReport {
			continue
		}
		for tenant, rps := range l.RPS {
			if rps <= 0 {
				continue
			}
			d := t.demand[tenant]
			d.Total += rps
			if id == self {
				d.Self += rps
			}
			t.demand[tenant] = d
		}
	}
	return t
}

// runShares keeps the share table current and sweeps idle buckets, until
// ctx ends. When Consul cannot be read the last table stays.
func (l *limiter) runShares(ctx context.Context, store *catalog.Store, self string) {
	for {
		live, err := store.LiveRouters(ctx)
		if err == nil {
			var loads map[string]catalog.RouterLoad
			if loads, err = store.RouterLoads(ctx); err == nil {
				l.shares.Store(buildShares(self, live, loads, time.Now()))
			}
		}
		l.sweep(monoNow())
		if retry.Sleep(ctx, sharesEvery) != nil {
			return
		}
	}
}
