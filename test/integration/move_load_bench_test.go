package integration

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/migrator"
)

// BenchmarkMoveUnderLoad: how busy a tenant may be and still move. A
// tenant of SWITCHYARD_LOAD_ROWS rows (100,000) moves from a shared pool to
// another pool idle, then under writer storms through two routers paced at
// each rate of SWITCHYARD_LOAD_RATES (writes/s; 0 is unthrottled: 32
// writers without sleeps, the orders app's saturation on this machine),
// each on a fresh tenant so every move copies. Per rate it reports the
// write rate reached, whether the move finished within
// SWITCHYARD_LOAD_BOUND (120s), its copy time against the idle copy's,
// the apply rate against the capture rate, and the pause; a storm request
// that fails fails the benchmark. Run with -benchtime=1x.
func BenchmarkMoveUnderLoad(b *testing.B) {
	rows := envInt(b, "SWITCHYARD_LOAD_ROWS", 100_000)
	rates := []float64{500, 1000, 2000, 0}
	if env := os.Getenv("SWITCHYARD_LOAD_RATES"); env != "" {
		rates = nil
		for _, f := range strings.Split(env, ",") {
			r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil {
				b.Fatalf("SWITCHYARD_LOAD_RATES: %v", err)
			}
			rates = append(rates, r)
		}
	}
	bound := time.Duration(envInt(b, "SWITCHYARD_LOAD_BOUND", 120)) * time.Second
	for i := 0; i < b.N; i++ {
		s := newMoveStack(b)
		mg := newMigrator(b, s.consul.Client(), migrator.Config{Logger: testLogger(b)})
		s.seedTenantBulk("idle", rows)
		idle := loadMove(b, mg, "idle", bound)
		idleCopy := idle.Took[migrator.PhaseCopy]
		b.Logf("idle: copy %s, whole move %s, pause %s", idleCopy.Round(time.Millisecond),
			idle.Updated.Sub(idle.Created).Round(time.Millisecond), idle.Pause.Round(100*time.Microsecond))
		b.ReportMetric(idleCopy.Seconds(), "idle-copy-s")
		for _, rate := range rates {
			moveAtRate(b, s, mg, rows, rate, bound, idleCopy)
		}
	}
}

// moveAtRate moves a fresh tenant of rows rows under a storm at rate
// writes/s (0: unthrottled) and reports what happened.
func moveAtRate(b *testing.B, s *moveStack, mg *migrator.Migrator, rows int, rate float64, bound, idleCopy time.Duration) {
	tenant := fmt.Sprintf("load-%d", int(rate))
	s.seedTenantBulk(tenant, rows)
	m, reached := stormedMove(b, s, mg, tenant, rate, bound, nil)
	label := fmt.Sprintf("%.0f", rate)
	if rate == 0 {
		label = "max"
	}
	finished := m.Phase == migrator.PhaseRetained
	copyTook := m.Took[migrator.PhaseCopy]
	b.ReportMetric(reached, "writes/s@"+label)
	b.ReportMetric(copyTook.Seconds()/idleCopy.Seconds(), "copy-vs-idle@"+label)
	b.Logf("target %s writes/s: reached %.0f writes/s; move %s %s in %s (bound %s); copy %s = %.2fx idle; catch-up %s; apply %.0f changes/s vs capture %.0f/s (%.1fx); pause %s",
		label, reached, m.Phase, m.Status, m.Updated.Sub(m.Created).Round(time.Millisecond), bound,
		copyTook.Round(time.Millisecond), copyTook.Seconds()/idleCopy.Seconds(), m.Took[migrator.PhaseCatchUp].Round(time.Millisecond),
		m.ApplyPerS, m.CapturePerS, m.ApplyPerS/max(m.CapturePerS, 1), m.Pause.Round(100*time.Microsecond))
	if !finished {
		b.Errorf("target %s writes/s: the move did not finish within %s: %s %s %s", label, bound, m.Phase, m.Status, m.Error)
	}
}

// stormedMove moves tenant from pool-1 to pool-2 (loadMove) while a storm
// writes to it at rate writes/s (0: 32 writers without sleeps, the orders
// app's saturation), started 2 s before the move. watch, if set, is called
// once the storm runs and returns what to call when the move has ended,
// before the storm stops. A failed storm request fails the benchmark. It
// returns the move and the write rate reached.
func stormedMove(b *testing.B, s *moveStack, mg *migrator.Migrator, tenant string, rate float64, bound time.Duration, watch func() func()) (*migrator.Move, float64) {
	var storm *writerStorm
	if rate > 0 {
		storm = s.startStormAt(tenant, 64, rate)
	} else {
		storm = s.startStorm(tenant, 32, 0)
	}
	start := time.Now()
	time.Sleep(2 * time.Second)
	stop := func() {}
	if watch != nil {
		stop = watch()
	}
	m := loadMove(b, mg, tenant, bound)
	stop()
	reached := float64(storm.requests.Load()) / time.Since(start).Seconds()
	storm.halt()
	if f := storm.failures.Load(); f != 0 {
		b.Fatalf("rate %.0f: %d of %d requests failed: %v", rate, f, storm.requests.Load(), storm.failLog)
	}
	return m, reached
}

// loadMove moves tenant from pool-1 to pool-2 and waits at most bound; it
// returns the move as it stands then (an unfinished one is aborted).
func loadMove(b *testing.B, mg *migrator.Migrator, tenant string, bound time.Duration) *migrator.Move {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	m, _, err := mg.Create(ctx, migrator.Request{Tenant: tenant, To: "pool-2", Options: migrator.Options{Retention: time.Hour}})
	if err != nil {
		b.Fatal(err)
	}
	runErr := mg.Run(ctx, m.ID)
	got, err := mg.Get(context.Background(), m.ID)
	if err != nil {
		b.Fatal(err)
	}
	if runErr != nil && got.Phase != migrator.PhaseRetained {
		b.Logf("move of %s: %v", tenant, runErr)
	}
	return got
}

// envInt reads a positive integer from the environment (def if unset).
func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s: want a positive integer, got %q", name, v)
	}
	return n
}
