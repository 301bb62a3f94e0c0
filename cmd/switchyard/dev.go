package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/switchyard/switchyard/backup"
	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/examples/orders"
	"github.com/switchyard/switchyard/internal/devstack"
	"github.com/switchyard/switchyard/router"
)

// devStack is everything `switchyard dev` runs, in start order.
type devStack struct {
	dataDir string
	log     *slog.Logger
	// consulBin and pgBin locate the binaries ("": devstack's defaults).
	consulBin, pgBin string
	consul           *devstack.Consul
	pg               map[string]*devstack.Postgres
	apps             []*orders.Server
	mu               sync.Mutex
	stops            []func()
	secret           []byte
	routerOn         string
	adminOn          string

	controllerOn string
	tokens       map[string]string // role → token
	hookSecret   []byte
}

func runDev(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	dataDir := fs.String("data", ".data", "where the stack keeps its data (survives restarts)")
	listen := fs.String("listen", "127.0.0.1:8080", "router listen address")
	admin := fs.String("admin", "127.0.0.1:9080", "router admin address")
	ctlListen := fs.String("controller", "127.0.0.1:7070", "control API address")
	logLevel := fs.String("log-level", "warn", "debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// PostgreSQL runs as the postgres user when we are root: it must reach the data dir.
	_ = os.Chmod(dir, 0o755)
	d := &devStack{dataDir: dir, log: newLogger(*logLevel), pg: map[string]*devstack.Postgres{}, routerOn: *listen, adminOn: *admin, controllerOn: *ctlListen,
		consulBin: os.Getenv("SWITCHYARD_CONSUL"), pgBin: os.Getenv("SWITCHYARD_PG_BIN")}
	defer d.stop()
	if err := d.start(ctx, *listen, *admin); err != nil {
		return err
	}
	d.printWelcome()
	<-ctx.Done()
	fmt.Println("\nswitchyard dev: stopping…")
	return nil
}

func (d *devStack) stop() {
	d.mu.Lock()
	stops := d.stops
	d.stops = nil
	d.mu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
}

func (d *devStack) onStop(f func()) {
	d.mu.Lock()
	d.stops = append(d.stops, f)
	d.mu.Unlock()
}

// startCluster starts dedicated cluster n beyond the seeded ones: its own
// PostgreSQL (data in pg-cluster-<n>) with the app schema, and an app
// instance registered as app-cl-<n>. It returns the target to register.
func (d *devStack) startCluster(ctx context.Context, n int) (catalog.Target, error) {
	name := fmt.Sprintf("cluster-%d", n)
	pg, err := d.startPostgres(ctx, name)
	if err != nil {
		return catalog.Target{}, err
	}
	if err := pg.CreateDatabase(ctx, "app"); err != nil {
		return catalog.Target{}, err
	}
	if err := ensureSchema(ctx, pg.DSN("app")); err != nil {
		return catalog.Target{}, err
	}
	service := fmt.Sprintf("app-cl-%d", n)
	app, err := d.startApp(ctx, service)
	if err != nil {
		return catalog.Target{}, err
	}
	d.step(fmt.Sprintf("PostgreSQL %-10s at %s, orders app %s at http://%s", name, pg.Addr(), service, app.Addr()))
	return catalog.Target{ID: fmt.Sprintf("cl-%d", n), Tier: catalog.TierDedicatedCluster, Service: service, DSN: pg.DSN("app"),
		Capacity: catalog.Capacity{Tenants: 1}, Labels: map[string]string{"region": "local"}}, nil
}

func (d *devStack) step(msg string) { fmt.Printf("  • %s\n", msg) }

func (d *devStack) start(ctx context.Context, listen, admin string) error {
	fmt.Println("switchyard dev: starting the local stack (data in " + d.dataDir + ")")
	if err := d.startServers(ctx); err != nil {
		return err
	}
	if err := d.seed(ctx); err != nil {
		return err
	}
	if err := d.startApps(ctx); err != nil {
		return err
	}
	if err := d.restoreClusters(ctx); err != nil {
		return err
	}
	if err := d.startRouter(ctx, listen, admin); err != nil {
		return err
	}
	if err := d.startController(ctx); err != nil {
		return err
	}
	lctx, lcancel := context.WithCancel(context.Background())
	ldone := make(chan struct{})
	go func() { d.load(lctx); close(ldone) }()
	d.onStop(func() { lcancel(); <-ldone })
	d.step("steady load running through the router (acme, hooli, globex, initech); a tally prints every 15s")
	return nil
}

// startServers starts Consul and the four seeded PostgreSQL servers.
func (d *devStack) startServers(ctx context.Context) error {
	var err error
	d.consul, err = devstack.StartConsul(ctx, devstack.ConsulOptions{Binary: d.consulBin, DataDir: filepath.Join(d.dataDir, "consul"), LogOutput: d.logFile("consul.log")})
	if err != nil {
		return fmt.Errorf("consul: %w", err)
	}
	d.onStop(func() { _ = d.consul.Stop() })
	d.step("Consul at http://" + d.consul.HTTPAddr())
	for _, name := range []string{"pool", "dedicated", "cluster-1", "cluster-2"} {
		pg, err := d.startPostgres(ctx, name)
		if err != nil {
			return err
		}
		d.pg[name] = pg
		d.step(fmt.Sprintf("PostgreSQL %-10s at %s", name, pg.Addr()))
	}
	return nil
}

// startPostgres starts the PostgreSQL server named name, its data in
// pg-<name>, and stops it with the stack.
func (d *devStack) startPostgres(ctx context.Context, name string) (*devstack.Postgres, error) {
	pg, err := devstack.StartPostgres(ctx, devstack.PostgresOptions{
		BinDir: d.pgBin, DataDir: filepath.Join(d.dataDir, "pg-"+name), LogOutput: d.logFile("pg-" + name + ".log"),
		Settings: map[string]string{"fsync": "on"},
	})
	if err != nil {
		return nil, fmt.Errorf("postgres %s: %w", name, err)
	}
	d.onStop(func() { _ = pg.Stop() })
	return pg, nil
}

// startApp starts an orders app instance registered as service, and stops
// it with the stack.
func (d *devStack) startApp(ctx context.Context, service string) (*orders.Server, error) {
	cfg := orders.DefaultConfig(service, d.consul.Client())
	cfg.Logger = d.log
	app, err := orders.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := app.Start(ctx); err != nil {
		return nil, fmt.Errorf("app %s: %w", service, err)
	}
	d.onStop(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = app.Stop(sctx)
	})
	return app, nil
}

// startApps starts the seeded targets' orders app instances.
func (d *devStack) startApps(ctx context.Context) error {
	for _, service := range []string{"app-shared", "app-shared", "app-cl-1", "app-cl-2"} {
		app, err := d.startApp(ctx, service)
		if err != nil {
			return err
		}
		d.apps = append(d.apps, app)
		d.step(fmt.Sprintf("orders app %-10s at http://%s", service, app.Addr()))
	}
	return nil
}

// restoreClusters brings back the clusters provisioned on demand in earlier
// runs.
func (d *devStack) restoreClusters(ctx context.Context) error {
	extra, _ := filepath.Glob(filepath.Join(d.dataDir, "pg-cluster-*"))
	for _, dir := range extra {
		// Only the data directories (the glob also matches their logs).
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "pg-cluster-"))
		if st, serr := os.Stat(dir); err != nil || n < 3 || serr != nil || !st.IsDir() {
			continue
		}
		t, err := d.startCluster(ctx, n)
		if err != nil {
			return err
		}
		if _, err := catalog.NewStore(d.consul.Client(), "").UpdateTarget(ctx, t.ID, func(cur *catalog.Target) error { cur.DSN = t.DSN; return nil }); err != nil {
			d.log.Warn("provisioned cluster not in the catalog", "target", t.ID, "err", err)
		}
	}
	return nil
}

// startRouter starts the router and waits until it serves every demo
// tenant.
func (d *devStack) startRouter(ctx context.Context, listen, admin string) error {
	r, err := router.New(router.Config{
		Listen: listen, AdminListen: admin, ID: "dev-router",
		Extract: router.ExtractConfig{BaseDomain: "switchyard.localhost", PathPrefix: true, JWTSecret: d.secret},
	}, d.consul.Client(), "", d.log)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	d.onStop(func() {
		cancel()
		if err := <-done; err != nil {
			d.log.Warn("router stopped with an error", "err", err)
		}
	})
	select {
	case <-r.Watcher().Ready():
	case err := <-done:
		return fmt.Errorf("router: %w", err)
	case <-time.After(30 * time.Second):
		return errors.New("router: catalog did not load in 30s")
	}
	d.step(fmt.Sprintf("router at http://%s (admin http://%s)", listen, admin))
	return d.waitServed(ctx)
}

// startController starts the control API, which provisions a new
// dedicated cluster when a move needs one.
func (d *devStack) startController(ctx context.Context) error {
	// Backups (the console's "Back up now", switchyard backups) go to a
	// directory store in the data dir, unencrypted.
	backups, err := backup.NewDirStore(filepath.Join(d.dataDir, "backups"), "local")
	if err != nil {
		return err
	}
	ctl, err := controller.New(controller.Config{
		Listen: d.controllerOn, ID: "dev-controller", Logger: d.log, Retention: time.Hour,
		Tokens:           d.controllerTokens(),
		WebhookSecret:    d.hookSecret,
		ProvisionCluster: d.provisionCluster,
		Domains:          controller.DomainsConfig{BaseDomain: "switchyard.localhost"},
		BackupStores:     map[string]backup.Store{"local": backups},
	}, d.consul.Client())
	if err != nil {
		return err
	}
	cctx, ccancel := context.WithCancel(context.Background())
	cdone := make(chan error, 1)
	go func() { cdone <- ctl.Run(cctx) }()
	d.onStop(func() {
		ccancel()
		if err := <-cdone; err != nil {
			d.log.Warn("controller stopped with an error", "err", err)
		}
	})
	if _, err := ctl.Addr(ctx); err != nil {
		return err
	}
	d.step("control API at http://" + d.controllerOn)
	return nil
}

// controllerTokens is the control API's (and console's) bearer tokens:
// the ones printWelcome prints.
func (d *devStack) controllerTokens() map[string]controller.Role {
	return map[string]controller.Role{d.tokens["operator"]: controller.RoleOperator, d.tokens["billing"]: controller.RoleBilling,
		d.tokens["viewer"]: controller.RoleViewer}
}

// provisionCluster starts the next dedicated cluster for tenant.
func (d *devStack) provisionCluster(ctx context.Context, tenant string) (catalog.Target, error) {
	d.mu.Lock()
	n := 3
	for {
		if _, err := os.Stat(filepath.Join(d.dataDir, fmt.Sprintf("pg-cluster-%d", n))); err != nil {
			break
		}
		n++
	}
	d.mu.Unlock()
	fmt.Printf("  • provisioning dedicated cluster cl-%d for %s (a new PostgreSQL and app instance)\n", n, tenant)
	return d.startCluster(ctx, n)
}

// load keeps a steady stream of writes and reads going through the router
// for every demo tenant and prints a tally, so a move's effect on users is
// visible: the failed count should stay at zero.
func (d *devStack) load(ctx context.Context) {
	hc := &http.Client{Timeout: 10 * time.Second}
	var total, failed atomic.Int64
	var lastFail atomic.Value
	var wg sync.WaitGroup
	for _, id := range []string{"acme", "hooli", "globex", "initech"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				url := "http://" + d.routerOn + "/t/" + id + "/orders"
				var resp *http.Response
				var err error
				if i%2 == 0 {
					resp, err = hc.Post(url, "application/json", strings.NewReader(fmt.Sprintf(`{"item":"load-%d","quantity":1,"price_cents":100}`, i)))
				} else {
					resp, err = hc.Get(url + "?limit=5")
				}
				total.Add(1)
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
						lastFail.Store(fmt.Sprintf("%s: %v", id, err))
					}
				} else {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode >= 400 {
						failed.Add(1)
						lastFail.Store(fmt.Sprintf("%s: %d", id, resp.StatusCode))
					}
				}
				select {
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
	}
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-tick.C:
			msg := fmt.Sprintf("load: %d requests through the router, %d failed", total.Load(), failed.Load())
			if f, ok := lastFail.Load().(string); ok {
				msg += " (last failure " + f + ")"
			}
			fmt.Println("  • " + msg)
		}
	}
}

func (d *devStack) logFile(name string) *os.File {
	f, err := os.OpenFile(filepath.Join(d.dataDir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil
	}
	d.onStop(func() { _ = f.Close() })
	return f
}

// seed creates the databases, the catalog, the three targets and the three
// demo tenants. Re-running it on an existing data dir only refreshes the
// targets' addresses (ports are chosen afresh at every start).
func (d *devStack) seed(ctx context.Context) error {
	if err := d.loadSecrets(); err != nil {
		return err
	}
	if err := d.pg["pool"].CreateDatabase(ctx, "pool"); err != nil {
		return err
	}
	for _, c := range []string{"cluster-1", "cluster-2"} {
		if err := d.pg[c].CreateDatabase(ctx, "app"); err != nil {
			return err
		}
	}
	store := catalog.NewStore(d.consul.Client(), "")
	if err := store.Init(ctx, catalog.DefaultBuckets); err != nil {
		return err
	}
	targets := []catalog.Target{
		{ID: "pool-1", Tier: catalog.TierShared, Service: "app-shared", DSN: d.pg["pool"].DSN("pool"),
			Capacity: catalog.Capacity{Tenants: 1000}, Labels: map[string]string{"region": "local"}},
		{ID: "db-1", Tier: catalog.TierDedicatedDB, Service: "app-shared", DSN: d.pg["dedicated"].DSN("postgres"),
			Capacity: catalog.Capacity{Tenants: 100}, Labels: map[string]string{"region": "local"}},
		{ID: "cl-1", Tier: catalog.TierDedicatedCluster, Service: "app-cl-1", DSN: d.pg["cluster-1"].DSN("app"),
			Capacity: catalog.Capacity{Tenants: 1}, Labels: map[string]string{"region": "local"}},
		{ID: "cl-2", Tier: catalog.TierDedicatedCluster, Service: "app-cl-2", DSN: d.pg["cluster-2"].DSN("app"),
			Capacity: catalog.Capacity{Tenants: 1}, Labels: map[string]string{"region": "local"}},
	}
	for _, t := range targets {
		err := store.CreateTarget(ctx, t)
		if errors.Is(err, catalog.ErrExists) {
			_, err = store.UpdateTarget(ctx, t.ID, func(cur *catalog.Target) error { cur.DSN = t.DSN; return nil })
		}
		if err != nil {
			return fmt.Errorf("target %s: %w", t.ID, err)
		}
	}
	for _, dsn := range []string{d.pg["pool"].DSN("pool"), d.pg["cluster-1"].DSN("app"), d.pg["cluster-2"].DSN("app")} {
		if err := ensureSchema(ctx, dsn); err != nil {
			return err
		}
	}
	if err := d.seedTenants(ctx, store); err != nil {
		return err
	}
	d.step("catalog: targets pool-1 (shared), db-1 (dedicated-db), cl-1 and cl-2 (dedicated-cluster); tenants acme, hooli, globex, initech")
	return nil
}

// loadSecrets reads the stack's JWT secret, API tokens and webhook secret
// from the data dir, making any that is missing.
func (d *devStack) loadSecrets() error {
	secretFile := filepath.Join(d.dataDir, "jwt-secret")
	if b, err := os.ReadFile(secretFile); err == nil && len(b) >= 32 {
		d.secret = []byte(strings.TrimSpace(string(b)))
	} else {
		buf := make([]byte, 24)
		_, _ = rand.Read(buf)
		d.secret = []byte(hex.EncodeToString(buf))
		if err := os.WriteFile(secretFile, d.secret, 0o600); err != nil {
			return err
		}
	}
	d.tokens = map[string]string{}
	for _, role := range []string{"operator", "billing", "viewer"} {
		tok, err := d.persistentSecret("token-" + role)
		if err != nil {
			return err
		}
		d.tokens[role] = tok
	}
	hook, err := d.persistentSecret("webhook-secret")
	if err != nil {
		return err
	}
	d.hookSecret = []byte(hook)
	return nil
}

// seedTenants creates the demo tenants (and globex's database) if missing.
func (d *devStack) seedTenants(ctx context.Context, store *catalog.Store) error {
	for _, t := range []catalog.Tenant{
		{ID: "acme", Plan: "free", Tier: catalog.TierShared, Target: "pool-1"},
		{ID: "globex", Plan: "pro", Tier: catalog.TierDedicatedDB, Target: "db-1"},
		{ID: "initech", Plan: "enterprise", Tier: catalog.TierDedicatedCluster, Target: "cl-1"},
		{ID: "hooli", Plan: "free", Tier: catalog.TierShared, Target: "pool-1"},
	} {
		if t.Tier == catalog.TierDedicatedDB {
			if err := d.pg["dedicated"].CreateDatabase(ctx, catalog.DatabaseName(t.ID)); err != nil {
				return err
			}
			if err := ensureSchema(ctx, d.pg["dedicated"].DSN(catalog.DatabaseName(t.ID))); err != nil {
				return err
			}
		}
		if _, err := store.CreateTenant(ctx, t); err != nil && !errors.Is(err, catalog.ErrExists) {
			return fmt.Errorf("tenant %s: %w", t.ID, err)
		}
	}
	return nil
}

// persistentSecret returns a random secret kept in the data dir.
func (d *devStack) persistentSecret(name string) (string, error) {
	file := filepath.Join(d.dataDir, name)
	if b, err := os.ReadFile(file); err == nil && len(strings.TrimSpace(string(b))) >= 32 {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 24)
	_, _ = rand.Read(buf)
	v := hex.EncodeToString(buf)
	return v, os.WriteFile(file, []byte(v), 0o600)
}

func ensureSchema(ctx context.Context, dsn string) error {
	db, err := sqlx.ConnectContext(ctx, "postgres", dsn)
	if err != nil {
		return fmt.Errorf("connect %s: %w", dsn, err)
	}
	defer db.Close()
	return orders.EnsureSchema(ctx, db)
}

// waitServed waits until each demo tenant answers through the router.
func (d *devStack) waitServed(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, id := range []string{"acme", "hooli", "globex", "initech"} {
		for {
			status, err := httpStatus(ctx, "http://"+d.routerOn+"/t/"+id+"/orders")
			if err == nil && status == 200 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("tenant %s not served through the router (status %d, %v)", id, status, err) //nolint:errorlint // err may be nil: a status, not a cause
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func (d *devStack) printWelcome() { d.welcome(os.Stdout, d.consul.HTTPAddr()) }

// welcome writes what to try, the console's URL and its sign-in tokens.
func (d *devStack) welcome(w io.Writer, consulAddr string) {
	r := "http://" + d.routerOn
	tok := router.SignToken(d.secret, "initech", 24*time.Hour)
	fmt.Fprintf(w, `
Switchyard is running. Three tenants, one per tier, each answered by its own tier
(look at the X-Served-By header: the target that served the request):

  # acme: free plan → shared pool (pool-1)
  curl -si -X POST %[1]s/t/acme/orders -d '{"item":"anvil","quantity":2,"price_cents":1999}' | grep -E 'HTTP|X-Served-By|^{'
  curl -si %[1]s/t/acme/orders | grep -E 'HTTP|X-Served-By'

  # globex: pro plan → its own database on the dedicated server (db-1), named by Host
  curl -si -H 'Host: globex.switchyard.localhost' %[1]s/orders | grep -E 'HTTP|X-Served-By'

  # initech: enterprise plan → its own cluster (cl-1), named by a signed token
  curl -si -H 'Authorization: Bearer %[2]s' %[1]s/orders | grep -E 'HTTP|X-Served-By'

  # unknown tenants get 404; spoofed X-Tenant-ID headers are ignored
  curl -si %[1]s/t/nobody/orders | head -1
  curl -si -H 'X-Tenant-ID: initech' %[1]s/t/acme/orders | grep X-Served-By

The whole story — sales upgrades hooli from free to enterprise; billing's signed
webhook tells Switchyard; hooli moves from the shared pool to its own cluster
(cl-2) while the load above keeps running, with no failed request:

  export CONSUL_HTTP_ADDR=%[4]s SWITCHYARD_CONTROLLER=http://%[6]s SWITCHYARD_TOKEN=%[7]s
  bin/switchyard billing plan-changed hooli enterprise --secret-file %[5]s/webhook-secret
  bin/switchyard moves ls                      # then: bin/switchyard moves watch <id>
  bin/switchyard tenants ls                    # hooli: enterprise, dedicated-cluster, cl-2
  curl -si %[1]s/t/hooli/orders | grep X-Served-By
  curl -s -H "Authorization: Bearer $SWITCHYARD_TOKEN" http://%[6]s/v1/audit | head -c 600; echo

Operators: bin/switchyard targets ls | rebalance --dry-run | tenants create <id> --plan pro
Console:   http://%[6]s/ui/   sign in with the operator token %[7]s
           (or the viewer token %[8]s, which sees everything and changes nothing)
Router admin: http://%[3]s/readyz  http://%[3]s/metrics      Consul UI: http://%[4]s/ui
Logs and data: %[5]s    Press Ctrl-C to stop everything.
`, r, tok, d.adminOn, consulAddr, d.dataDir, d.controllerOn, d.tokens["operator"], d.tokens["viewer"])
}
