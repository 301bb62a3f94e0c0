package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router/wire"
)

// Router is a whole router process: catalog watcher, backend pools, the
// proxy listener and the admin listener.
type Router struct {
	cfg       Config
	prefix    string
	log       *slog.Logger
	consul    *api.Client
	watcher   *catalog.Watcher
	upstreams *Upstreams
	metrics   *Metrics
	inflight  *Inflight
	proxy     *Proxy
	lease     *lease
	usage     *usagePublisher // nil: metering off
	certs     *certStore      // nil: no TLS listener

	mu              sync.Mutex
	proxyAddr       net.Addr
	adminAddr       net.Addr
	tlsAddr         net.Addr // nil: no TLS listener
	listening       chan struct{}
	shuttingDown    chan struct{}
	shutdownStarted sync.Once
}

// New builds a router. Run starts it.
func New(cfg Config, consul *api.Client, catalogPrefix string, log *slog.Logger) (*Router, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("router config: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "router", "router_id", cfg.ID)
	w, err := catalog.NewWatcher(consul, catalog.WatcherConfig{Prefix: catalogPrefix, Logger: log})
	if err != nil {
		return nil, err
	}
	m := NewMetrics()
	r := &Router{cfg: cfg, prefix: catalogPrefix, log: log, consul: consul, watcher: w, metrics: m, inflight: NewInflight(),
		listening: make(chan struct{}), shuttingDown: make(chan struct{})}
	r.upstreams = NewUpstreams(consul.Health(), cfg.Breaker, log, m)
	r.proxy = NewProxy(cfg, w, r.upstreams, m, r.inflight, log)
	r.lease = &lease{ttl: cfg.LeaseTTL}
	r.proxy.lease = r.lease
	r.setUpObserving()
	if cfg.TLS.Listen != "" {
		r.certs = newCertStore(cfg.TLS, cfg.Extract.BaseDomain, consul.KV(), catalogPrefix, log, m.Registry)
	}
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchyard_router_catalog_age_seconds",
			Help: "Seconds since the catalog snapshot was last confirmed current with Consul.",
		}, func() float64 { return w.Age().Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchyard_router_catalog_version",
			Help: "Consul index of the catalog manifest the snapshot reflects.",
		}, func() float64 { return float64(w.Snapshot().ManifestIndex) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchyard_router_lease_valid",
			Help: "1 while the router's lease lets it forward (its Consul session certainly alive), else 0.",
		}, func() float64 {
			if r.lease.valid() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchyard_router_catalog_tenants",
			Help: "Tenants in the catalog snapshot.",
		}, func() float64 { return float64(w.Snapshot().Len()) }),
	)
	return r, nil
}

// Watcher exposes the catalog watcher (tests and the dev stack).
func (r *Router) Watcher() *catalog.Watcher { return r.watcher }

// Inflight exposes the per-tenant in-flight counter.
func (r *Router) Inflight() *Inflight { return r.inflight }

// Handler is the proxy handler, for embedding and benchmarks.
func (r *Router) Handler() http.Handler { return r.proxy }

// Addrs returns the bound proxy and admin addresses once listening.
func (r *Router) Addrs(ctx context.Context) (proxy, admin string, err error) {
	select {
	case <-r.listening:
	case <-ctx.Done():
		return "", "", ctx.Err()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proxyAddr.String(), r.adminAddr.String(), nil
}

// TLSAddr returns the bound TLS address once listening ("" if none).
func (r *Router) TLSAddr(ctx context.Context) (string, error) {
	select {
	case <-r.listening:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tlsAddr == nil {
		return "", nil
	}
	return r.tlsAddr.String(), nil
}

// listen binds the proxy, admin and (if configured) TLS listeners.
func (r *Router) listen() (pl, al, tl net.Listener, err error) {
	if pl, err = net.Listen("tcp", r.cfg.Listen); err != nil {
		return nil, nil, nil, fmt.Errorf("router listen: %w", err)
	}
	if al, err = net.Listen("tcp", r.cfg.AdminListen); err != nil {
		pl.Close()
		return nil, nil, nil, fmt.Errorf("admin listen: %w", err)
	}
	if r.certs != nil {
		if tl, err = net.Listen("tcp", r.cfg.TLS.Listen); err != nil {
			pl.Close()
			al.Close()
			return nil, nil, nil, fmt.Errorf("tls listen: %w", err)
		}
	}
	r.mu.Lock()
	r.proxyAddr, r.adminAddr = pl.Addr(), al.Addr()
	if tl != nil {
		r.tlsAddr = tl.Addr()
	}
	r.mu.Unlock()
	close(r.listening)
	return pl, al, tl, nil
}

// frontServer is what serves a listener: the fast path, or net/http.
type frontServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

var (
	_ frontServer = (*wire.Server)(nil)
	_ frontServer = (*http.Server)(nil)
)

// Run serves until ctx ends, then drains in-flight requests (up to
// ShutdownTimeout) and stops.
func (r *Router) Run(ctx context.Context) error {
	pl, al, tl, err := r.listen()
	if err != nil {
		return err
	}

	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); _ = r.watcher.Run(bg) }()
	go func() { defer wg.Done(); r.proxy.limits.runShares(bg, catalog.NewStore(r.consul, r.prefix), r.cfg.ID) }()
	go func() { defer wg.Done(); r.syncUpstreams(bg) }()
	acks := &acknowledger{r: r, store: catalog.NewStore(r.consul, r.prefix), acked: map[string]uint64{}}
	go func() { defer wg.Done(); acks.run(bg) }()
	r.startObserving(bg, &wg)

	var front frontServer = newFrontServer(r.proxy, r.cfg, r.log)
	if r.cfg.TLS.RedirectHTTPS {
		front = newRedirectServer(r.cfg, tl.Addr(), r.log)
	}
	adminSrv := &http.Server{Handler: r.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 3)
	go func() { errc <- front.Serve(pl) }()
	go func() { errc <- adminSrv.Serve(al) }()
	var tlsSrv *wire.Server
	if tl != nil {
		wg.Add(1)
		go func() { defer wg.Done(); r.certs.run(bg) }()
		tlsSrv = newTLSFrontServer(r.proxy, r.cfg, r.certs, r.log)
		go func() { errc <- tlsSrv.Serve(tl) }()
		r.log.Info("router listening for TLS", "tls", tl.Addr().String())
	}
	r.log.Info("router listening", "proxy", pl.Addr().String(), "admin", al.Addr().String())

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			runErr = err
		}
	}
	r.shutdownStarted.Do(func() { close(r.shuttingDown) })
	r.log.Info("router shutting down; draining in-flight requests", "timeout", r.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
	defer cancel()
	tlsDone := make(chan error, 1)
	if tlsSrv != nil {
		go func() { tlsDone <- tlsSrv.Shutdown(sctx) }() // drained alongside the plaintext listener
	} else {
		tlsDone <- nil
	}
	if err := front.Shutdown(sctx); err != nil {
		r.log.Warn("drain incomplete", "err", err)
	}
	if err := <-tlsDone; err != nil {
		r.log.Warn("TLS drain incomplete", "err", err)
	}
	_ = adminSrv.Shutdown(sctx)
	r.stopObserving()
	stopBG()
	wg.Wait()
	r.upstreams.Close()
	r.proxy.transport.CloseIdleConnections()
	r.proxy.fastTransport.CloseIdleConnections()
	r.proxy.h2c.CloseIdleConnections()
	r.proxy.h2.CloseIdleConnections()
	r.log.Info("router stopped")
	return runErr
}

// upstreamsSynced reports whether a pool is watched for every service the
// targets name (the sync runs just after each snapshot swap).
func (r *Router) upstreamsSynced(targets map[string]*catalog.Target) bool {
	for _, t := range targets {
		if r.upstreams.pool(t.Service) == nil {
			return false
		}
	}
	return true
}

// syncUpstreams watches every backend service any target names.
func (r *Router) syncUpstreams(ctx context.Context) {
	for {
		snap := r.watcher.Snapshot()
		services := make(map[string]struct{})
		for _, t := range snap.Targets() {
			services[t.Service] = struct{}{}
		}
		r.upstreams.Sync(ctx, services)
		select {
		case <-snap.Changed():
		case <-ctx.Done():
			return
		}
	}
}

func (r *Router) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		snap := r.watcher.Snapshot()
		body := map[string]any{
			"catalog_version": snap.ManifestIndex,
			"tenants":         snap.Len(),
			"targets":         len(snap.Targets()),
			"catalog_age_ms":  r.watcher.Age().Milliseconds(),
			"last_error":      r.watcher.LastError(),
			"lease_valid":     r.lease.valid(),
		}
		if r.certs != nil {
			body["tls"] = r.certs.status(time.Now())
		}
		select {
		case <-r.shuttingDown:
			body["status"] = "shutting down"
			writeJSON(w, http.StatusServiceUnavailable, body)
			return
		default:
		}
		select {
		case <-r.watcher.Ready():
			if !r.upstreams.Loaded() || !r.upstreamsSynced(r.watcher.Snapshot().Targets()) {
				body["status"] = "backend health not loaded"
				writeJSON(w, http.StatusServiceUnavailable, body)
				return
			}
			if !r.lease.valid() {
				body["status"] = "no lease: not registered with Consul, or lost it"
				writeJSON(w, http.StatusServiceUnavailable, body)
				return
			}
			if !r.certsLoaded() {
				body["status"] = "tls certificates not loaded"
				writeJSON(w, http.StatusServiceUnavailable, body)
				return
			}
			body["status"] = "ready"
			writeJSON(w, http.StatusOK, body)
		default:
			body["status"] = "catalog not loaded"
			writeJSON(w, http.StatusServiceUnavailable, body)
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.metrics.Registry, promhttp.HandlerOpts{}))
	if r.cfg.AdminPprof {
		registerPprof(mux)
	}
	return mux
}

// certsLoaded: no TLS listener, or its certificates have been read once.
func (r *Router) certsLoaded() bool {
	if r.certs == nil {
		return true
	}
	select {
	case <-r.certs.loaded:
		return true
	default:
		return false
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
