package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

// Server is one controller replica. Every replica serves the API; the one
// holding the leader lock also runs moves.
type Server struct {
	cfg      Config
	client   *api.Client
	store    *catalog.Store
	migrator *migrator.Migrator
	watcher  *catalog.Watcher
	log      *slog.Logger
	engine   *gin.Engine
	leader   atomic.Bool
	metrics  *metrics
	idem     *idemStore
	jobs     *backupJobs
	console  *console

	mu      sync.Mutex
	running map[string]bool // moves this replica is running
	addr    net.Addr
	ready   chan struct{}
}

type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	leader   prometheus.Gauge
	moves    *prometheus.GaugeVec
}

// New builds a controller replica.
func New(cfg Config, client *api.Client) (*Server, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("controller config: %w", err)
	}
	log := cfg.Logger.With("component", "controller", "replica", cfg.ID)
	s := &Server{cfg: cfg, client: client, store: catalog.NewStore(client, cfg.Prefix), log: log,
		running: map[string]bool{}, ready: make(chan struct{}), jobs: newBackupJobs()}
	s.idem = newIdemStore(client, s.store.IdempotencyPrefix(), cfg.IdempotencyTTL, cfg.IdempotencyWait, log)
	mg, err := migrator.New(client, migrator.Config{Prefix: cfg.Prefix, ID: cfg.ID, Logger: cfg.Logger, LockTTL: cfg.LeaderTTL, Hooks: cfg.MoveHooks})
	if err != nil {
		return nil, err
	}
	s.migrator = mg
	w, err := catalog.NewWatcher(client, catalog.WatcherConfig{Prefix: cfg.Prefix, Logger: log})
	if err != nil {
		return nil, err
	}
	s.watcher = w
	s.metrics = newMetrics()
	if s.console, err = newConsole(); err != nil {
		return nil, err
	}
	gin.SetMode(gin.ReleaseMode)
	s.engine = s.routes()
	return s, nil
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_controller_requests_total", Help: "API requests by route and code."}, []string{"route", "code"}),
		latency:  prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "switchyard_controller_request_seconds", Help: "API latency by route.", Buckets: prometheus.DefBuckets}, []string{"route"}),
		leader:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchyard_controller_leader", Help: "1 if this replica holds the leader lock."}),
		moves:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "switchyard_controller_moves", Help: "Moves by phase and status, as the leader last saw them."}, []string{"phase", "status"}),
	}
	m.registry.MustRegister(m.requests, m.latency, m.leader, m.moves, migrator.SwitchStepSeconds, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler is the API handler (tests drive it directly too).
func (s *Server) Handler() http.Handler { return s.engine }

// Addr is the bound address once Run is listening.
func (s *Server) Addr(ctx context.Context) (string, error) {
	select {
	case <-s.ready:
		return s.addr.String(), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// IsLeader reports whether this replica runs the moves.
func (s *Server) IsLeader() bool { return s.leader.Load() }

// Run serves the API and competes for leadership until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("controller listen: %w", err)
	}
	s.addr = ln.Addr()
	close(s.ready)
	srv := &http.Server{Handler: s.engine, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 90 * time.Second, MaxHeaderBytes: 64 << 10}
	srv.RegisterOnShutdown(s.console.stop) // live console streams end
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	bg, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.campaign(bg) }()
	go func() { defer wg.Done(); _ = s.watcher.Run(bg) }()
	s.log.Info("controller listening", "addr", ln.Addr().String())
	var runErr error
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			runErr = err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	stop()
	wg.Wait()
	s.log.Info("controller stopped")
	return runErr
}

// maxBody bounds a request body.
const maxBody = 1 << 20

func jsonDecoder(r io.Reader) *json.Decoder {
	d := json.NewDecoder(io.LimitReader(r, maxBody))
	d.DisallowUnknownFields()
	return d
}

func tokenID(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:4])
}

func (s *Server) routes() *gin.Engine {
	e := gin.New()
	e.Use(s.observe(), gin.CustomRecovery(func(c *gin.Context, err any) {
		s.log.Error("panic in handler", "err", err)
		fail(c, http.StatusInternalServerError, "internal", "internal error")
	}))
	e.HandleMethodNotAllowed = true
	e.NoRoute(func(c *gin.Context) { fail(c, http.StatusNotFound, "no_route", "no such endpoint") })
	e.NoMethod(func(c *gin.Context) {
		fail(c, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed here")
	})

	e.GET("/livez", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", gin.WrapH(promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{})))
	e.GET("/v1/openapi.json", func(c *gin.Context) { c.Data(http.StatusOK, "application/json", openAPIDoc) })

	read := s.auth(RoleViewer, RoleBilling, RoleOperator)
	billing := s.auth(RoleBilling, RoleOperator)
	operator := s.auth(RoleOperator)
	v1 := e.Group("/v1")
	v1.GET("/tenants", read, s.listTenants)
	v1.POST("/tenants", billing, s.idempotent(), s.createTenant)
	v1.GET("/tenants/:id", read, s.getTenant)
	v1.PUT("/tenants/:id/plan", billing, s.setPlan)
	v1.PUT("/tenants/:id/residency", billing, s.setResidency)
	v1.DELETE("/tenants/:id", operator, s.offboardTenant)
	v1.GET("/targets", read, s.listTargets)
	v1.POST("/targets", operator, s.idempotent(), s.registerTarget)
	v1.POST("/targets/:id/cordon", operator, s.idempotent(), s.cordonTarget)
	v1.POST("/targets/:id/drain", operator, s.idempotent(), s.drainTarget)
	v1.GET("/moves", read, s.listMoves)
	v1.GET("/moves/:id", read, s.getMove)
	v1.POST("/moves/:id/abort", operator, s.idempotent(), s.abortMove)
	v1.POST("/moves/:id/retry", operator, s.idempotent(), s.retryMove)
	v1.POST("/rebalance", operator, s.idempotent(), s.rebalance)
	v1.GET("/audit", read, s.listAudit)
	v1.GET("/tenants/:id/usage", read, s.tenantUsage)
	v1.GET("/usage/export", billing, s.exportUsage)
	v1.POST("/webhooks/billing", s.billingWebhook)
	s.limitsRoutes(v1, read, billing, operator)
	s.domainsRoutes(v1, read, operator)
	s.backupRoutes(v1, read, operator)
	s.certificateRoutes(v1, operator)
	s.consoleRoutes(e)
	return e
}

func (s *Server) observe() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		s.metrics.requests.WithLabelValues(route, fmt.Sprint(c.Writer.Status())).Inc()
		s.metrics.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
		if c.Writer.Status() >= 500 || len(c.Errors) > 0 {
			s.log.Warn("request failed", "route", route, "status", c.Writer.Status(), "errors", c.Errors.String())
		}
	}
}

func (s *Server) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	_, err := s.client.Status().Leader()
	_ = ctx
	body := gin.H{"leader": s.leader.Load(), "replica": s.cfg.ID}
	if err != nil {
		body["status"] = "consul unreachable"
		c.JSON(http.StatusServiceUnavailable, body)
		return
	}
	body["status"] = "ready"
	c.JSON(http.StatusOK, body)
}

// Routes lists the API's routes (the OpenAPI test compares them).
func (s *Server) Routes() gin.RoutesInfo { return s.engine.Routes() }
