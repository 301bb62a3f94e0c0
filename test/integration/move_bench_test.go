package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
	"github.com/switchyard/switchyard/test/harness"
)

const pgBin = "/usr/lib/postgresql/15/bin"

// BenchmarkCopyMillion: one tenant of 1,000,000 rows (about 170 MB with a
// jsonb column) copied from a shared pool database to a dedicated database
// on the same server, by `psql \copy … | psql \copy …` and by a Switchyard
// move with change capture running, in the same run; the move copies in
// parallel key-range streams (SWITCHYARD_COPY_STREAMS, default 2). Run with
// -benchtime=1x.
func BenchmarkCopyMillion(b *testing.B) {
	pg := harness.PostgresT(b)
	ctx := context.Background()
	for _, db := range []string{"pool", "pipe"} {
		if err := pg.CreateDatabase(ctx, db); err != nil {
			b.Fatal(err)
		}
		mustSchema(b, pg.DSN(db))
	}
	pool := sqlxMustB(b, pg.DSN("pool"))
	start := time.Now()
	if _, err := pool.Exec(`INSERT INTO orders (tenant_id, id, item, quantity, price_cents, attrs)
		SELECT 'big', g, 'item-' || g, g % 100 + 1, g * 3, jsonb_build_object('sku', md5(g::text), 'note', repeat('x', 60), 'n', g)
		FROM generate_series(1, 1000000) g`); err != nil {
		b.Fatal(err)
	}
	_, _ = pool.Exec(`INSERT INTO orders (tenant_id, item, quantity, price_cents) SELECT 'other', 'o', 1, 1 FROM generate_series(1, 10000)`)
	_, _ = pool.Exec(`VACUUM ANALYZE orders`)
	var size int64
	_ = pool.Get(&size, `SELECT sum(pg_column_size(o.*)) FROM orders o WHERE tenant_id = 'big'`)
	b.Logf("seeded 1,000,000 rows (%d MB) in %s", size>>20, time.Since(start).Round(time.Millisecond))

	c := harness.ConsulT(b)
	store := catalog.NewStore(c.Client(), "")
	if err := store.Init(ctx, 64); err != nil {
		b.Fatal(err)
	}
	_ = store.CreateTarget(ctx, catalog.Target{ID: "pool-1", Tier: catalog.TierShared, Service: "app", DSN: pg.DSN("pool")})
	_ = store.CreateTarget(ctx, catalog.Target{ID: "db-1", Tier: catalog.TierDedicatedDB, Service: "app", DSN: pg.DSN("postgres")})
	startBackend(b, c.Client(), "app", nil) // the switch flips only to a target an instance serves
	if _, err := store.CreateTenant(ctx, catalog.Tenant{ID: "big", Plan: "pro", Tier: catalog.TierShared, Target: "pool-1"}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		// The pipe, as an operator would type it.
		_, _ = sqlxMustB(b, pg.DSN("pipe")).Exec(`TRUNCATE orders CASCADE`)
		pipeStart := time.Now()
		cmd := exec.Command("bash", "-c", fmt.Sprintf(
			`%[1]s/psql -q -d '%[2]s' -c "\copy (SELECT * FROM orders WHERE tenant_id = 'big') TO STDOUT" | %[1]s/psql -q -d '%[3]s' -c "\copy orders FROM STDIN"`,
			pgBin, pg.DSN("pool"), pg.DSN("pipe")))
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("pipe: %v: %s", err, out)
		}
		pipe := time.Since(pipeStart)

		// The move (capture triggers installed before the copy starts).
		mg := newMigrator(b, c.Client(), migrator.Config{Logger: testLogger(b)})
		streams, _ := strconv.Atoi(os.Getenv("SWITCHYARD_COPY_STREAMS")) // 0: the default (2)
		m, _, err := mg.Create(ctx, migrator.Request{Tenant: "big", To: "db-1", Options: migrator.Options{Retention: time.Hour, CopyStreams: streams}})
		if err != nil {
			b.Fatal(err)
		}
		if err := mg.Run(ctx, m.ID); err != nil {
			b.Fatal(err)
		}
		m, _ = mg.Get(ctx, m.ID)
		copyTook := m.Took[migrator.PhaseCopy]
		ratio := pipe.Seconds() / copyTook.Seconds()
		b.ReportMetric(pipe.Seconds(), "pipe-s")
		b.ReportMetric(copyTook.Seconds(), "move-copy-s")
		b.ReportMetric(ratio, "rate-vs-pipe")
		b.Logf("psql pipe %s (%.0f rows/s); move copy phase %s (%.0f rows/s) = %.2fx the pipe's rate; whole move %s, pause %s",
			pipe.Round(time.Millisecond), 1e6/pipe.Seconds(), copyTook.Round(time.Millisecond), 1e6/copyTook.Seconds(), ratio,
			time.Since(m.Created).Round(time.Millisecond), m.Pause.Round(time.Millisecond))
	}
}

// BenchmarkSwitchPause: moves of one tenant back and forth between two
// pools while about 1,000 writes/s (SWITCHYARD_PAUSE_WRITES; measured and
// printed) go through two routers, for tenants of
// 10,000 and 1,000,000 rows (SWITCHYARD_PAUSE_ROWS=10000,1000000,10000000
// picks the sizes, SWITCHYARD_PAUSE_MOVES the moves per size). The first move copies; the later ones move back onto
// the retained copy (re-sync by difference), so a large tenant is not
// copied and deleted again for every sample: the switch is the same. Reports
// the freeze→flip pause p50/p99 (and its slowest steps), the time requests
// were held (router hold histogram), and requires zero failed requests.
// The pause must not grow with the tenant's size.
func BenchmarkSwitchPause(b *testing.B) {
	sizes := []int{10_000, 1_000_000}
	if env := os.Getenv("SWITCHYARD_PAUSE_ROWS"); env != "" {
		sizes = nil
		for _, f := range strings.Split(env, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				b.Fatalf("SWITCHYARD_PAUSE_ROWS: %v", err)
			}
			sizes = append(sizes, n)
		}
	}
	for _, rows := range sizes {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			moves := map[bool]int{true: 20, false: 8}[rows <= 100_000]
			if rows >= 5_000_000 {
				moves = 4
			}
			if n, err := strconv.Atoi(os.Getenv("SWITCHYARD_PAUSE_MOVES")); err == nil && n > 0 {
				moves = n
			}
			for i := 0; i < b.N; i++ {
				switchPause(b, rows, moves)
			}
		})
	}
}

// switchPause seeds a tenant of rows rows and times moves of it under
// about 1,000 writes/s (random create/update/delete, alternating between
// the two routers).
func switchPause(b *testing.B, rows, moves int) {
	s := newMoveStack(b)
	seedStart := time.Now()
	s.seedTenantBulk("pauser", rows)
	b.Logf("seeded %d rows in %s", rows, time.Since(seedStart).Round(time.Millisecond))
	ctx := context.Background()
	waitFor(b, 10*time.Second, "both routers registered for cutovers", func() bool {
		live, _ := s.store.LiveRouters(ctx)
		return len(live) == 2
	})
	mg := newMigrator(b, s.consul.Client(), migrator.Config{Logger: testLogger(b)})
	target := 1000.0
	if env, err := strconv.ParseFloat(os.Getenv("SWITCHYARD_PAUSE_WRITES"), 64); err == nil && env > 0 {
		target = env
	}
	// Paced to the target rate whatever each request takes, with enough
	// writers that slow requests do not bring it down.
	storm := s.startStormAt("pauser", 64, target)
	stormStart := time.Now()
	time.Sleep(2 * time.Second)
	b.Logf("storm: %.0f writes/s measured over its first 2 s (target %.0f, through %d routers)",
		float64(storm.requests.Load())/time.Since(stormStart).Seconds(), target, len(s.routers))
	var pauses []time.Duration
	slowest := map[string]time.Duration{}
	to := "pool-2"
	for j := 0; j < moves; j++ {
		m, _, err := mg.Create(ctx, migrator.Request{Tenant: "pauser", To: to, Options: migrator.Options{Retention: time.Hour}})
		if err != nil {
			b.Fatal(err)
		}
		if err := mg.Run(ctx, m.ID); err != nil {
			b.Fatal(err)
		}
		m, _ = mg.Get(ctx, m.ID)
		if m.Phase != migrator.PhaseRetained {
			b.Fatalf("move %d: %s %s", j, m.Phase, m.Error)
		}
		pauses = append(pauses, m.Pause)
		for step, d := range m.PauseSteps {
			slowest[step] = max(slowest[step], d)
		}
		b.Logf("move %d (%s, resync %v): pause %s: %v", j, to, m.Resync, m.Pause.Round(100*time.Microsecond), m.PauseSteps)
		to = map[string]string{"pool-1": "pool-2", "pool-2": "pool-1"}[to]
	}
	rate := float64(storm.requests.Load()) / time.Since(stormStart).Seconds()
	storm.halt()
	if f := storm.failures.Load(); f != 0 {
		b.Fatalf("%d of %d requests failed: %v", f, storm.requests.Load(), storm.failLog)
	}
	held := s.holdQuantiles(b)
	sort.Slice(pauses, func(i, j int) bool { return pauses[i] < pauses[j] })
	p50, p99 := pauses[len(pauses)/2], pauses[len(pauses)*99/100]
	b.ReportMetric(float64(p50.Microseconds())/1000, "pause-p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "pause-p99-ms")
	b.ReportMetric(held[0.5]*1000, "hold-p50-ms")
	b.ReportMetric(held[0.99]*1000, "hold-p99-ms")
	b.ReportMetric(rate, "writes/s")
	b.Logf("%d moves of %d rows under %d writes at %.0f writes/s (0 failed): freeze→flip p50 %s p99 %s (slowest steps %v); request hold p50 %.1f ms p99 %.1f ms (%d held)",
		moves, rows, storm.requests.Load(), rate, p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond), slowest, held[0.5]*1000, held[0.99]*1000, int(held[-1]))
}

// BenchmarkCaptureOverhead: the pool's write throughput (pgbench, custom
// script over 100 tenants) without and with change capture running for one
// of them.
func BenchmarkCaptureOverhead(b *testing.B) {
	pg := harness.PostgresT(b)
	ctx := context.Background()
	if err := pg.CreateDatabase(ctx, "pool"); err != nil {
		b.Fatal(err)
	}
	mustSchema(b, pg.DSN("pool"))
	c := harness.ConsulT(b)
	store := catalog.NewStore(c.Client(), "")
	_ = store.Init(ctx, 64)
	_ = store.CreateTarget(ctx, catalog.Target{ID: "pool-1", Tier: catalog.TierShared, Service: "app", DSN: pg.DSN("pool")})
	_ = store.CreateTarget(ctx, catalog.Target{ID: "db-1", Tier: catalog.TierDedicatedDB, Service: "app", DSN: pg.DSN("postgres")})
	_, _ = store.CreateTenant(ctx, catalog.Tenant{ID: "t1", Plan: "pro", Tier: catalog.TierShared, Target: "pool-1"})
	pool := sqlxMustB(b, pg.DSN("pool"))
	_, _ = pool.Exec(`INSERT INTO orders (tenant_id, item, quantity, price_cents) SELECT 't' || (g % 100 + 1), 'x', 1, 1 FROM generate_series(1, 200000) g`)
	script := filepath.Join(b.TempDir(), "writes.sql")
	_ = os.WriteFile(script, []byte(`\set tid random(1, 100)
\set oid random(1, 200000)
INSERT INTO orders (tenant_id, item, quantity, price_cents) VALUES ('t' || :tid, 'bench', 1, 1);
UPDATE orders SET quantity = quantity + 1 WHERE tenant_id = 't' || :tid AND id = :oid;
`), 0o644)
	run := func() float64 {
		out, err := exec.Command(filepath.Join(pgBin, "pgbench"), "-n", "-c", "4", "-j", "2", "-T", "8", "-f", script, pg.DSN("pool")).CombinedOutput()
		if err != nil {
			b.Fatalf("pgbench: %v: %s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "tps = ") {
				var tps float64
				fmt.Sscanf(line, "tps = %f", &tps)
				return tps
			}
		}
		b.Fatalf("no tps in %s", out)
		return 0
	}
	for i := 0; i < b.N; i++ {
		without := run()
		// A move of t1 that stays in its copy phase while pgbench runs.
		release := make(chan struct{})
		started := make(chan struct{}, 1)
		mg := newMigrator(b, c.Client(), migrator.Config{Logger: testLogger(b), Hooks: &migrator.Hooks{AfterChunk: func(*migrator.Move) error {
			select {
			case started <- struct{}{}:
			default:
			}
			<-release
			return nil
		}}})
		m, _, err := mg.Create(ctx, migrator.Request{Tenant: "t1", To: "db-1", Options: migrator.Options{ChunkRows: 100}})
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- mg.Run(ctx, m.ID) }()
		<-started
		with := run()
		close(release)
		if _, err := mg.Abort(ctx, m.ID); err != nil {
			b.Logf("abort: %v", err)
		}
		<-done
		b.ReportMetric(without, "tps-without")
		b.ReportMetric(with, "tps-with-capture")
		b.ReportMetric(with/without, "ratio")
		b.Logf("pgbench on the pool (100 tenants, insert+update): %.0f tps without capture, %.0f tps with capture running for one tenant (%.2fx)", without, with, with/without)
	}
}
