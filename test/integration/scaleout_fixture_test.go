package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/jmoiron/sqlx"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/examples/orders"
	"github.com/switchyard/switchyard/migrator"
	"github.com/switchyard/switchyard/test/harness"
	"github.com/switchyard/switchyard/test/history"
)

// scaleStack is Switchyard scaled out on loopback: a 3-node Consul cluster,
// two PostgreSQL servers (pool-1 and pool-2 on one, db-1 on the other),
// three orders app instances, three router processes and two controller
// replicas (processes of the built binary). Every process reaches Consul
// through its own fault proxy, and every PostgreSQL sits behind one (the
// targets' DSNs name the proxies), so a fault can be aimed at one path.
//
// Processes attach to the Consul followers of the start (round robin):
// killing the Raft leader then tests the cluster's election, not the loss
// of a process's own agent.
type scaleStack struct {
	t       *testing.T
	ctx     context.Context
	cluster *harness.ConsulCluster
	leader  *harness.Consul // the Raft leader when the stack started
	// admin is the test's own, unproxied client (to a follower).
	admin       *api.Client
	store       *catalog.Store
	pgPool      *harness.Postgres
	pgDed       *harness.Postgres
	pgProxy     map[*harness.Postgres]*harness.FaultProxy
	routers     []*sproc
	controllers []*sproc
	bin         string
}

// sproc is a Switchyard process: its command, base URL and Consul proxy.
type sproc struct {
	name  string
	cmd   *exec.Cmd
	url   string // API or proxy base URL
	admin string // router admin URL
	proxy *harness.FaultProxy
	args  []string
}

func newScaleStack(t *testing.T) *scaleStack {
	t.Helper()
	s := &scaleStack{t: t, ctx: testContext(t), bin: switchyardBinary(t), pgProxy: map[*harness.Postgres]*harness.FaultProxy{}}
	s.cluster = harness.ConsulClusterT(t, 3)
	leader, err := s.cluster.Leader(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.leader = leader
	s.admin = s.follower(0).Client()
	s.store = catalog.NewStore(s.admin, "")
	pgs := harness.PostgresN(t, 2)
	s.pgPool, s.pgDed = pgs[0], pgs[1]
	for _, pg := range pgs {
		s.pgProxy[pg] = s.proxy(pg.Addr())
	}
	s.catalog()
	for i := range 3 {
		s.app(i)
	}
	for i := range 3 {
		s.routers = append(s.routers, s.startRouterProc(i))
	}
	for i := range 2 {
		s.controllers = append(s.controllers, s.startControllerProc(i))
	}
	return s
}

// follower returns the i-th follower of the start, round robin.
func (s *scaleStack) follower(i int) *harness.Consul {
	var fs []*harness.Consul
	for _, n := range s.cluster.Nodes {
		if n != s.leader {
			fs = append(fs, n)
		}
	}
	return fs[i%len(fs)]
}

// proxy starts a fault proxy to target, closed when the test ends.
func (s *scaleStack) proxy(target string) *harness.FaultProxy {
	p, err := harness.StartFaultProxy(target)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = p.Close() })
	return p
}

// consulVia returns a client to follower i through a new fault proxy.
func (s *scaleStack) consulVia(i int) (*api.Client, *harness.FaultProxy) {
	p := s.proxy(s.follower(i).HTTPAddr())
	c, err := api.NewClient(&api.Config{Address: p.Addr()})
	if err != nil {
		s.t.Fatal(err)
	}
	return c, p
}

// pgDSN is a DSN for dbname through pg's fault proxy.
func (s *scaleStack) pgDSN(pg *harness.Postgres, dbname string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", s.pgProxy[pg].Addr(), dbname)
}

// catalog makes the pool databases and the targets.
func (s *scaleStack) catalog() {
	for _, db := range []string{"pool", "pool2"} {
		if err := s.pgPool.CreateDatabase(s.ctx, db); err != nil {
			s.t.Fatal(err)
		}
		mustSchema(s.t, s.pgPool.DSN(db))
	}
	if err := s.store.Init(s.ctx, 64); err != nil {
		s.t.Fatal(err)
	}
	for _, tg := range []catalog.Target{
		{ID: "pool-1", Tier: catalog.TierShared, Service: "app-shared", DSN: s.pgDSN(s.pgPool, "pool")},
		{ID: "pool-2", Tier: catalog.TierShared, Service: "app-shared", DSN: s.pgDSN(s.pgPool, "pool2")},
		{ID: "db-1", Tier: catalog.TierDedicatedDB, Service: "app-shared", DSN: s.pgDSN(s.pgDed, "postgres")},
	} {
		if err := s.store.CreateTarget(s.ctx, tg); err != nil {
			s.t.Fatal(err)
		}
	}
}

// app starts orders app instance i (in process), registered with its own
// Consul agent.
func (s *scaleStack) app(i int) {
	client, _ := s.consulVia(i)
	cfg := orders.DefaultConfig("app-shared", client)
	cfg.Logger = testLogger(s.t)
	app, err := orders.New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := app.Start(s.ctx); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = app.Stop(sctx)
	})
}

// startRouterProc starts router process i behind its own Consul proxy.
func (s *scaleStack) startRouterProc(i int) *sproc {
	ports, err := freePortsT(2)
	if err != nil {
		s.t.Fatal(err)
	}
	_, proxy := s.consulVia(i)
	p := &sproc{name: fmt.Sprintf("router-%d", i), proxy: proxy,
		url: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), admin: fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		args: []string{"router", "-listen", fmt.Sprintf("127.0.0.1:%d", ports[0]), "-admin", fmt.Sprintf("127.0.0.1:%d", ports[1]),
			"-consul", proxy.Addr(), "-id", fmt.Sprintf("router-%d", i), "-log-level", "warn"}}
	s.launch(p, p.admin+"/readyz")
	return p
}

// startControllerProc starts controller replica i behind its own Consul
// proxy. Its leader TTL is 5 s: in the 3-node cluster a session of 1 or 2 s
// is lost at twice its TTL although renewed (measured), so a 1 s leader
// would lose the lock every 2 s.
func (s *scaleStack) startControllerProc(i int) *sproc {
	ports, err := freePortsT(1)
	if err != nil {
		s.t.Fatal(err)
	}
	_, proxy := s.consulVia(i)
	p := &sproc{name: fmt.Sprintf("controller-%d", i), proxy: proxy, url: fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		args: []string{"controller", "-listen", fmt.Sprintf("127.0.0.1:%d", ports[0]), "-consul", proxy.Addr(),
			"-tokens", tokOperator + ":operator", "-leader-ttl", "5s", "-move-chunk", "100", "-move-rate", "5000",
			"-id", fmt.Sprintf("replica-%d", i), "-log-level", "warn"}}
	s.launch(p, p.url+"/readyz")
	return p
}

func freePortsT(n int) ([]int, error) {
	out := make([]int, n)
	for i := range out {
		p, err := harness.FreePort()
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

// launch starts (or restarts) p and waits until ready answers 200. Output
// goes to a log file in the test's directory.
func (s *scaleStack) launch(p *sproc, ready string) {
	s.t.Helper()
	log, err := os.OpenFile(filepath.Join(s.t.TempDir(), p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(s.bin, p.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	p.cmd = cmd
	s.t.Cleanup(func() {
		if s.t.Failed() {
			data, _ := os.ReadFile(log.Name())
			s.t.Logf("%s log tail:\n%s", p.name, tail(data, 3000))
		}
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = log.Close()
	})
	waitFor(s.t, 20*time.Second, p.name+" ready", func() bool {
		resp, err := shortClient.Get(ready)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// signal sends sig to p; for SIGKILL and SIGTERM it waits for the exit.
func (s *scaleStack) signal(p *sproc, sig syscall.Signal) {
	s.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal %s: %v", p.name, err)
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			s.t.Fatalf("%s did not exit on %s", p.name, sig)
		}
	}
}

// leaderController is the replica that holds the scheduler lock.
func (s *scaleStack) leaderController() *sproc {
	s.t.Helper()
	var leader *sproc
	waitFor(s.t, 20*time.Second, "a controller leader", func() bool {
		for _, c := range s.controllers {
			if c.cmd.ProcessState != nil {
				continue
			}
			_, body := call(s.t, "GET", c.url+"/readyz", "", nil, nil)
			if body["leader"] == true {
				leader = c
				return true
			}
		}
		return false
	})
	return leader
}

// seed creates a shared-pool tenant with n orders written straight into the
// pool, and waits until every router serves it.
func (s *scaleStack) seed(id string, n int) {
	s.t.Helper()
	if _, err := s.store.CreateTenant(s.ctx, catalog.Tenant{ID: id, Plan: "free", Tier: catalog.TierShared, Target: "pool-1"}); err != nil {
		s.t.Fatal(err)
	}
	db := sqlxMustB(s.t, s.pgPool.DSN("pool"))
	if _, err := db.Exec(`INSERT INTO orders (tenant_id, item, quantity, price_cents)
		SELECT $1, 'seed-' || g, g % 100 + 1, g FROM generate_series(1, $2::int) g`, id, n); err != nil {
		s.t.Fatal(err)
	}
	waitFor(s.t, 20*time.Second, "tenant served through every router", func() bool {
		for _, r := range s.routers {
			resp, err := shortClient.Get(r.url + "/t/" + id + "/orders?limit=1")
			if err != nil {
				return false
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false
			}
		}
		return true
	})
}

// workload starts a steady history-recording load through every router.
func (s *scaleStack) workload(tenant string, clients int) *history.Workload {
	urls := make([]string, len(s.routers))
	for i, r := range s.routers {
		urls[i] = r.url
	}
	w := &history.Workload{Tenant: tenant, Routers: urls, Clients: clients, Pace: 5 * time.Millisecond, Timeout: 8 * time.Second}
	w.Start()
	s.t.Cleanup(w.Stop)
	return w
}

// setPlan asks a controller replica to change the tenant's plan and returns
// the move it started.
func (s *scaleStack) setPlan(via *sproc, tenant, plan string) string {
	s.t.Helper()
	status, body := call(s.t, "PUT", via.url+"/v1/tenants/"+tenant+"/plan", tokOperator, map[string]any{"plan": plan}, nil)
	if status != http.StatusAccepted {
		s.t.Fatalf("plan change to %s: %d %v", plan, status, body)
	}
	return body["move"].(map[string]any)["id"].(string)
}

// waitMove waits until the move has switched (retained or done) and
// returns it; a move that ends otherwise fails the test.
func (s *scaleStack) waitMove(mg *migrator.Migrator, id string, limit time.Duration) *migrator.Move {
	s.t.Helper()
	var m *migrator.Move
	deadline := time.Now().Add(limit)
	for {
		if got, err := mg.Get(s.ctx, id); err == nil {
			m = got
		}
		if m != nil && (m.Phase == migrator.PhaseRetained || m.Phase == migrator.PhaseDone || m.Phase == migrator.PhaseAborted) {
			break
		}
		if time.Now().After(deadline) {
			if m == nil {
				s.t.Fatalf("move %s: not found within %s", id, limit)
			}
			s.t.Fatalf("move %s not switched within %s: %s %s %s %s", id, limit, m.Phase, m.Status, m.Message, m.Error)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m.Phase == migrator.PhaseAborted {
		s.t.Fatalf("move %s aborted: %s", id, m.Error)
	}
	return m
}

// finalRows reads the tenant's orders where the catalog places it.
func (s *scaleStack) finalRows(tenant string) (history.Final, catalog.Tenant) {
	s.t.Helper()
	tn, err := s.store.GetTenant(s.ctx, tenant)
	if err != nil {
		s.t.Fatal(err)
	}
	tg, _, err := s.store.GetTarget(s.ctx, tn.Target)
	if err != nil {
		s.t.Fatal(err)
	}
	dsn, err := tg.DSNFor(tenant)
	if err != nil {
		s.t.Fatal(err)
	}
	db, err := sqlx.Connect("postgres", dsn)
	if err != nil {
		s.t.Fatal(err)
	}
	defer db.Close()
	var rows []order
	if err := db.Select(&rows, `SELECT id, item, quantity, version FROM orders WHERE tenant_id = $1`, tenant); err != nil {
		s.t.Fatal(err)
	}
	out := history.Final{}
	for _, o := range rows {
		out[o.ID] = &history.Value{Item: o.Item, Quantity: o.Quantity, Version: o.Version}
	}
	return out, tn
}

// verdict stops the workload, checks its history against the final rows
// and prints the scenario's figures; it fails the test on a lost write or
// a violation, and on failed requests beyond allowFailed.
func (s *scaleStack) verdict(w *history.Workload, tenant string, fault time.Time, allowFailed int) {
	s.t.Helper()
	w.Stop()
	final, tn := s.finalRows(tenant)
	st := w.Rec.Stats(fault)
	res := history.Check(w.Rec.Ops(), final, time.Minute, os.TempDir())
	s.t.Logf("FIGURES %s: requests failed %d / %d, acknowledged writes lost %d, linearizability violations %d (%s, %d orders), time to recover %s; tenant on %s (%s, epoch %d)",
		s.t.Name(), st.Failed, st.Total, len(res.Lost), len(res.Violations), res.Linearizable, res.Orders, st.Recovery.Round(time.Millisecond), tn.Target, tn.State, tn.Epoch)
	for _, f := range st.Failures {
		s.t.Logf("failed: %s", f)
	}
	reportHistory(s.t, res)
	if st.Failed > allowFailed {
		s.t.Errorf("%d requests failed, %d allowed", st.Failed, allowFailed)
	}
	if tn.State != catalog.StateActive {
		s.t.Errorf("tenant left %s", tn.State)
	}
}

// migrator is an observer for reading moves (and, with hooks, a migrator
// of the test's own) through its own Consul proxy.
func (s *scaleStack) migrator() *migrator.Migrator {
	client, _ := s.consulVia(0)
	return newMigrator(s.t, client, migrator.Config{ID: "observer", Logger: testLogger(s.t), LockTTL: time.Second})
}

// tail is the last n bytes of data.
func tail(data []byte, n int) []byte {
	if len(data) > n {
		return data[len(data)-n:]
	}
	return data
}

// stopControllers SIGTERMs both controller replicas, so that no replica
// takes over a move the test's own migrator runs.
func (s *scaleStack) stopControllers() {
	for _, c := range s.controllers {
		s.signal(c, syscall.SIGTERM)
	}
}

// ownMove creates a move of tenant to db-1 run by a migrator of the test's
// own (named id, with hooks, through its own Consul proxy), and gives the
// routers a moment to see the capture start.
func (s *scaleStack) ownMove(id, tenant string, hooks *migrator.Hooks) (*migrator.Migrator, *migrator.Move) {
	s.t.Helper()
	client, _ := s.consulVia(1)
	mg := newMigrator(s.t, client, migrator.Config{ID: id, Logger: testLogger(s.t), LockTTL: 5 * time.Second, Hooks: hooks})
	m, _, err := mg.Create(s.ctx, migrator.Request{Tenant: tenant, To: "db-1", Options: migrator.Options{ChunkRows: 100, Retention: time.Hour}})
	if err != nil {
		s.t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	return mg, m
}
