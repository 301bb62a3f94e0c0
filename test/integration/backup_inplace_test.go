package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/switchyard/switchyard/backup"
	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

// rawRows returns the tenant's rows of both tables with their xmin and
// ctid: equal before and after only if no row was written (not even
// rewritten with the same values).
func rawRows(t *testing.T, db *sqlx.DB, tenant string) []string {
	t.Helper()
	var out []string
	for _, q := range []string{
		`SELECT format('%s|%s|%s', xmin, ctid, o.*) FROM orders o WHERE tenant_id = $1 ORDER BY id`,
		`SELECT format('%s|%s|%s', xmin, ctid, e.*) FROM order_events e WHERE tenant_id = $1 ORDER BY order_id, seq`,
	} {
		var rows []string
		if err := db.Select(&rows, q, tenant); err != nil {
			t.Fatal(err)
		}
		out = append(out, rows...)
		out = append(out, "--")
	}
	return out
}

// readLoop reads a tenant through the routers until halted, counting
// failures and keeping the slowest answer.
type readLoop struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	reads    atomic.Int64
	failures atomic.Int64
	mu       sync.Mutex
	slowest  time.Duration
	failLog  []string
}

func (s *moveStack) startReads(tenant string, readers int) *readLoop {
	l := &readLoop{stop: make(chan struct{})}
	for i := 0; i < readers; i++ {
		l.wg.Add(1)
		go func(n int) {
			defer l.wg.Done()
			for j := 0; ; j++ {
				select {
				case <-l.stop:
					return
				default:
				}
				start := time.Now()
				_, status, by := s.do("GET", s.routers[(n+j)%len(s.routers)].url+"/t/"+tenant+"/orders?limit=5", nil)
				took := time.Since(start)
				l.reads.Add(1)
				l.mu.Lock()
				if status != 200 {
					l.failures.Add(1)
					if len(l.failLog) < 10 {
						l.failLog = append(l.failLog, fmt.Sprintf("%d %s", status, by))
					}
				}
				l.slowest = max(l.slowest, took)
				l.mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}(i)
	}
	return l
}

func (l *readLoop) halt() {
	close(l.stop)
	l.wg.Wait()
}

// inPlaceCase backs a tenant up, writes more to it through the routers,
// and restores it in place while readers hold on to it; it returns the
// tenant's rows at the backup, and just before the restore.
func (s *moveStack) inPlaceCase(t *testing.T, store backup.Store, mg *migrator.Migrator, tenant, targetID string) (atBackup, before []string, res *backup.InPlaceResult, reads *readLoop) {
	ctx := testContext(t)
	tn, err := s.store.GetTenant(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	target, _, err := s.store.GetTarget(ctx, targetID)
	if err != nil {
		t.Fatal(err)
	}
	dsn, _ := target.DSNFor(tenant)
	db := sqlxMustB(t, dsn)
	m, err := backup.Backup(ctx, backup.Request{Tenant: tn, Target: target, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	atBackup = rowsOf(t, db, tenant, "")
	if int64(len(atBackup)-2) != m.Rows() {
		t.Fatalf("%s: backup has %d rows, the tenant %d", tenant, m.Rows(), len(atBackup)-2)
	}
	// Written after the backup: new orders, an update, a delete.
	for i := 0; i < 15; i++ {
		if _, st, _ := s.do("POST", s.routers[i%2].url+"/t/"+tenant+"/orders", map[string]any{"item": fmt.Sprintf("after-%d", i), "quantity": 1, "price_cents": 1}); st != 201 {
			t.Fatalf("write after backup: %d", st)
		}
	}
	if _, err := db.ExecContext(ctx, `UPDATE orders SET item = 'changed after backup' WHERE tenant_id = $1 AND id = (SELECT min(id) FROM orders WHERE tenant_id = $1)`, tenant); err != nil {
		t.Fatal(err)
	}
	before = rowsOf(t, db, tenant, "")
	reads = s.startReads(tenant, 3)
	time.Sleep(200 * time.Millisecond)
	res, err = backup.RestoreInPlace(ctx, backup.InPlaceRequest{BackupID: m.ID, Store: store, Tenant: tenant, Target: target,
		Holder: mg, TempDir: t.TempDir(), Logger: testLogger(t)})
	time.Sleep(200 * time.Millisecond)
	reads.halt()
	if err != nil {
		t.Fatalf("restore %s in place: %v", tenant, err)
	}
	after := rowsOf(t, db, tenant, "")
	if err := sameRows(after, atBackup); err != nil {
		t.Fatalf("%s after the in-place restore differs from its backup: %v", tenant, err)
	}
	if err := sameRows(rowsOf(t, db, res.Retained, ""), before); err != nil {
		t.Fatalf("%s: retained copy %s differs from the data it replaced: %v", tenant, res.Retained, err)
	}
	for _, r := range after {
		if strings.Contains(r, "after-") || strings.Contains(r, "changed after backup") {
			t.Fatalf("%s: a write after the backup survived the restore: %s", tenant, r)
		}
	}
	return atBackup, before, res, reads
}

// TestBackupRestoreInPlace: a pooled tenant backed up, written more, then
// restored in place while a neighbour in the same pool writes through the
// routers and another sits idle: the neighbours see no failed request,
// the writing one keeps every acknowledged write (linearizable history)
// and its untouched rows, like the idle one's, are byte-identical (same
// xmin and ctid); the tenant's rows equal the backup's; its readers were
// held, not failed, for less than the cutover budget. Then undo, a
// dedicated-db tenant in place, and a schema mismatch refused.
func TestBackupRestoreInPlace(t *testing.T) {
	s := newMoveStack(t)
	ctx := testContext(t)
	store, err := backup.NewDirStore(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	mg := s.migrator(nil)
	s.seedTenant("acme", "free", catalog.TierShared, "pool-1", 40)
	s.seedTenant("nbr", "free", catalog.TierShared, "pool-1", 30)
	s.seedTenant("quiet", "free", catalog.TierShared, "pool-1", 30)
	pool := sqlxMustB(t, s.pgPool.DSN("pool"))
	quietBefore, nbrSeedBefore := rawRows(t, pool, "quiet"), rawRows(t, pool, "nbr")

	storm := s.startStorm("nbr", 4, 5*time.Millisecond)
	_, before, res, reads := s.inPlaceCase(t, store, mg, "acme", "pool-1")
	time.Sleep(100 * time.Millisecond)
	storm.halt()
	if n := storm.failures.Load(); n != 0 || storm.requests.Load() == 0 {
		t.Fatalf("neighbour nbr: %d of %d requests failed: %v", n, storm.requests.Load(), storm.failLog)
	}
	storm.checkModel(t, s.pgPool.DSN("pool"))
	if err := sameRows(rawRows(t, pool, "quiet"), quietBefore); err != nil {
		t.Fatalf("idle neighbour's rows changed: %v", err)
	}
	nbrSeedAfter := rawRows(t, pool, "nbr")
	for _, r := range nbrSeedBefore { // the storm touches only orders it created
		if !slices.Contains(nbrSeedAfter, r) {
			t.Fatalf("neighbour nbr's seed row changed or vanished: %s", r)
		}
	}
	if n := reads.failures.Load(); n != 0 {
		t.Fatalf("acme: %d of %d reads failed during the restore: %v", n, reads.reads.Load(), reads.failLog)
	}
	if res.Hold <= 0 || res.Hold >= 1500*time.Millisecond {
		t.Fatalf("hold %s, want under the 1.5s cutover budget", res.Hold)
	}
	t.Logf("acme restored in place: %d rows, hold %s (budget 1.5s), slowest of %d reads through the routers %s, neighbour nbr %d requests 0 failed",
		res.Rows, res.Hold, reads.reads.Load(), reads.slowest, storm.requests.Load())
	takesWrites(t, pool, "acme")

	t.Run("undo", func(t *testing.T) {
		cur := rowsOf(t, pool, "acme", "")
		target, _, _ := s.store.GetTarget(ctx, "pool-1")
		undo, err := backup.UndoInPlace(ctx, backup.UndoRequest{Tenant: "acme", Target: target, Holder: mg})
		if err != nil {
			t.Fatal(err)
		}
		got := rowsOf(t, pool, "acme", "")
		if err := sameRows(got, before); err != nil {
			t.Fatalf("undo: acme's rows are not those the restore replaced: %v", err)
		}
		if err := sameRows(rowsOf(t, pool, undo.Retained, ""), cur); err != nil {
			t.Fatalf("undo: the restored data is not retained: %v", err)
		}
		if err := sameRows(rawRows(t, pool, "quiet"), quietBefore); err != nil {
			t.Fatalf("idle neighbour's rows changed by the undo: %v", err)
		}
		t.Logf("undo held acme %s", undo.Hold)
	})

	t.Run("dedicated-db", func(t *testing.T) {
		s.seedTenant("dd", "pro", catalog.TierDedicatedDB, "db-1", 25)
		_, before, res, reads := s.inPlaceCase(t, store, mg, "dd", "db-1")
		if n := reads.failures.Load(); n != 0 {
			t.Fatalf("dd: %d reads failed: %v", n, reads.failLog)
		}
		t.Logf("dd restored in place: %d rows, hold %s, slowest read %s", res.Rows, res.Hold, reads.slowest)
		// The retention window passes: the leader's purge deletes the
		// retained copy, and undo then has nothing to go back to.
		dsn := s.pgDedicated.DSN(catalog.DatabaseName("dd"))
		db := sqlxMustB(t, dsn)
		if _, err := db.ExecContext(ctx, `UPDATE switchyard.restores SET retain_until = now() - interval '1 second' WHERE retained_key = $1`, res.Retained); err != nil {
			t.Fatal(err)
		}
		purged, err := backup.PurgeRetained(ctx, dsn)
		if err != nil || len(purged) != 1 || purged[0].Retained != res.Retained || purged[0].Rows != int64(len(before)-2) {
			t.Fatalf("purge: %+v, %v; want the %d rows under %s", purged, err, len(before)-2, res.Retained)
		}
		if left := rowsOf(t, db, res.Retained, ""); len(left) != 2 {
			t.Fatalf("purged copy still has rows: %v", left)
		}
		target, _, _ := s.store.GetTarget(ctx, "db-1")
		if _, err := backup.UndoInPlace(ctx, backup.UndoRequest{Tenant: "dd", Target: target, Holder: mg}); !errors.Is(err, backup.ErrNoRetained) {
			t.Fatalf("undo after the purge: %v, want ErrNoRetained", err)
		}
	})

	t.Run("swap-fails", func(t *testing.T) {
		tn, _ := s.store.GetTenant(ctx, "acme")
		target, _, _ := s.store.GetTarget(ctx, "pool-1")
		m, err := backup.Backup(ctx, backup.Request{Tenant: tn, Target: target, Store: store})
		if err != nil {
			t.Fatal(err)
		}
		was := rawRows(t, pool, "acme")
		_, err = backup.RestoreInPlace(ctx, backup.InPlaceRequest{BackupID: m.ID, Store: store, Tenant: "acme", Target: target,
			Holder: failingSwap{mg}, TempDir: t.TempDir()})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("restore with a failing swap: %v, want the swap's error", err)
		}
		if err := sameRows(rawRows(t, pool, "acme"), was); err != nil {
			t.Fatalf("a failed swap changed acme: %v", err)
		}
		var staged int
		if err := pool.Get(&staged, `SELECT count(*) FROM orders WHERE tenant_id LIKE '~s~%'`); err != nil || staged != 0 {
			t.Fatalf("staged rows left behind: %d, %v", staged, err)
		}
		if tn, _ := s.store.GetTenant(ctx, "acme"); tn.State != catalog.StateActive {
			t.Fatalf("acme is %s after a failed swap", tn.State)
		}
		if _, st, by := s.do("POST", s.routers[0].url+"/t/acme/orders", map[string]any{"item": "after a failed swap", "quantity": 1, "price_cents": 1}); st != 201 {
			t.Fatalf("acme takes no writes after a failed swap: %d %s", st, by)
		}
	})

	t.Run("schema-mismatch", func(t *testing.T) {
		tn, _ := s.store.GetTenant(ctx, "acme")
		target, _, _ := s.store.GetTarget(ctx, "pool-1")
		m, err := backup.Backup(ctx, backup.Request{Tenant: tn, Target: target, Store: store})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.ExecContext(ctx, `ALTER TABLE order_events ADD COLUMN note text`); err != nil {
			t.Fatal(err)
		}
		was := rawRows(t, pool, "acme")
		_, err = backup.RestoreInPlace(ctx, backup.InPlaceRequest{BackupID: m.ID, Store: store, Tenant: "acme", Target: target, Holder: mg, TempDir: t.TempDir()})
		if !errors.Is(err, migrator.ErrShapeMismatch) || !strings.Contains(err.Error(), "order_events") || !strings.Contains(err.Error(), "note") {
			t.Fatalf("restore into a changed schema: %v, want a mismatch naming order_events and note", err)
		}
		if err := sameRows(rawRows(t, pool, "acme"), was); err != nil {
			t.Fatalf("a refused restore changed acme: %v", err)
		}
		if tn, _ := s.store.GetTenant(ctx, "acme"); tn.State != catalog.StateActive {
			t.Fatalf("acme is %s after a refused restore", tn.State)
		}
	})
}

// failingSwap holds the tenant for real but runs the swap with a
// cancelled context: the swap's transaction fails inside the hold.
type failingSwap struct{ mg *migrator.Migrator }

func (f failingSwap) HoldTenant(ctx context.Context, req migrator.HoldRequest) (migrator.HoldResult, error) {
	swap := req.Swap
	req.Swap = func(ctx context.Context) error {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		return swap(cctx)
	}
	return f.mg.HoldTenant(ctx, req)
}

// testRestoreInPlaceAPI restores the "api" tenant (on cl-1) in place from
// backup id through the API, then undoes it; no router runs, so the hold
// needs no acknowledgement.
func testRestoreInPlaceAPI(t *testing.T, s *backupStack, base, id string) {
	t.Helper()
	db := s.db("cl-1", "api")
	atBackup := rowsOf(t, db, "api", "") // not written since the backup
	if _, err := db.Exec(`INSERT INTO orders (tenant_id, item, quantity, price_cents) VALUES ('api', 'after the backup', 1, 1)`); err != nil {
		t.Fatal(err)
	}
	before := rowsOf(t, db, "api", "")
	if st, body := call(t, "POST", base+"/v1/tenants/api/restore/undo", tokOperator, nil, nil); st != 404 || body["error"] != "no_retained" {
		t.Fatalf("undo before any in-place restore: %d %v, want 404 no_retained", st, body)
	}
	st, job := call(t, "POST", base+"/v1/tenants/api/restore", tokOperator, map[string]string{"from": id}, nil)
	if st != 202 {
		t.Fatalf("in-place restore: %d %v", st, job)
	}
	job = waitJob(t, base, job["id"].(string))
	if ip, _ := job["in_place"].(map[string]any); ip == nil || ip["retained"] == "" {
		t.Fatalf("in-place job reports no retained copy: %v", job)
	}
	if err := sameRows(rowsOf(t, db, "api", ""), atBackup); err != nil {
		t.Fatalf("api after the in-place restore: %v", err)
	}
	if st, body := call(t, "POST", base+"/v1/tenants/api/restore/undo", tokOperator, nil, nil); st != 200 {
		t.Fatalf("undo: %d %v", st, body)
	}
	if err := sameRows(rowsOf(t, db, "api", ""), before); err != nil {
		t.Fatalf("api after the undo: %v", err)
	}
	// The schema changed since the backup: refused before anything
	// changes, naming table and column.
	if _, err := db.Exec(`ALTER TABLE order_events ADD COLUMN note text`); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := db.Exec(`ALTER TABLE order_events DROP COLUMN note`); err != nil {
			t.Fatal(err)
		}
	}()
	st, body := call(t, "POST", base+"/v1/tenants/api/restore", tokOperator, map[string]string{"from": id}, nil)
	if msg := fmt.Sprint(body["message"]); st != 409 || !strings.Contains(msg, "order_events") || !strings.Contains(msg, "note") {
		t.Fatalf("in-place restore into a changed schema: %d %v, want 409 naming order_events and note", st, body)
	}
	if err := sameRows(rowsOf(t, db, "api", ""), before); err != nil {
		t.Fatalf("a refused in-place restore changed api: %v", err)
	}
}
