package integration

import (
	"context"
	"database/sql"

	"bufio"
	"errors"
	"github.com/jmoiron/sqlx"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// switchyardBinary builds cmd/switchyard once per test run.
func switchyardBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "switchyard-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "switchyard")
		out, err := exec.Command("go", "build", "-tags", "faultinject", "-o", binPath, "github.com/switchyard/switchyard/cmd/switchyard").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("build switchyard: %v", buildErr)
	}
	return binPath
}

// SIGKILL of the migrator process during the copy, the catch-up and the
// switch: a new migrator resumes (or rolls back the switch and retries),
// the move completes, the data is equal, nothing is left behind.
func TestMoveSurvivesSIGKILL(t *testing.T) {
	bin := switchyardBinary(t)
	for _, point := range []string{"copy", "catch-up", "switch"} {
		t.Run(point, func(t *testing.T) {
			s := newMoveStack(t)
			s.seedTenant("victim", "free", catalog.TierShared, "pool-1", 400)
			storm := s.startStorm("victim", 2, 3*time.Millisecond)
			cmd := exec.Command(bin, "move", "victim", "--to", "db-1", "--consul", s.consul.HTTPAddr(),
				"--chunk", "50", "--rate", "2000", "--lock-ttl", "1s", "--retention", "10ms")
			cmd.Env = append(os.Environ(), "SWITCHYARD_FAULT_STALL="+point)
			stderr, _ := cmd.StderrPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			stalled := make(chan bool, 1)
			go func() {
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					if strings.HasPrefix(sc.Text(), "STALLED AT") {
						stalled <- true
						break
					}
				}
				for sc.Scan() {
				}
			}()
			select {
			case <-stalled:
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("migrator never reached %s", point)
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			killedAt := time.Now()

			mg := newMigrator(t, s.consul.Client(), migrator.Config{ID: "resumer", LockTTL: time.Second, Logger: testLogger(t)})
			ctx := testContext(t)
			moves, err := mg.List(ctx)
			if err != nil || len(moves) != 1 {
				t.Fatalf("moves after the kill: %v %v", moves, err)
			}
			id := moves[0].ID
			t.Logf("killed in %s (phase %s)", point, moves[0].Phase)
			for {
				err := mg.Run(ctx, id)
				if errors.Is(err, migrator.ErrLocked) {
					if time.Since(killedAt) > 30*time.Second {
						t.Fatal("the dead migrator's lock never expired")
					}
					time.Sleep(200 * time.Millisecond)
					continue
				}
				if err != nil {
					t.Fatalf("resume: %v", err)
				}
				break
			}
			m, _ := mg.Get(ctx, id)
			if m.Phase != migrator.PhaseDone {
				t.Fatalf("after resume: %s (%s) %s", m.Phase, m.Status, m.Error)
			}
			time.Sleep(200 * time.Millisecond)
			storm.halt()
			if point != "switch" && storm.failures.Load() != 0 {
				t.Fatalf("%d failed requests: %v", storm.failures.Load(), storm.failLog)
			}
			if point == "switch" {
				// The tenant sat frozen and fenced while no migrator lived:
				// held requests timed out with 503 + Retry-After. Nothing else.
				for _, f := range storm.failLog {
					if !strings.Contains(f, ": 503") || !strings.Contains(f, "tenant_moving") {
						t.Fatalf("unexpected failure while frozen: %s", f)
					}
				}
				t.Logf("%d requests got 503 while the killed switch waited for a new migrator", storm.failures.Load())
			}
			tenant, _ := s.store.GetTenant(ctx, "victim")
			if tenant.Target != "db-1" || tenant.State != catalog.StateActive {
				t.Fatalf("catalog after resume: %+v", tenant)
			}
			storm.checkModel(t, dsnOf(t, s, "db-1", "victim"))
			if left := leftoversIn(t, s.pgPool.DSN("pool"), "victim"); len(left) > 0 {
				t.Fatalf("left behind on the source: %v", left)
			}
		})
	}
}

// A database stopped in the middle of the copy: the move pauses with the
// tenant still served from the source; after the database is back, a retry
// finishes it.
func TestMoveSurvivesDatabaseOutage(t *testing.T) {
	for _, side := range []string{"source", "target"} {
		t.Run(side, func(t *testing.T) {
			s := newMoveStack(t)
			s.seedTenant("fragile", "free", catalog.TierShared, "pool-1", 300)
			ctx := testContext(t)
			victim := s.pgDedicated
			if side == "source" {
				victim = s.pgPool
			}
			chunks := 0
			mg := s.migrator(&migrator.Hooks{AfterChunk: func(*migrator.Move) error {
				chunks++
				if chunks == 2 {
					if err := victim.Kill(); err != nil {
						t.Error(err)
					}
				}
				return nil
			}})
			m, _, err := mg.Create(ctx, migrator.Request{Tenant: "fragile", To: "db-1", Options: migrator.Options{ChunkRows: 50, Retention: time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			if err := mg.Run(ctx, m.ID); err == nil {
				t.Fatal("the move did not notice the database went away")
			}
			m, _ = mg.Get(ctx, m.ID)
			if m.Status != migrator.StatusPaused || m.Phase != migrator.PhaseCopy {
				t.Fatalf("after the outage: %s %s", m.Phase, m.Status)
			}
			tenant, _ := s.store.GetTenant(ctx, "fragile")
			if tenant.Target != "pool-1" || tenant.State != catalog.StateActive {
				t.Fatalf("tenant not left on the source: %+v", tenant)
			}
			if err := victim.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := mg.Retry(ctx, m.ID); err != nil {
				t.Fatal(err)
			}
			if err := mg.Run(ctx, m.ID); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if m, _ = mg.Get(ctx, m.ID); m.Phase != migrator.PhaseDone {
				t.Fatalf("after retry: %s %s %s", m.Phase, m.Status, m.Error)
			}
			var n int
			db := sqlxMust(t, dsnOf(t, s, "db-1", "fragile"))
			_ = db.Get(&n, `SELECT count(*) FROM orders WHERE tenant_id = 'fragile'`)
			if n != 300 {
				t.Fatalf("target has %d orders, want 300", n)
			}
		})
	}
}

// The fence: a direct write to the source after it fails; a transaction
// open across it is drained (its write reaches the target) before the
// switch; a REPEATABLE READ transaction whose snapshot predates it is
// rejected with a retryable error, never lost.
func TestMoveFence(t *testing.T) {
	s := newMoveStack(t)
	s.seedTenant("fenced", "free", catalog.TierShared, "pool-1", 50)
	ctx := testContext(t)
	src := sqlxMust(t, s.pgPool.DSN("pool"))
	var directErr, rrErr error
	var openCommitted time.Time
	var rr *sqlx.Tx
	mg := s.migrator(&migrator.Hooks{
		BeforeSwitch: func(*migrator.Move) error {
			// A writer's transaction is open across the fence: it commits
			// 150ms into the switch.
			tx := src.MustBegin()
			if _, err := tx.Exec(`INSERT INTO orders (tenant_id, item, quantity, price_cents) VALUES ('fenced', 'open-across-fence', 1, 1)`); err != nil {
				t.Error(err)
			}
			go func() {
				time.Sleep(150 * time.Millisecond)
				openCommitted = time.Now()
				if err := tx.Commit(); err != nil {
					t.Errorf("commit of the open transaction: %v", err)
				}
			}()
			var err error
			rr, err = src.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
			if err != nil {
				t.Error(err)
			}
			var n int
			_ = rr.Get(&n, `SELECT count(*) FROM orders`) // takes its snapshot now
			return nil
		},
		AfterFence: func(*migrator.Move) error {
			_, directErr = src.Exec(`INSERT INTO orders (tenant_id, item, quantity, price_cents) VALUES ('fenced', 'direct-after-fence', 1, 1)`)
			_, rrErr = rr.Exec(`UPDATE orders SET quantity = 99 WHERE tenant_id = 'fenced'`)
			_ = rr.Rollback()
			return nil
		},
	})
	m, _, err := mg.Create(ctx, migrator.Request{Tenant: "fenced", To: "db-1", Options: migrator.Options{Retention: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	if err := mg.Run(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if m, _ = mg.Get(ctx, m.ID); m.Phase != migrator.PhaseRetained {
		t.Fatalf("move: %s %s", m.Phase, m.Error)
	}
	if directErr == nil || !strings.Contains(directErr.Error(), "fenced") {
		t.Fatalf("direct write after the fence: %v", directErr)
	}
	if rrErr == nil || !strings.Contains(rrErr.Error(), "40001") && !strings.Contains(rrErr.Error(), "fence") {
		t.Fatalf("repeatable-read write across the fence: %v", rrErr)
	}
	if openCommitted.IsZero() {
		t.Fatal("the open transaction never committed")
	}
	dst := sqlxMust(t, dsnOf(t, s, "db-1", "fenced"))
	var n int
	_ = dst.Get(&n, `SELECT count(*) FROM orders WHERE tenant_id = 'fenced' AND item = 'open-across-fence'`)
	if n != 1 {
		t.Fatal("the write of the transaction open across the fence is not on the target")
	}
	_ = dst.Get(&n, `SELECT count(*) FROM orders WHERE tenant_id = 'fenced' AND item = 'direct-after-fence'`)
	if n != 0 {
		t.Fatal("a write refused by the fence reached the target")
	}
	// After the switch the source still refuses the tenant's writes.
	if _, err := src.Exec(`UPDATE orders SET quantity = 5 WHERE tenant_id = 'fenced'`); err == nil {
		t.Fatal("the retained source copy took a write")
	}
}

// DDL on a tenant table during the move is detected and stops the move
// before the switch; an abort then leaves nothing behind.
func TestMoveStopsOnDDL(t *testing.T) {
	s := newMoveStack(t)
	s.seedTenant("shifty", "free", catalog.TierShared, "pool-1", 200)
	ctx := testContext(t)
	src := sqlxMust(t, s.pgPool.DSN("pool"))
	chunks := 0
	mg := s.migrator(&migrator.Hooks{AfterChunk: func(*migrator.Move) error {
		if chunks++; chunks == 1 {
			if _, err := src.Exec(`ALTER TABLE orders ADD COLUMN note text`); err != nil {
				t.Error(err)
			}
		}
		return nil
	}})
	m, _, err := mg.Create(ctx, migrator.Request{Tenant: "shifty", To: "db-1", Options: migrator.Options{ChunkRows: 50}})
	if err != nil {
		t.Fatal(err)
	}
	err = mg.Run(ctx, m.ID)
	if !errors.Is(err, migrator.ErrDDL) {
		t.Fatalf("move with DDL in the middle: %v", err)
	}
	m, _ = mg.Get(ctx, m.ID)
	if m.Status != migrator.StatusPaused || m.Switched != (time.Time{}) {
		t.Fatalf("move after DDL: %s %s", m.Phase, m.Status)
	}
	tenant, _ := s.store.GetTenant(ctx, "shifty")
	if tenant.Target != "pool-1" || tenant.State != catalog.StateActive {
		t.Fatalf("tenant moved or frozen: %+v", tenant)
	}
	if m, err = mg.Abort(ctx, m.ID); err != nil || m.Phase != migrator.PhaseAborted {
		t.Fatalf("abort: %v %+v", err, m)
	}
	if left := leftoversIn(t, s.pgPool.DSN("pool"), "shifty-nothing"); len(left) > 0 {
		t.Fatalf("source left with %v", left)
	}
	if left := leftoversIn(t, dsnOf(t, s, "db-1", "shifty"), "shifty"); len(left) > 0 {
		t.Fatalf("target left with %v", left)
	}
	var n int
	_ = src.Get(&n, `SELECT count(*) FROM orders WHERE tenant_id = 'shifty'`)
	if n != 200 {
		t.Fatalf("source has %d orders after the abort, want 200", n)
	}
}

func sqlxMust(t *testing.T, dsn string) *sqlx.DB { return sqlxMustB(t, dsn) }

// Writers that keep adding parents and their children while the children
// are copied: every re-read of a child chunk holds rows whose parent is
// still in the change queue, and 16 unpaced clients keep writing orders and
// events meanwhile. The copy must get through within a bound (the parents'
// changes are applied up to a high-water mark, not until the queue is
// empty; the chunk is then written without the target checking foreign
// keys; catch-up brings the rest) and the moved tenant must equal the
// source.
func TestMoveCopiesChildrenWhileParentsKeepComing(t *testing.T) {
	const copyBound = 10 * time.Second
	s := newMoveStack(t)
	ctx := testContext(t)
	s.seedTenant("growing", "free", catalog.TierShared, "pool-1", 120)
	src := sqlxMust(t, s.pgPool.DSN("pool"))
	storm := s.startStorm("growing", 16, 0)
	defer storm.halt()
	time.Sleep(500 * time.Millisecond)
	added := 0
	mg := s.migrator(&migrator.Hooks{BeforeChunk: func(_ *migrator.Move, table string) error {
		if !strings.HasSuffix(table, "order_events") {
			return nil
		}
		// A new order and an event for it, written just before the chunk
		// is read: the event is in the chunk, its order only in the queue.
		var id int64
		if err := src.Get(&id, `INSERT INTO orders (tenant_id, item, quantity, price_cents) VALUES ('growing', 'late', 1, 1) RETURNING id`); err != nil {
			return err
		}
		if _, err := src.Exec(`INSERT INTO order_events (tenant_id, order_id, seq, kind) VALUES ('growing', $1, 1, 'created')`, id); err != nil {
			return err
		}
		added++
		return nil
	}})
	m, _, err := mg.Create(ctx, migrator.Request{Tenant: "growing", To: "pool-2", Options: migrator.Options{ChunkRows: 50, Retention: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithTimeout(ctx, 2*copyBound)
	err = mg.Run(runCtx, m.ID)
	cancel()
	storm.halt()
	got, _ := mg.Get(ctx, m.ID)
	if err != nil {
		t.Fatalf("move: %v (left in %s: %s)", err, got.Phase, got.Message)
	}
	if m = got; m.Phase != migrator.PhaseRetained && m.Phase != migrator.PhaseDone {
		t.Fatalf("move ended in %s (%s): %s", m.Phase, m.Status, m.Error)
	}
	if took := m.Took[migrator.PhaseCopy]; took > copyBound {
		t.Fatalf("the copy took %s with writers running, over the %s bound", took, copyBound)
	}
	if added < 2 {
		t.Fatalf("the hook added %d parent/child pairs; the race was not exercised", added)
	}
	if f := storm.failures.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed: %v", f, storm.requests.Load(), storm.failLog)
	}
	storm.checkModel(t, s.pgPool.DSN("pool2"))
	after := map[int64]bool{}
	for id, by := range storm.touchedOn {
		if by == "pool-2" {
			after[id] = true
		}
	}
	compareAtFence(t, s.pgPool.DSN("pool"), s.pgPool.DSN("pool2"), "growing", after)
	dst := sqlxMust(t, s.pgPool.DSN("pool2"))
	orphans := `SELECT count(*) FROM order_events e WHERE tenant_id = 'growing' AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.tenant_id = e.tenant_id AND o.id = e.order_id)`
	for name, db := range map[string]*sqlx.DB{"source": src, "target": dst} {
		var n int
		if err := db.Get(&n, orphans); err != nil || n != 0 {
			t.Fatalf("%s: %d events without their order (%v)", name, n, err)
		}
	}
	t.Logf("%d parent/child pairs written by the hook during the child copy, %d requests by the storm; copy took %s (bound %s)",
		added, storm.requests.Load(), m.Took[migrator.PhaseCopy].Round(time.Millisecond), copyBound)
}

// A catch-up that cannot keep up says so: apply is slowed (a hook) while
// unpaced writers keep going; within a few seconds the move's status reads
// not converging, with both rates and a message. An abort then leaves the
// tenant where it was: on the source, served, every acknowledged write
// there, the guard gone and the destination database dropped.
func TestMoveSaysWhenItCannotConverge(t *testing.T) {
	s := newMoveStack(t)
	ctx := testContext(t)
	s.seedTenant("swamped", "free", catalog.TierShared, "pool-1", 100)
	hooks := &migrator.Hooks{BeforeApply: func(m *migrator.Move, _ int) error {
		if m.Phase == migrator.PhaseCatchUp {
			time.Sleep(250 * time.Millisecond) // batches of 25: ≤ 100 changes/s
		}
		return nil
	}}
	mg := newMigrator(t, s.consul.Client(), migrator.Config{ID: "test", Logger: testLogger(t), Hooks: hooks, ConvergenceWindow: 2 * time.Second})
	storm := s.startStorm("swamped", 16, 0)
	defer storm.halt()
	m, _, err := mg.Create(ctx, migrator.Request{Tenant: "swamped", To: "db-1", Options: migrator.Options{ApplyBatch: 25, Retention: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mg.Run(ctx, m.ID) }()
	var said *migrator.Move
	waitFor(t, 20*time.Second, "the move to say it is not converging", func() bool {
		got, err := mg.Get(ctx, m.ID)
		if err == nil && got.Converging != nil && !*got.Converging && got.ApplyPerS > 0 && got.CapturePerS > got.ApplyPerS && got.Message != "" {
			said = got
		}
		return said != nil
	})
	t.Logf("status: backlog %d, captured %.0f/s, applied %.0f/s, stalled since %s, ETA %q: %s",
		said.Backlog, said.CapturePerS, said.ApplyPerS, said.StalledSince.Format(time.RFC3339), said.ETA, said.Message)
	if said.ETA != "" {
		t.Fatalf("an ETA (%s) for a catch-up that does not converge", said.ETA)
	}
	if _, err := mg.Abort(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after abort: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the running migrator did not take the abort within 20s")
	}
	time.Sleep(300 * time.Millisecond) // writes keep landing on the source
	storm.halt()
	if m, _ = mg.Get(ctx, m.ID); m.Phase != migrator.PhaseAborted {
		t.Fatalf("after abort: %s (%s): %s", m.Phase, m.Status, m.Error)
	}
	if f := storm.failures.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed: %v", f, storm.requests.Load(), storm.failLog)
	}
	tenant, err := s.store.GetTenant(ctx, "swamped")
	if err != nil || tenant.Target != "pool-1" || tenant.State != catalog.StateActive {
		t.Fatalf("tenant after abort: %+v %v", tenant, err)
	}
	if _, status, _ := s.do("POST", s.routers[0].url+"/t/swamped/orders", map[string]any{"item": "after", "quantity": 1, "price_cents": 1}); status != 201 {
		t.Fatalf("a write after the abort: status %d", status)
	}
	storm.checkModel(t, s.pgPool.DSN("pool"))
	if left := leftoversIn(t, s.pgPool.DSN("pool"), "nobody"); len(left) > 0 {
		t.Fatalf("source left with %v", left)
	}
	if left := leftoversIn(t, dsnOf(t, s, "db-1", "swamped"), "swamped"); len(left) > 0 {
		t.Fatalf("destination left with %v", left)
	}
	t.Logf("aborted in catch-up after %d requests, 0 failed; the tenant stays on pool-1", storm.requests.Load())
}

// Writers adding rows faster than the copy moves them: the copy stops at
// the rows that existed when it began (later ones come through the change
// capture in catch-up) instead of chasing the table's end forever.
func TestMoveCopyEndsWhileWritersOutpaceIt(t *testing.T) {
	s := newMoveStack(t)
	ctx := testContext(t)
	s.seedTenant("busy", "free", catalog.TierShared, "pool-1", 100)
	src := sqlxMust(t, s.pgPool.DSN("pool"))
	const maxRounds = 40 // without a bound the copy would need all of them
	rounds := 0
	mg := s.migrator(&migrator.Hooks{BeforeChunk: func(_ *migrator.Move, table string) error {
		if !strings.HasSuffix(table, ".orders") || rounds >= maxRounds {
			return nil
		}
		rounds++
		// More new rows than one chunk copies.
		_, err := src.Exec(`INSERT INTO orders (tenant_id, item, quantity, price_cents)
			SELECT 'busy', 'burst-' || g, 1, g FROM generate_series(1, 60) g`)
		return err
	}})
	m, _, err := mg.Create(ctx, migrator.Request{Tenant: "busy", To: "pool-2", Options: migrator.Options{ChunkRows: 50}})
	if err != nil {
		t.Fatal(err)
	}
	if err := mg.Run(ctx, m.ID); err != nil {
		t.Fatalf("move: %v", err)
	}
	if rounds >= maxRounds {
		t.Fatalf("the copy of orders took %d chunks for 100 rows: it chased the writers", rounds)
	}
	var a, b int
	_ = src.Get(&a, `SELECT count(*) FROM orders WHERE tenant_id = 'busy'`)
	_ = sqlxMust(t, s.pgPool.DSN("pool2")).Get(&b, `SELECT count(*) FROM orders WHERE tenant_id = 'busy'`)
	if a != b || a < 100+60 {
		t.Fatalf("orders: source %d, target %d", a, b)
	}
	t.Logf("orders copied in %d chunks while %d rows were added", rounds, 60*rounds)
}
