package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/internal/retry"
)

// usageStore is what the publisher needs of the catalog.
type usageStore interface {
	PutUsage(ctx context.Context, m *catalog.UsageMinute) error
	PruneUsage(ctx context.Context, before time.Time) (int, error)
}

var _ usageStore = (*catalog.Store)(nil)

// usagePublisher harvests the meter every few seconds and writes each
// minute's running totals under this process's own keys (a source: the
// router's id and a random incarnation), so totals survive the process
// and a restarted router neither adds to nor overwrites its predecessor's.
type usagePublisher struct {
	meter     *Meter
	store     usageStore
	source    string
	every     time.Duration
	retention time.Duration
	log       *slog.Logger
	errors    prometheus.Counter
	top       *prometheus.GaugeVec // the busiest tenants' request rates

	mu        sync.Mutex // one flush at a time
	minutes   map[int64]*usagePending
	lastPrune time.Time
	lastFlush time.Time
}

// usageMaxUnwritten is how many minutes a router keeps usage Consul has
// not taken.
const usageMaxUnwritten = 60

// usagePending is a minute's running totals and whether Consul has them.
type usagePending struct {
	catalog.UsageMinute
	dirty bool
}

func newUsagePublisher(m *Meter, store usageStore, routerID string, cfg ObserveConfig, log *slog.Logger) *usagePublisher {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return &usagePublisher{meter: m, store: store, source: routerID + "." + hex.EncodeToString(b[:]),
		every: cfg.UsageFlushEvery, retention: cfg.UsageRetention, log: log, minutes: map[int64]*usagePending{},
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_router_usage_publish_errors_total",
			Help: "Usage minutes that could not be written to Consul (retried at the next flush).",
		}),
		top: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_router_usage_top_tenants_rps",
			Help: "Requests per second over the last usage flush of this router's busiest tenants (at most 10 series: the only metric with tenant ids).",
		}, []string{"tenant"})}
}

// run flushes every few seconds until ctx ends; the router flushes once
// more after its last request (Router.Run).
func (u *usagePublisher) run(ctx context.Context) {
	for retry.Sleep(ctx, u.every) == nil {
		u.flush(ctx, time.Now())
	}
}

// flush harvests the meter and writes every minute that changed. A minute
// is forgotten once written and too old to be counted into again.
func (u *usagePublisher) flush(ctx context.Context, now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	nowMin := now.Unix() / 60
	acc := map[int64]map[string]catalog.UsageCounts{}
	u.meter.harvest(nowMin, acc)
	u.setTop(acc, now)
	for minute, tenants := range acc {
		p := u.minutes[minute]
		if p == nil {
			p = &usagePending{UsageMinute: catalog.UsageMinute{Minute: time.Unix(minute*60, 0).UTC(), Source: u.source, Tenants: map[string]catalog.UsageCounts{}}}
			u.minutes[minute] = p
		}
		for t, c := range tenants {
			sum := p.Tenants[t]
			sum.Add(c)
			p.Tenants[t] = sum
		}
		p.dirty = true
	}
	for minute, p := range u.minutes {
		if p.dirty {
			if err := u.store.PutUsage(ctx, &p.UsageMinute); err != nil {
				u.errors.Inc()
				u.log.Warn("usage publish failed; retrying at the next flush", "minute", p.Minute, "err", err)
				continue
			}
			p.dirty = false
		}
		// Written and too old to be counted into again; or unwritten for
		// an hour (Consul unreachable), then given up rather than kept forever.
		if !p.dirty && nowMin-minute >= usageSlots || nowMin-minute > usageMaxUnwritten {
			delete(u.minutes, minute)
		}
	}
	if now.Sub(u.lastPrune) >= time.Hour {
		u.lastPrune = now
		if _, err := u.store.PruneUsage(ctx, now.Add(-u.retention)); err != nil {
			u.log.Debug("usage prune", "err", err)
		}
	}
}

// startObserving starts the usage publisher (if metering is on) under wg.
func (r *Router) startObserving(ctx context.Context, wg *sync.WaitGroup) {
	if r.usage == nil {
		return
	}
	wg.Add(1)
	go func() { defer wg.Done(); r.usage.run(ctx) }()
}

// stopObserving publishes the usage of the last requests and writes the
// rest of the access log; the proxy has served its last request.
func (r *Router) stopObserving() {
	if r.usage != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r.usage.flush(ctx, time.Now())
		cancel()
	}
	if r.proxy.obs.log != nil {
		r.proxy.obs.log.Close()
	}
}

// setUpObserving makes the usage publisher and registers the metrics of
// metering and the access log.
func (r *Router) setUpObserving() {
	o := &r.proxy.obs
	if o.meter != nil {
		r.usage = newUsagePublisher(o.meter, catalog.NewStore(r.consul, r.prefix), r.cfg.ID, r.cfg.Observe, r.log)
		r.metrics.Registry.MustRegister(r.usage.errors, r.usage.top, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchyard_router_usage_tenants",
			Help: "Tenants the usage meter holds records for (idle ones are forgotten).",
		}, func() float64 { return float64(o.meter.Tenants()) }))
	}
	if o.log != nil {
		r.metrics.Registry.MustRegister(o.log.lines, o.log.dropped)
	}
}

// usageTopN is how many tenants the busiest-tenants metric shows.
const usageTopN = 10

// setTop shows the busiest tenants of this harvest (under u.mu).
func (u *usagePublisher) setTop(acc map[int64]map[string]catalog.UsageCounts, now time.Time) {
	window := now.Sub(u.lastFlush).Seconds()
	u.lastFlush = now
	totals := map[string]uint64{}
	for _, tenants := range acc {
		for t, c := range tenants {
			totals[t] += c.Total()
		}
	}
	ids := make([]string, 0, len(totals))
	for t := range totals {
		ids = append(ids, t)
	}
	sort.Slice(ids, func(i, j int) bool {
		return totals[ids[i]] > totals[ids[j]] || totals[ids[i]] == totals[ids[j]] && ids[i] < ids[j]
	})
	u.top.Reset()
	if window <= 0 || window > time.Hour.Seconds() {
		return // the first flush: no window yet
	}
	for _, t := range ids[:min(len(ids), usageTopN)] {
		u.top.WithLabelValues(t).Set(float64(totals[t]) / window)
	}
}
