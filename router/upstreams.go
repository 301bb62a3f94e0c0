package router

import (
	"context"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/internal/watch"
)

// HealthSource is what the upstream pools need from Consul: a blocking query
// for the passing instances of a service.
type HealthSource interface {
	Service(service, tag string, passingOnly bool, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error)
}

var _ HealthSource = (*api.Health)(nil)

// upstream is one backend instance with its circuit breakers.
type upstream struct {
	addr    string // host:port
	service string
	breaker *breaker       // shared by every tenant
	tenants tenantBreakers // per tenant, while it fails here
}

// pool is the healthy instances of one Consul service, swapped whole.
type pool struct {
	service   string
	instances atomic.Pointer[[]*upstream]
	next      atomic.Uint32 // round-robin cursor
	loaded    atomic.Bool
	cancel    context.CancelFunc
	done      chan struct{}
}

// Upstreams keeps a pool of healthy backends per Consul service, each
// watched with a blocking health query, never queried per request.
type Upstreams struct {
	health  HealthSource
	breaker BreakerConfig
	log     *slog.Logger
	metrics *Metrics

	mu    sync.Mutex
	pools map[string]*pool
	// all upstreams by service and address, so a breaker survives a
	// health update that keeps the instance.
	known map[string]*upstream
	view  atomic.Pointer[map[string]*pool]
}

// NewUpstreams returns an empty set; Sync decides which services to watch.
func NewUpstreams(health HealthSource, breaker BreakerConfig, log *slog.Logger, m *Metrics) *Upstreams {
	u := &Upstreams{health: health, breaker: breaker, log: log, metrics: m, pools: map[string]*pool{}, known: map[string]*upstream{}}
	empty := map[string]*pool{}
	u.view.Store(&empty)
	return u
}

// pool returns the pool of a service, or nil if it is not watched.
func (u *Upstreams) pool(service string) *pool {
	return (*u.view.Load())[service]
}

// Sync starts watching services that are new and stops those no longer
// named. It is cheap when nothing changed.
func (u *Upstreams) Sync(ctx context.Context, services map[string]struct{}) {
	u.mu.Lock()
	defer u.mu.Unlock()
	changed := false
	for s := range services {
		if _, ok := u.pools[s]; ok {
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		p := &pool{service: s, cancel: cancel, done: make(chan struct{})}
		empty := []*upstream{}
		p.instances.Store(&empty)
		u.pools[s] = p
		changed = true
		go u.watch(pctx, p)
	}
	for s, p := range u.pools {
		if _, ok := services[s]; !ok {
			p.cancel()
			delete(u.pools, s)
			changed = true
		}
	}
	if changed {
		view := make(map[string]*pool, len(u.pools))
		for s, p := range u.pools {
			view[s] = p
		}
		u.view.Store(&view)
	}
}

// Loaded reports whether every watched pool has loaded its instances once.
func (u *Upstreams) Loaded() bool {
	for _, p := range *u.view.Load() {
		if !p.loaded.Load() {
			return false
		}
	}
	return true
}

// Wait blocks until every watched pool has loaded once, or ctx ends.
func (u *Upstreams) Wait(ctx context.Context) error {
	for {
		all := true
		for _, p := range *u.view.Load() {
			if !p.loaded.Load() {
				all = false
			}
		}
		if all {
			return nil
		}
		if err := retry.Sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
}

// Close stops every watch.
func (u *Upstreams) Close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, p := range u.pools {
		p.cancel()
	}
	for _, p := range u.pools {
		<-p.done
	}
}

func (u *Upstreams) watch(ctx context.Context, p *pool) {
	defer close(p.done)
	l := &watch.Loop{
		Name:   "health " + p.service,
		Logger: u.log.With("service", p.service),
		Fetch:  func(ctx context.Context, index uint64) (uint64, error) { return u.watchOnce(ctx, p, index) },
	}
	l.Run(ctx) // a failed query keeps the last instances
}

// watchOnce waits for the passing instances of p's service to change after
// index, and swaps them in.
func (u *Upstreams) watchOnce(ctx context.Context, p *pool, index uint64) (uint64, error) {
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute}).WithContext(ctx)
	entries, meta, err := u.health.Service(p.service, "", true, q)
	if err != nil {
		return index, err
	}
	addrs := make([]string, 0, len(entries))
	for _, e := range entries {
		host := e.Service.Address
		if host == "" {
			host = e.Node.Address
		}
		addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(e.Service.Port)))
	}
	sort.Strings(addrs)
	u.setInstances(p, addrs)
	p.loaded.Store(true)
	return meta.LastIndex, nil
}

// setInstances replaces a pool's instances, keeping the breakers of those
// that stay.
func (u *Upstreams) setInstances(p *pool, addrs []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	list := make([]*upstream, 0, len(addrs))
	for _, a := range addrs {
		key := p.service + "|" + a
		up, ok := u.known[key]
		if !ok {
			up = u.newUpstream(p.service, a)
			u.known[key] = up
		}
		list = append(list, up)
	}
	old := *p.instances.Load()
	p.instances.Store(&list)
	if u.metrics != nil {
		u.metrics.healthyInstances.WithLabelValues(p.service).Set(float64(len(list)))
	}
	if len(old) != len(list) {
		u.log.Info("backend instances changed", "service", p.service, "healthy", len(list), "was", len(old))
	}
}

func (u *Upstreams) newUpstream(service, addr string) *upstream {
	return &upstream{addr: addr, service: service, breaker: u.instanceBreaker(service, addr)}
}
