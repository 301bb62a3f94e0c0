package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/hashicorp/consul/api"
	"github.com/jmoiron/sqlx"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/examples/orders"
	"github.com/switchyard/switchyard/migrator"
	"github.com/switchyard/switchyard/router"
	"github.com/switchyard/switchyard/test/harness"
	"github.com/switchyard/switchyard/test/history"
)

// moveStack is the whole product on real servers: Consul, three PostgreSQL
// servers (pool, dedicated, cluster), the orders app for the shared fleet
// and for the cluster, two routers, and a migrator.
type moveStack struct {
	*stack
	pgPool, pgDedicated, pgCluster *harness.Postgres
	routers                        []*runningRouter
	hc                             *http.Client
}

func newMoveStack(t testing.TB) *moveStack {
	t.Helper()
	return newMoveStackWith(t, nil)
}

// newMoveStackWith is newMoveStack with its two routers' config edited.
func newMoveStackWith(t testing.TB, editRouter func(*router.Config)) *moveStack {
	t.Helper()
	c := harness.ConsulT(t)
	s := &moveStack{stack: &stack{t: t, consul: c, store: catalog.NewStore(c.Client(), "")}}
	pgs := harness.PostgresN(t, 3)
	s.pgPool, s.pgDedicated, s.pgCluster = pgs[0], pgs[1], pgs[2]
	ctx := testContext(t)
	for _, db := range []struct {
		pg   *harness.Postgres
		name string
	}{{s.pgPool, "pool"}, {s.pgPool, "pool2"}, {s.pgCluster, "app"}} {
		if err := db.pg.CreateDatabase(ctx, db.name); err != nil {
			t.Fatal(err)
		}
		mustSchema(t, db.pg.DSN(db.name))
	}
	if err := s.store.Init(ctx, 64); err != nil {
		t.Fatal(err)
	}
	for _, tg := range []catalog.Target{
		{ID: "pool-1", Tier: catalog.TierShared, Service: "app-shared", DSN: s.pgPool.DSN("pool")},
		{ID: "pool-2", Tier: catalog.TierShared, Service: "app-shared", DSN: s.pgPool.DSN("pool2")},
		{ID: "db-1", Tier: catalog.TierDedicatedDB, Service: "app-shared", DSN: s.pgDedicated.DSN("postgres")},
		{ID: "cl-1", Tier: catalog.TierDedicatedCluster, Service: "app-cl-1", DSN: s.pgCluster.DSN("app")},
	} {
		if err := s.store.CreateTarget(ctx, tg); err != nil {
			t.Fatal(err)
		}
	}
	for _, svc := range []string{"app-shared", "app-shared", "app-cl-1"} {
		startOrdersApp(ctx, t, c.Client(), svc)
	}
	s.routers = []*runningRouter{s.router(editRouter), s.router(editRouter)}
	s.hc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	return s
}

// startOrdersApp runs an instance of the orders app as service svc,
// registered in Consul, until the test ends.
func startOrdersApp(ctx context.Context, t testing.TB, client *api.Client, svc string) {
	t.Helper()
	cfg := orders.DefaultConfig(svc, client)
	cfg.Logger = testLogger(t)
	app, err := orders.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = app.Stop(sctx)
	})
}

func mustSchema(t testing.TB, dsn string) {
	t.Helper()
	db, err := sqlx.Connect("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := orders.EnsureSchema(context.Background(), db); err != nil {
		t.Fatal(err)
	}
}

func (s *moveStack) migrator(hooks *migrator.Hooks) *migrator.Migrator {
	return newMigrator(s.t, s.consul.Client(), migrator.Config{ID: "test", Logger: testLogger(s.t), Hooks: hooks})
}

// seedTenant creates a tenant on a target (its database too, for a
// dedicated-db target) and n orders through the router.
func (s *moveStack) seedTenant(id, plan string, tier catalog.Tier, target string, n int) {
	s.t.Helper()
	if tier == catalog.TierDedicatedDB {
		if err := s.pgDedicated.CreateDatabase(context.Background(), catalog.DatabaseName(id)); err != nil {
			s.t.Fatal(err)
		}
		mustSchema(s.t, s.pgDedicated.DSN(catalog.DatabaseName(id)))
	}
	s.tenant(id, plan, tier, target)
	waitFor(s.t, 15*time.Second, "tenant served through both routers", func() bool {
		for _, r := range s.routers {
			resp, err := s.hc.Get(r.url + "/t/" + id + "/orders?limit=1")
			if err != nil {
				return false
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return false
			}
		}
		return true
	})
	for i := 0; i < n; i++ {
		if _, status, _ := s.do("POST", s.routers[i%2].url+"/t/"+id+"/orders", map[string]any{"item": fmt.Sprintf("seed-%d", i), "quantity": i%50 + 1, "price_cents": i * 7}); status != 201 {
			s.t.Fatalf("seed order %d: status %d", i, status)
		}
	}
}

type order struct {
	ID       int64  `json:"id"`
	Item     string `json:"item"`
	Quantity int    `json:"quantity"`
	Version  int    `json:"version"`
}

func (s *moveStack) do(method, url string, body any) (order, int, string) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	resp, err := s.hc.Do(req)
	if err != nil {
		return order{}, -1, ""
	}
	defer resp.Body.Close()
	var o order
	data, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(data, &o)
	by := resp.Header.Get("X-Served-By")
	if resp.StatusCode >= 500 {
		// Failures carry the error body, so a test can say whose 5xx it was.
		by = fmt.Sprintf("%s %s", by, bytes.TrimSpace(data))
	}
	return o, resp.StatusCode, by
}

// writerStorm runs concurrent clients doing inserts, updates and deletes on
// one tenant through the routers, keeping a model of every acknowledged
// write. Any request that is not answered as expected counts as a failure.
type stormWrite struct {
	start    time.Time
	took     time.Duration
	servedBy string
}

type writerStorm struct {
	s        *moveStack
	tenant   string
	mu       sync.Mutex
	model    map[int64]order // acknowledged state; absent = deleted or never
	deleted  map[int64]bool
	servedBy map[string]int
	// afterFlip are order ids written on the new target (excluded from the
	// source-at-fence comparison).
	touchedOn map[int64]string
	failures  atomic.Int64
	requests  atomic.Int64
	// rec is every operation as the clients saw it, for the
	// linearizability check.
	rec history.Recorder
	// log has one entry per acknowledged write: when it started, how long
	// it took and which target served it.
	log      []stormWrite
	failLog  []string
	stop     chan struct{}
	haltOnce sync.Once
	wg       sync.WaitGroup
	// every, if set, paces each writer to one request per every (see
	// startStormAt) instead of a fixed sleep after each.
	every time.Duration
}

func (s *moveStack) startStorm(tenant string, writers int, pace time.Duration) *writerStorm {
	return s.storm(tenant, writers, pace, 0)
}

// startStormAt is a storm paced to about rate requests/s in all, whatever
// each request takes (up to writers requests in flight): each writer keeps
// to its own schedule, writers/rate apart.
func (s *moveStack) startStormAt(tenant string, writers int, rate float64) *writerStorm {
	return s.storm(tenant, writers, 0, time.Duration(float64(writers)/rate*float64(time.Second)))
}

func (s *moveStack) storm(tenant string, writers int, pace, every time.Duration) *writerStorm {
	w := &writerStorm{s: s, tenant: tenant, model: map[int64]order{}, deleted: map[int64]bool{}, servedBy: map[string]int{},
		touchedOn: map[int64]string{}, stop: make(chan struct{}), every: every}
	for i := 0; i < writers; i++ {
		w.wg.Add(1)
		go w.run(i, pace)
	}
	return w
}

func (w *writerStorm) fail(msg string) {
	w.failures.Add(1)
	w.mu.Lock()
	if len(w.failLog) < 20 {
		w.failLog = append(w.failLog, msg)
	}
	w.mu.Unlock()
}

func (w *writerStorm) run(n int, pace time.Duration) {
	defer w.wg.Done()
	rng := rand.New(rand.NewPCG(uint64(n), 42))
	var mine []int64
	if w.every > 0 {
		time.Sleep(time.Duration(rng.Int64N(int64(w.every)))) // spread the writers' slots
	}
	next := time.Now()
	for i := 0; ; i++ {
		select {
		case <-w.stop:
			return
		default:
		}
		base := w.s.routers[(n+i)%len(w.s.routers)].url + "/t/" + w.tenant + "/orders"
		mine = w.one(n, i, rng, mine, base)
		w.pace(pace, &next)
	}
}

// one sends writer n's i-th operation (half creates, then updates, reads
// of its own orders through whichever router is next, and deletes),
// records it in the history and, acknowledged, in the model. It returns
// the writer's orders.
func (w *writerStorm) one(n, i int, rng *rand.Rand, mine []int64, base string) []int64 {
	in := history.Input{Kind: history.Create, Item: fmt.Sprintf("w%d-%d", n, i), Quantity: rng.IntN(100) + 1}
	k := 0
	if op := rng.IntN(10); op >= 5 && len(mine) > 0 {
		k = rng.IntN(len(mine))
		in = history.Input{Kind: history.Update, ID: mine[k], Item: fmt.Sprintf("upd-%d", i), Quantity: rng.IntN(1000) + 1}
		if op == 8 {
			in.Kind = history.Read
		} else if op == 9 {
			in.Kind = history.Delete
		}
	}
	op := history.Send(w.s.hc, base, in)
	op.Client = n
	w.rec.Record(op)
	w.requests.Add(1)
	if op.Out.Unknown || !op.Out.Found {
		w.fail(fmt.Sprintf("%s %d: %s (%s)", in.Kind, in.ID, op.Detail, op.ServedBy))
		return mine
	}
	o, by := order{ID: op.Out.ID, Item: op.Out.Value.Item, Quantity: op.Out.Value.Quantity, Version: op.Out.Value.Version}, op.ServedBy
	w.mu.Lock()
	defer w.mu.Unlock()
	w.servedBy[by]++
	switch in.Kind {
	case history.Create:
		w.model[o.ID], w.touchedOn[o.ID] = o, by
		mine = append(mine, o.ID)
	case history.Update:
		w.model[in.ID], w.touchedOn[in.ID] = o, by
	case history.Delete:
		delete(w.model, in.ID)
		w.deleted[in.ID], w.touchedOn[in.ID] = true, by
		mine = append(mine[:k], mine[k+1:]...)
	case history.Read:
		return mine // not a write: not in the write log
	}
	w.log = append(w.log, stormWrite{start: op.Call, took: op.Return.Sub(op.Call), servedBy: by})
	return mine
}

// pace waits after a request: pace, or for a storm paced to a rate until
// the writer's next slot. A writer more than one slot behind (held by a
// switch, say) starts again from now rather than bursting.
func (w *writerStorm) pace(pace time.Duration, next *time.Time) {
	if w.every <= 0 {
		if pace > 0 {
			time.Sleep(pace)
		}
		return
	}
	*next = next.Add(w.every)
	if d := time.Until(*next); d > 0 {
		time.Sleep(d)
	} else if -d > w.every {
		*next = time.Now()
	}
}

// p99 is the 99th percentile latency of writes that started in [from, to).
func (w *writerStorm) p99(from, to time.Time) (time.Duration, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var d []time.Duration
	for _, e := range w.log {
		if !e.start.Before(from) && e.start.Before(to) {
			d = append(d, e.took)
		}
	}
	if len(d) == 0 {
		return 0, 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)*99/100], len(d)
}

// seedTenantBulk creates a shared-pool tenant with n orders written
// straight into the pool database.
func (s *moveStack) seedTenantBulk(id string, n int) {
	s.t.Helper()
	s.tenant(id, "free", catalog.TierShared, "pool-1")
	db := sqlxMustB(s.t, s.pgPool.DSN("pool"))
	if _, err := db.Exec(`INSERT INTO orders (tenant_id, item, quantity, price_cents, attrs)
		SELECT $1, 'bulk-' || g, g % 100 + 1, g, jsonb_build_object('n', g) FROM generate_series(1, $2::int) g`, id, n); err != nil {
		s.t.Fatal(err)
	}
	if _, err := db.Exec(`VACUUM ANALYZE orders`); err != nil {
		s.t.Fatal(err)
	}
	waitFor(s.t, 15*time.Second, "tenant served", func() bool {
		resp, err := s.hc.Get(s.routers[0].url + "/t/" + id + "/orders?limit=1")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// holdQuantiles merges the routers' hold histograms and interpolates the
// 50th and 99th percentiles (seconds); key -1 holds the count.
func (s *moveStack) holdQuantiles(t testing.TB) map[float64]float64 {
	buckets := map[float64]float64{}
	var count float64
	for _, r := range s.routers {
		for _, line := range strings.Split(scrape(t, r.admin), "\n") {
			if strings.HasPrefix(line, "switchyard_router_hold_seconds_bucket{le=\"") {
				var le, n float64
				rest := strings.TrimPrefix(line, "switchyard_router_hold_seconds_bucket{le=\"")
				q := strings.Index(rest, "\"")
				if rest[:q] == "+Inf" {
					le = math.Inf(1)
				} else {
					le, _ = strconv.ParseFloat(rest[:q], 64)
				}
				n, _ = strconv.ParseFloat(strings.TrimSpace(rest[strings.LastIndex(rest, " "):]), 64)
				buckets[le] += n
			}
			if strings.HasPrefix(line, "switchyard_router_hold_seconds_count ") {
				n, _ := strconv.ParseFloat(strings.TrimPrefix(line, "switchyard_router_hold_seconds_count "), 64)
				count += n
			}
		}
	}
	les := make([]float64, 0, len(buckets))
	for le := range buckets {
		les = append(les, le)
	}
	sort.Float64s(les)
	out := map[float64]float64{-1: count}
	for _, q := range []float64{0.5, 0.99} {
		rank := q * count
		prevLe, prevN := 0.0, 0.0
		for _, le := range les {
			if buckets[le] >= rank {
				if math.IsInf(le, 1) {
					out[q] = prevLe
				} else if buckets[le] == prevN {
					out[q] = le
				} else {
					out[q] = prevLe + (le-prevLe)*(rank-prevN)/(buckets[le]-prevN)
				}
				break
			}
			prevLe, prevN = le, buckets[le]
		}
	}
	return out
}

func sqlxMustB(t testing.TB, dsn string) *sqlx.DB {
	t.Helper()
	db, err := sqlx.Connect("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// halt stops the writers and waits for them; calling it again is harmless.
func (w *writerStorm) halt() {
	w.haltOnce.Do(func() { close(w.stop) })
	w.wg.Wait()
}

// checkModel reads every order of the tenant at dsn and compares it with the
// acknowledged writes: each acknowledged write is there, each deleted order
// is gone.
func (w *writerStorm) checkModel(t *testing.T, dsn string) {
	t.Helper()
	db, err := sqlx.Connect("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows []order
	if err := db.Select(&rows, `SELECT id, item, quantity, version FROM orders WHERE tenant_id = $1`, w.tenant); err != nil {
		t.Fatal(err)
	}
	have := map[int64]order{}
	for _, o := range rows {
		have[o.ID] = o
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, want := range w.model {
		got, ok := have[id]
		if !ok {
			t.Errorf("acknowledged order %d is missing on the target", id)
			continue
		}
		if got.Item != want.Item || got.Quantity != want.Quantity || got.Version != want.Version {
			t.Errorf("order %d: target has %+v, last acknowledged %+v", id, got, want)
		}
	}
	for id := range w.deleted {
		if _, ok := have[id]; ok {
			t.Errorf("order %d was deleted (acknowledged) but is on the target", id)
		}
	}
	final := history.Final{}
	for id, o := range have {
		final[id] = &history.Value{Item: o.Item, Quantity: o.Quantity, Version: o.Version}
	}
	res := history.Check(w.rec.Ops(), final, time.Minute, os.TempDir())
	t.Logf("history of %s: %d operations on %d orders, %s", w.tenant, res.Ops, res.Orders, res.Linearizable)
	reportHistory(t, res)
}

// reportHistory fails t for each acknowledged write lost and each order
// whose history is not linearizable (the first five, with porcupine's
// drawing of the history).
func reportHistory(t testing.TB, res history.Result) {
	t.Helper()
	for _, l := range res.Lost {
		t.Errorf("lost: %s", l)
	}
	for i, v := range res.Violations {
		if i < 5 {
			t.Errorf("%s", v)
		}
	}
	if res.Visualization != "" {
		t.Errorf("porcupine's view of the history: %s", res.Visualization)
	}
	if res.Linearizable != porcupine.Ok && len(res.Violations) == 0 {
		t.Errorf("linearizability check: %s", res.Linearizable)
	}
}

// compareAtFence checks that source and target hold the same rows for the
// tenant, except those written after the switch.
func compareAtFence(t *testing.T, srcDSN, dstDSN, tenant string, writtenAfter map[int64]bool) {
	t.Helper()
	read := func(dsn string) map[int64]string {
		db, err := sqlx.Connect("postgres", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var rows []struct {
			ID   int64  `db:"id"`
			Hash string `db:"h"`
		}
		if err := db.Select(&rows, `SELECT id, md5(o::text) AS h FROM orders o WHERE tenant_id = $1`, tenant); err != nil {
			t.Fatal(err)
		}
		out := map[int64]string{}
		for _, r := range rows {
			out[r.ID] = r.Hash
		}
		return out
	}
	src, dst := read(srcDSN), read(dstDSN)
	diff := 0
	for id, h := range src {
		if writtenAfter[id] {
			continue
		}
		if dst[id] != h {
			diff++
			if diff < 5 {
				t.Errorf("order %d differs between source (at fence) and target", id)
			}
		}
	}
	for id := range dst {
		if _, ok := src[id]; !ok && !writtenAfter[id] {
			diff++
			if diff < 5 {
				t.Errorf("order %d is on the target only, not written after the switch", id)
			}
		}
	}
	if diff > 0 {
		t.Fatalf("%d rows differ between source at the fence and target (source %d rows, target %d)", diff, len(src), len(dst))
	}
	t.Logf("source at fence and target agree on %d rows (%d written after the switch)", len(src), len(writtenAfter))
}
