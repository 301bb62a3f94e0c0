package orders

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/catalog"
)

// HTTP server timeouts.
const (
	readHeaderTimeout = 5 * time.Second
	idleTimeout       = 90 * time.Second
)

// ginModeOnce puts gin in release mode (no debug route dump) once per
// process, unless GIN_MODE says otherwise.
var ginModeOnce sync.Once

// Server is one instance of the orders app: an HTTP listener, a catalog
// watcher, the database pools and the Consul registration.
type Server struct {
	cfg     Config
	log     *slog.Logger
	watcher *catalog.Watcher
	pools   *pools
	metrics *metrics
	http    *http.Server

	// serviceID and addr are set once by Start, before serving begins.
	serviceID atomic.Pointer[string]
	addr      atomic.Pointer[string]
	ln        net.Listener // guarded by mu

	mu         sync.Mutex
	started    bool
	stopped    bool
	registered bool
	stopWatch  context.CancelFunc // stops the catalog watcher
	watchDone  sync.WaitGroup
	stopReg    context.CancelFunc // stops the registration loop
	regDone    sync.WaitGroup
	serveDone  chan struct{}
	draining   atomic.Bool
}

// New validates cfg and builds a server. Start runs it.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ginModeOnce.Do(func() {
		if os.Getenv(gin.EnvGinMode) == "" {
			gin.SetMode(gin.ReleaseMode)
		}
	})
	log := cfg.Logger.With("component", "orders", "service", cfg.ServiceName)
	w, err := catalog.NewWatcher(cfg.Consul, catalog.WatcherConfig{Prefix: cfg.CatalogPrefix, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("orders: catalog watcher: %w", err)
	}
	s := &Server{cfg: cfg, log: log, watcher: w, pools: newPools()}
	s.serviceID.Store(&cfg.ServiceID)
	s.metrics = newMetrics(s.pools)
	s.http = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Start listens, starts the catalog watcher and, if Config.Register is set,
// registers the instance in Consul. It returns once the listener is open;
// requests get 503 not_ready until the first catalog snapshot is loaded. ctx
// bounds only the start-up: call Stop to stop the server.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return errors.New("orders: server already started or stopped")
	}
	s.started = true

	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("orders: listen on %s: %w", s.cfg.Listen, err)
	}
	s.ln = ln
	addr := ln.Addr().String()
	s.addr.Store(&addr)
	if id := s.cfg.ServiceID; id == "" {
		id = s.cfg.ServiceName + "-" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		s.serviceID.Store(&id)
	}

	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	s.stopWatch = stopWatch
	s.watchDone.Go(func() {
		if err := s.watcher.Run(watchCtx); err != nil {
			s.log.Error("catalog watcher stopped", "err", err)
		}
	})
	s.serveDone = make(chan struct{})
	go func() {
		defer close(s.serveDone)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	s.log.Info("orders app listening", "addr", addr, "service_id", s.ServiceID())

	if s.cfg.Register {
		if err := s.Register(ctx); err != nil {
			_ = s.shutdownLocked(context.Background())
			return err
		}
		s.registered = true
		regCtx, stopReg := context.WithCancel(context.WithoutCancel(ctx))
		s.stopReg = stopReg
		s.regDone.Go(func() { s.keepRegistered(regCtx) })
	}
	return nil
}

// Addr returns the address the server listens on ("" before Start).
func (s *Server) Addr() string {
	if p := s.addr.Load(); p != nil {
		return *p
	}
	return ""
}

// ServiceID returns the instance's Consul service ID (known after Start when
// Config.ServiceID is empty).
func (s *Server) ServiceID() string { return *s.serviceID.Load() }

// Watcher returns the server's catalog watcher.
func (s *Server) Watcher() *catalog.Watcher { return s.watcher }

// Stop shuts the server down gracefully: /readyz turns 503, the instance is
// deregistered from Consul, Config.DrainDelay passes, in-flight requests
// finish (until ctx is done, when the rest are cut off), the watcher stops
// and the database pools close. It is safe to call more than once.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	return s.shutdownLocked(ctx)
}

// shutdownLocked does Stop's work; s.mu is held.
func (s *Server) shutdownLocked(ctx context.Context) error {
	s.stopped = true
	s.draining.Store(true)
	var errs []error
	if s.stopReg != nil {
		// Stop the re-registration loop before deregistering, so it cannot
		// put the instance back.
		s.stopReg()
		s.regDone.Wait()
	}
	if s.registered {
		if err := s.Deregister(ctx); err != nil {
			errs = append(errs, err)
		}
		s.registered = false
		if d := s.cfg.DrainDelay; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
	}
	if s.ln != nil {
		if err := s.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("orders: drain: %w", err))
			_ = s.http.Close()
		}
		<-s.serveDone
	}
	if s.stopWatch != nil {
		s.stopWatch()
		s.watchDone.Wait()
	}
	if err := s.pools.close(); err != nil {
		errs = append(errs, err)
	}
	s.log.Info("orders app stopped")
	return errors.Join(errs...)
}
