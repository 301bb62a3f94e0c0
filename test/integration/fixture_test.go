// Package integration holds Switchyard's integration and end-to-end tests.
// Every test here runs against real Consul and real PostgreSQL started by
// test/harness; nothing is faked.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
	"github.com/switchyard/switchyard/router"
	"github.com/switchyard/switchyard/test/harness"
)

var jwtSecret = []byte("integration-secret-0123456789abcdef")

// newMigrator builds a migrator, failing the test on a config it refuses.
func newMigrator(t testing.TB, client *api.Client, cfg migrator.Config) *migrator.Migrator {
	t.Helper()
	mg, err := migrator.New(client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return mg
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("SWITCHYARD_TEST_LOGS") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// echoBackend is a real HTTP backend registered in Consul. It answers with
// X-Served-By (its service name) and echoes what the router sent it.
type echoBackend struct {
	service string
	id      string
	srv     *http.Server
	ln      net.Listener
	addr    string
	mu      sync.Mutex
	seen    []http.Header
	handler http.Handler // optional extra routes
}

type echoReply struct {
	Service string      `json:"service"`
	Path    string      `json:"path"`
	Host    string      `json:"host"`
	Headers http.Header `json:"headers"`
}

func startBackend(t testing.TB, consul *api.Client, service string, extra http.Handler) *echoBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &echoBackend{service: service, ln: ln, addr: ln.Addr().String(), handler: extra}
	b.id = fmt.Sprintf("%s-%s", service, b.addr)
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if b.handler != nil && r.Header.Get("X-Test-Route") != "" {
			w.Header().Set("X-Served-By", service)
			b.handler.ServeHTTP(w, r)
			return
		}
		b.mu.Lock()
		b.seen = append(b.seen, r.Header.Clone())
		b.mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Served-By", service)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echoReply{Service: service, Path: r.URL.Path, Host: r.Host, Headers: r.Header})
	})
	b.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = b.srv.Serve(ln) }()
	_, port, _ := net.SplitHostPort(b.addr)
	p, _ := strconv.Atoi(port)
	err = consul.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: b.id, Name: service, Address: "127.0.0.1", Port: p,
		Check: &api.AgentServiceCheck{HTTP: "http://" + b.addr + "/livez", Interval: "300ms", Timeout: "2s", // a busy test machine must not fail a live backend's check
			DeregisterCriticalServiceAfter: "1m", Status: api.HealthPassing},
	})
	if err != nil {
		t.Fatalf("register %s: %v", service, err)
	}
	t.Cleanup(func() { b.kill(); _ = consul.Agent().ServiceDeregister(b.id) })
	return b
}

// kill closes the backend abruptly: listener and every connection.
func (b *echoBackend) kill() { _ = b.srv.Close() }

// stack is Consul, a catalog with one target per tier, backends and routers.
type stack struct {
	t      testing.TB
	consul *harness.Consul
	store  *catalog.Store
}

func newStack(t testing.TB) *stack {
	t.Helper()
	c := harness.ConsulT(t)
	s := &stack{t: t, consul: c, store: catalog.NewStore(c.Client(), "")}
	ctx := testContext(t)
	if err := s.store.Init(ctx, 64); err != nil {
		t.Fatal(err)
	}
	for _, tg := range []catalog.Target{
		{ID: "pool-1", Tier: catalog.TierShared, Service: "app-shared", DSN: "postgres://postgres@127.0.0.1:1/pool"},
		{ID: "pool-2", Tier: catalog.TierShared, Service: "app-shared-2", DSN: "postgres://postgres@127.0.0.1:1/pool2"},
		{ID: "db-1", Tier: catalog.TierDedicatedDB, Service: "app-shared", DSN: "postgres://postgres@127.0.0.1:1/postgres"},
		{ID: "cl-1", Tier: catalog.TierDedicatedCluster, Service: "app-cl-1", DSN: "postgres://postgres@127.0.0.1:2/app"},
	} {
		if err := s.store.CreateTarget(ctx, tg); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *stack) tenant(id, plan string, tier catalog.Tier, target string) {
	s.t.Helper()
	if _, err := s.store.CreateTenant(context.Background(), catalog.Tenant{ID: id, Plan: plan, Tier: tier, Target: target}); err != nil {
		s.t.Fatal(err)
	}
}

type runningRouter struct {
	*router.Router
	url    string
	admin  string
	cancel context.CancelFunc
	done   chan error
}

func (s *stack) router(edit func(*router.Config)) *runningRouter {
	s.t.Helper()
	return startRouter(s.t, s.consul.Client(), edit)
}

func startRouter(t testing.TB, client *api.Client, edit func(*router.Config)) *runningRouter {
	t.Helper()
	cfg := router.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		Extract: router.ExtractConfig{BaseDomain: "saas.test", PathPrefix: true, JWTSecret: jwtSecret},
		Breaker: router.BreakerConfig{ConsecutiveFailures: 3, OpenTimeout: 2 * time.Second},
	}
	if edit != nil {
		edit(&cfg)
	}
	r, err := router.New(cfg, client, "", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rr := &runningRouter{Router: r, cancel: cancel, done: make(chan error, 1)}
	go func() { rr.done <- r.Run(ctx) }()
	p, a, err := r.Addrs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rr.url, rr.admin = "http://"+p, "http://"+a
	t.Cleanup(func() {
		cancel()
		select {
		case <-rr.done:
		case <-time.After(10 * time.Second):
			t.Error("router did not stop")
		}
	})
	waitFor(t, 15*time.Second, "router ready", func() bool {
		resp, err := shortClient.Get(rr.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return rr
}

// testDeadline bounds every call a test makes: a stuck call fails the test
// with its name instead of hanging the package until go test's timeout.
const testDeadline = 4 * time.Minute

// testContext is the context for a test's calls. Call it first in a test, so
// its cancel runs after every other cleanup.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	t.Cleanup(cancel)
	return ctx
}

// shortClient is for admin and API calls: a stuck server fails the call.
var shortClient = &http.Client{Timeout: 30 * time.Second}

func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// get sends a request for a tenant by path prefix and decodes the echo.
func get(t testing.TB, client *http.Client, url string, headers map[string]string) (*http.Response, echoReply) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var e echoReply
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
	} else {
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	return resp, e
}

// getLoop is a well-behaved client: one goroutine per URL sending GETs
// until halted, counting answers other than 200 as failures.
type getLoop struct {
	total, failed atomic.Int64
	stop          chan struct{}
	wg            sync.WaitGroup
}

func startGetLoop(hc *http.Client, urls []string, pace time.Duration) *getLoop {
	g := &getLoop{stop: make(chan struct{})}
	for _, u := range urls {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			for {
				select {
				case <-g.stop:
					return
				default:
				}
				resp, err := hc.Get(u)
				g.total.Add(1)
				if err != nil {
					g.failed.Add(1)
				} else {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						g.failed.Add(1)
					}
				}
				time.Sleep(pace)
			}
		}()
	}
	return g
}

// halt stops the loop and returns how many requests it sent and how many failed.
func (g *getLoop) halt() (total, failed int64) {
	close(g.stop)
	g.wg.Wait()
	return g.total.Load(), g.failed.Load()
}
