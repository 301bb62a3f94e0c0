package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

func dsnOf(t *testing.T, s *moveStack, target, tenant string) string {
	t.Helper()
	tg, _, err := s.store.GetTarget(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	dsn, err := tg.DSNFor(tenant)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// Writer storm: 16 clients with no pause between requests insert, update
// and delete orders (and so their order_events children) through two
// routers, and the move must finish while they run, within a stated bound
// (issue 8: a busy tenant's move used to sit in copy or catch-up forever),
// in every direction between tiers. Afterwards: zero failed requests, every
// acknowledged write on the target, source at the fence equal to the target.
func TestMoveUnderWriterStorm(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tier     catalog.Tier
		from, to string
		toTier   catalog.Tier
	}{
		{"pool to dedicated-db", catalog.TierShared, "pool-1", "db-1", catalog.TierDedicatedDB},
		{"pool to dedicated-cluster", catalog.TierShared, "pool-1", "cl-1", catalog.TierDedicatedCluster},
		{"dedicated-db to dedicated-cluster", catalog.TierDedicatedDB, "db-1", "cl-1", catalog.TierDedicatedCluster},
		{"dedicated-cluster to pool", catalog.TierDedicatedCluster, "cl-1", "pool-2", catalog.TierShared},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newMoveStack(t)
			s.seedTenant("stormy", "free", tc.tier, tc.from, 300)
			s.seedTenant("neighbour", "free", catalog.TierShared, "pool-1", 10)
			stormMove(t, s, tc.from, tc.to, tc.toTier)
		})
	}
}

// stormMove moves "stormy" from → to under 16 unpaced writers (and a paced
// neighbour in pool-1) and checks the outcome.
func stormMove(t *testing.T, s *moveStack, from, to string, toTier catalog.Tier) {
	const moveBound = 15 * time.Second // the storm runs ≤ ~18 s in all
	ctx := testContext(t)
	waitFor(t, 10*time.Second, "both routers registered for cutovers", func() bool {
		live, _ := s.store.LiveRouters(ctx)
		return len(live) == 2
	})
	srcDSN := dsnOf(t, s, from, "stormy")
	mg := s.migrator(nil)
	storm := s.startStorm("stormy", 16, 0)
	neighbours := s.startStorm("neighbour", 1, 5*time.Millisecond)
	defer neighbours.halt()
	defer storm.halt()
	stormStart := time.Now()
	time.Sleep(time.Second)
	moveStart := time.Now()
	m, _, err := mg.Create(ctx, migrator.Request{Tenant: "stormy", To: to, Reason: "plan change",
		Options: migrator.Options{ChunkRows: 100, Retention: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithTimeout(ctx, moveBound)
	err = mg.Run(runCtx, m.ID)
	cancel()
	moveEnd := time.Now()
	if err != nil {
		m, _ = mg.Get(ctx, m.ID)
		t.Fatalf("the move did not finish within %s while the storm ran: %v; left in %s (%s): backlog %d, %.0f/s captured, %.0f/s applied: %s",
			moveBound, err, m.Phase, m.Status, m.Backlog, m.CapturePerS, m.ApplyPerS, m.Message)
	}
	time.Sleep(300 * time.Millisecond)
	stormEnd := time.Now()
	storm.halt()
	neighbours.halt()
	m, _ = mg.Get(ctx, m.ID)
	if m.Phase != migrator.PhaseRetained {
		t.Fatalf("move ended in %s (%s): %s", m.Phase, m.Status, m.Error)
	}
	if f := storm.failures.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed during the move: %v", f, storm.requests.Load(), storm.failLog)
	}
	if f := neighbours.failures.Load(); f != 0 {
		t.Fatalf("neighbour tenant: %d failed requests: %v", f, neighbours.failLog)
	}
	t.Logf("%s → %s: %d requests, 0 failed (%.0f requests/s by 16 unpaced clients, 1 in 10 a read); served by %v; move took %s (copy %s, catch-up %s), switch pause %s %v; apply %.0f changes/s, capture %.0f/s",
		from, to, storm.requests.Load(), float64(storm.requests.Load())/stormEnd.Sub(stormStart).Seconds(), storm.servedBy,
		moveEnd.Sub(moveStart).Round(time.Millisecond), m.Took[migrator.PhaseCopy].Round(time.Millisecond),
		m.Took[migrator.PhaseCatchUp].Round(time.Millisecond), m.Pause, m.PauseSteps, m.ApplyPerS, m.CapturePerS)
	if storm.servedBy[to] == 0 || storm.servedBy[from] == 0 {
		t.Fatalf("writes were not spread across the move: %v", storm.servedBy)
	}
	// Audit: after the flip no write of the tenant went to the source, by
	// either router (the flip is done before m.Switched is stamped).
	for _, e := range storm.log {
		if e.start.After(m.Switched) && e.servedBy != to {
			t.Fatalf("a write started %s after the switch was served by %s", e.start.Sub(m.Switched), e.servedBy)
		}
	}
	before, nb := neighbours.p99(stormStart, moveStart)
	during, nd := neighbours.p99(moveStart, moveEnd)
	t.Logf("neighbour tenant in pool-1: write p99 %s before the move (%d writes), %s during it (%d writes)", before, nb, during, nd)
	tenant, _ := s.store.GetTenant(ctx, "stormy")
	if tenant.Target != to || tenant.Tier != toTier || tenant.State != catalog.StateActive {
		t.Fatalf("catalog after move: %+v", tenant)
	}
	dst := dsnOf(t, s, to, "stormy")
	storm.checkModel(t, dst)
	after := map[int64]bool{}
	for id, by := range storm.touchedOn {
		if by == to {
			after[id] = true
		}
	}
	compareAtFence(t, srcDSN, dst, "stormy", after)
}

// leftoversIn lists what a finished or aborted move may have left in a
// database for the tenant: guard triggers, captured changes, fences, rows.
func leftoversIn(t *testing.T, dsn, tenant string) []string {
	t.Helper()
	db, err := sqlx.Connect("postgres", dsn)
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return nil // a dropped dedicated database leaves nothing
		}
		t.Fatal(err)
	}
	defer db.Close()
	var out []string
	var n int
	_ = db.Get(&n, `SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'switchyard\_%'`)
	if n > 0 {
		out = append(out, fmt.Sprintf("%d switchyard triggers", n))
	}
	var schema bool
	_ = db.Get(&schema, `SELECT to_regclass('switchyard.changes') IS NOT NULL`)
	if schema {
		out = append(out, "switchyard schema")
	}
	var slots, pubs int
	_ = db.Get(&slots, `SELECT count(*) FROM pg_replication_slots`)
	_ = db.Get(&pubs, `SELECT count(*) FROM pg_publication`)
	if slots+pubs > 0 {
		out = append(out, fmt.Sprintf("%d slots, %d publications", slots, pubs))
	}
	for _, tbl := range []string{"orders", "order_events"} {
		var exists bool
		_ = db.Get(&exists, `SELECT to_regclass($1) IS NOT NULL`, tbl)
		if !exists {
			continue
		}
		_ = db.Get(&n, fmt.Sprintf(`SELECT count(*) FROM %s WHERE tenant_id = $1`, tbl), tenant)
		if n > 0 {
			out = append(out, fmt.Sprintf("%d rows in %s", n, tbl))
		}
	}
	return out
}

// One tenant travels every direction: pool → pool, shared → dedicated-db,
// dedicated-db → dedicated-cluster, and back down to the shared pool, with a
// writer running throughout; another goes straight from shared to a
// dedicated cluster. After each move the source is cleaned up completely.
func TestMoveEveryDirection(t *testing.T) {
	s := newMoveStack(t)
	s.seedTenant("traveller", "free", catalog.TierShared, "pool-1", 200)
	ctx := testContext(t)
	mg := s.migrator(nil)
	storm := s.startStorm("traveller", 2, 3*time.Millisecond)
	path := []string{"pool-2", "db-1", "cl-1", "pool-1"}
	from := "pool-1"
	for _, to := range path {
		srcDSN := dsnOf(t, s, from, "traveller")
		m, _, err := mg.Create(ctx, migrator.Request{Tenant: "traveller", To: to,
			Options: migrator.Options{ChunkRows: 64, Retention: 10 * time.Millisecond}})
		if err != nil {
			t.Fatalf("%s → %s: %v", from, to, err)
		}
		if err := mg.Run(ctx, m.ID); err != nil {
			t.Fatalf("%s → %s: %v", from, to, err)
		}
		m, _ = mg.Get(ctx, m.ID)
		if m.Phase != migrator.PhaseDone {
			t.Fatalf("%s → %s ended in %s: %s", from, to, m.Phase, m.Error)
		}
		if left := leftoversIn(t, srcDSN, "traveller"); len(left) > 0 {
			t.Fatalf("%s → %s left behind on the source: %v", from, to, left)
		}
		t.Logf("%s → %s: pause %s", from, to, m.Pause)
		from = to
	}
	storm.halt()
	if f := storm.failures.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed: %v", f, storm.requests.Load(), storm.failLog)
	}
	storm.checkModel(t, dsnOf(t, s, "pool-1", "traveller"))

	s.seedTenant("bigcorp", "free", catalog.TierShared, "pool-2", 100)
	m, _, err := mg.Create(ctx, migrator.Request{Tenant: "bigcorp", To: "cl-1", Options: migrator.Options{Retention: 10 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if err := mg.Run(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if m, _ = mg.Get(ctx, m.ID); m.Phase != migrator.PhaseDone {
		t.Fatalf("shared → dedicated-cluster ended in %s: %s", m.Phase, m.Error)
	}
	// The cluster is now taken: a dry run says so, and changes nothing.
	rep, err := mg.Preflight(ctx, migrator.Request{Tenant: "traveller", To: "cl-1"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || !strings.Contains(rep.Summary(), "dedicated cluster free") {
		t.Fatalf("preflight onto a taken cluster: %+v", rep)
	}
	if _, _, err := mg.Create(ctx, migrator.Request{Tenant: "traveller", To: "cl-1"}); !errors.Is(err, migrator.ErrPreflight) {
		t.Fatalf("create onto a taken cluster: %v", err)
	}
}

// Within the retention window a tenant moves back quickly: the retained,
// fenced copy on the old target is re-synced by difference instead of
// copied again, and the earlier move is closed so its cleanup never runs.
func TestQuickMoveBack(t *testing.T) {
	s := newMoveStack(t)
	s.seedTenant("fickle", "free", catalog.TierShared, "pool-1", 300)
	ctx := testContext(t)
	mg := s.migrator(nil)
	storm := s.startStorm("fickle", 2, 3*time.Millisecond)
	up, _, err := mg.Create(ctx, migrator.Request{Tenant: "fickle", To: "db-1", Options: migrator.Options{Retention: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	if err := mg.Run(ctx, up.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // writes land on db-1 only
	rep, err := mg.Preflight(ctx, migrator.Request{Tenant: "fickle", To: "pool-1"})
	if err != nil || !rep.OK {
		t.Fatalf("preflight of the move back: %v %s", err, rep.Summary())
	}
	back, _, err := mg.Create(ctx, migrator.Request{Tenant: "fickle", To: "pool-1", Options: migrator.Options{Retention: 10 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if err := mg.Run(ctx, back.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	storm.halt()
	back, _ = mg.Get(ctx, back.ID)
	if back.Phase != migrator.PhaseDone || !back.Resync {
		t.Fatalf("move back: phase %s resync %v: %s", back.Phase, back.Resync, back.Error)
	}
	var copied int64
	for _, tp := range back.Tables {
		copied += tp.Rows
	}
	t.Logf("move back re-synced in %s (copy phase), pause %s", back.Took[migrator.PhaseCopy], back.Pause)
	up, _ = mg.Get(ctx, up.ID)
	if up.Phase != migrator.PhaseDone || !strings.Contains(up.Error, "superseded") {
		t.Fatalf("the first move was not closed: %s %s", up.Phase, up.Error)
	}
	if f := storm.failures.Load(); f != 0 {
		t.Fatalf("%d failed requests: %v", f, storm.failLog)
	}
	storm.checkModel(t, s.pgPool.DSN("pool"))
	if left := leftoversIn(t, s.pgPool.DSN("pool"), "nobody"); len(left) > 0 {
		t.Fatalf("pool left with %v", left)
	}
	if left := leftoversIn(t, dsnOf(t, s, "db-1", "fickle"), "fickle"); len(left) > 0 {
		t.Fatalf("db-1 left with %v", left)
	}
	// Running the first move again (as ResumeAll would) deletes nothing.
	if err := mg.Run(ctx, up.ID); err != nil {
		t.Fatal(err)
	}
	storm.checkModel(t, s.pgPool.DSN("pool"))
}
