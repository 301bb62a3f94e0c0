package migrator

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/switchyard/switchyard/test/harness"
)

const testSchema = `
CREATE TABLE orders (tenant_id text NOT NULL, id bigserial, item text NOT NULL, qty int NOT NULL DEFAULT 1, PRIMARY KEY (tenant_id, id));
CREATE TABLE events (tenant_id text NOT NULL, order_id bigint NOT NULL, seq int NOT NULL, kind text NOT NULL,
	PRIMARY KEY (tenant_id, order_id, seq), FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, id) ON DELETE CASCADE);
`

// twoDatabases returns the source and target databases and an applier
// between them for tenant acme (not yet told the tables).
func twoDatabases(t *testing.T) (*sqlx.DB, *sqlx.DB, *applier) {
	pg := harness.PostgresT(t)
	ctx := context.Background()
	var dbs []*sqlx.DB
	for _, name := range []string{"src", "dst"} {
		if err := pg.CreateDatabase(ctx, name); err != nil {
			t.Fatal(err)
		}
		db, err := sqlx.Connect("postgres", pg.DSN(name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if _, err := db.Exec(testSchema); err != nil {
			t.Fatal(err)
		}
		dbs = append(dbs, db)
	}
	a := &applier{src: dbs[0], dst: dbs[1], srcDSN: pg.DSN("src"), dstDSN: pg.DSN("dst"), keyColumn: "tenant_id", tenant: "acme", batch: 1000}
	t.Cleanup(a.close)
	return dbs[0], dbs[1], a
}

// capturing is twoDatabases with the applier told the tables and its batch
// size, and tenant acme's changes captured on the source.
func capturing(t *testing.T, batch int) (*sqlx.DB, *sqlx.DB, *applier, []Table) {
	src, dst, a := twoDatabases(t)
	ctx := context.Background()
	tables, err := DiscoverTables(ctx, src, "tenant_id")
	if err != nil {
		t.Fatal(err)
	}
	a.tables, a.batch = tables, batch
	if err := installGuard(ctx, src, tables, "tenant_id", "acme", "capture"); err != nil {
		t.Fatal(err)
	}
	return src, dst, a, tables
}

// Captured inserts, updates and deletes of parents and children replay onto
// the target in one pass, and a second replay changes nothing.
func TestCaptureAndApply(t *testing.T) {
	src, dst, a := twoDatabases(t)
	ctx := context.Background()
	tables, err := DiscoverTables(ctx, src, "tenant_id")
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != 2 || tables[0].Name != "orders" || tables[1].Name != "events" {
		t.Fatalf("tables in copy order: %+v", tables)
	}
	if err := installGuard(ctx, src, tables, "tenant_id", "acme", "capture"); err != nil {
		t.Fatal(err)
	}
	mustExec := func(db *sqlx.DB, q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for i := 1; i <= 5; i++ {
		mustExec(src, `WITH o AS (INSERT INTO orders (tenant_id, item) VALUES ('acme', 'x') RETURNING id)
			INSERT INTO events SELECT 'acme', id, 1, 'created' FROM o`)
	}
	mustExec(src, `INSERT INTO orders (tenant_id, item) VALUES ('other', 'not captured')`)
	mustExec(src, `UPDATE orders SET qty = 9 WHERE tenant_id = 'acme' AND id = 2`)
	mustExec(src, `DELETE FROM orders WHERE tenant_id = 'acme' AND id = 3`)
	a.tables = tables
	if n, _ := a.backlog(ctx); n != 5*2+1+2 {
		t.Fatalf("backlog %d", n)
	}
	hwm, err := a.highWater(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n, err := a.applyTo(ctx, hwm, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("applied nothing")
	}
	mm, _, err := verifyAll(ctx, src, dst, tables, "tenant_id", "acme", 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(mm) != 0 {
		t.Fatalf("after apply: %v", mm)
	}
	var other int
	_ = dst.Get(&other, `SELECT count(*) FROM orders WHERE tenant_id = 'other'`)
	if other != 0 {
		t.Fatal("another tenant's row was applied")
	}
	// Replaying the same keys again is harmless.
	if err := a.sync(ctx, map[string][]json.RawMessage{"public.orders": {json.RawMessage(`{"tenant_id":"acme","id":2}`), json.RawMessage(`{"tenant_id":"acme","id":3}`)}}); err != nil {
		t.Fatal(err)
	}
	if mm, _, _ := verifyAll(ctx, src, dst, tables, "tenant_id", "acme", 20); len(mm) != 0 {
		t.Fatalf("after replay: %v", mm)
	}
	// A difference is found and named by key.
	mustExec(dst, `UPDATE orders SET item = 'tampered' WHERE tenant_id = 'acme' AND id = 4`)
	mm, _, err = verifyAll(ctx, src, dst, tables, "tenant_id", "acme", 20)
	if err != nil || len(mm) != 1 || len(mm[0].Keys) != 1 || mm[0].Keys[0] != `{"id": 4, "tenant_id": "acme"}` {
		t.Fatalf("verify did not name the tampered row: %+v %v", mm, err)
	}
}

// A high-water mark bounds an apply: changes captured after it was taken
// stay for the next step, however many there are.
func TestApplyStopsAtHighWater(t *testing.T) {
	src, dst, a, _ := capturing(t, 7)
	ctx := context.Background()
	if _, err := src.Exec(`INSERT INTO orders (tenant_id, item) SELECT 'acme', 'x' FROM generate_series(1, 20)`); err != nil {
		t.Fatal(err)
	}
	hwm, err := a.highWater(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A writer keeps adding while the apply runs: after every batch.
	added := 0
	n, err := a.applyTo(ctx, hwm, nil, func(int, map[string][]json.RawMessage) error {
		added += 5
		_, err := src.Exec(`INSERT INTO orders (tenant_id, item) SELECT 'acme', 'late' FROM generate_series(1, 5)`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 20 {
		t.Fatalf("applied %d changes, want the 20 up to the mark", n)
	}
	if left, _ := a.backlog(ctx); left != added {
		t.Fatalf("backlog %d, want the %d captured after the mark", left, added)
	}
	var got int
	_ = dst.Get(&got, `SELECT count(*) FROM orders WHERE tenant_id = 'acme'`)
	if got != 20 {
		t.Fatalf("target has %d orders, want 20", got)
	}
}

// Pipelined batches fail whole: when the target refuses a batch, that
// batch and the next (claimed and read meanwhile) stay captured, the one
// before stays applied, and a later pass applies the rest.
func TestApplyPipelineFailureLeavesChangesQueued(t *testing.T) {
	src, dst, a, tables := capturing(t, 5)
	ctx := context.Background()
	// Changes 1–5 good, 6–10 refused by the target, 11–20 good.
	for _, q := range []string{
		`INSERT INTO orders (tenant_id, item) SELECT 'acme', 'good' FROM generate_series(1, 5)`,
		`INSERT INTO orders (tenant_id, item) SELECT 'acme', 'bad' FROM generate_series(1, 5)`,
		`INSERT INTO orders (tenant_id, item) SELECT 'acme', 'good' FROM generate_series(1, 10)`,
	} {
		if _, err := src.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dst.Exec(`ALTER TABLE orders ADD CONSTRAINT no_bad CHECK (item <> 'bad')`); err != nil {
		t.Fatal(err)
	}
	var batches []int
	n, err := a.applyTo(ctx, math.MaxInt64, nil, func(n int, _ map[string][]json.RawMessage) error {
		batches = append(batches, n)
		return nil
	})
	if err == nil || n != 5 || !slices.Equal(batches, []int{5}) {
		t.Fatalf("applied %d in batches %v, err %v; want the first batch of 5 and the target's refusal", n, batches, err)
	}
	var onTarget int
	_ = dst.Get(&onTarget, `SELECT count(*) FROM orders WHERE tenant_id = 'acme'`)
	if left, _ := a.backlog(ctx); left != 15 || onTarget != 5 {
		t.Fatalf("backlog %d and %d rows on the target, want 15 queued and 5 applied", left, onTarget)
	}
	if _, err := dst.Exec(`ALTER TABLE orders DROP CONSTRAINT no_bad`); err != nil {
		t.Fatal(err)
	}
	if n, err := a.applyTo(ctx, math.MaxInt64, nil, nil); err != nil || n != 15 {
		t.Fatalf("second pass applied %d: %v", n, err)
	}
	if mm, _, err := verifyAll(ctx, src, dst, tables, "tenant_id", "acme", 5); err != nil || len(mm) != 0 {
		t.Fatalf("after the second pass: %v %v", mm, err)
	}
}

// A writer's transaction comes whole through the pipeline: its parent's
// change has an id below the first batch's but commits after that batch's
// snapshot, with a child whose id is above; the next batch, claimed while
// the first is written, takes both, and the target's foreign key holds.
func TestApplyPipelineKeepsLateParentWithChild(t *testing.T) {
	src, dst, a, tables := capturing(t, 2)
	ctx := context.Background()
	writer, err := src.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Rollback()
	var parent int64
	if err := writer.Get(&parent, `INSERT INTO orders (tenant_id, item) VALUES ('acme', 'parent') RETURNING id`); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Exec(`INSERT INTO orders (tenant_id, item) SELECT 'acme', 'other' FROM generate_series(1, 2)`); err != nil {
		t.Fatal(err)
	}
	committed := false
	a.before = func(int) error { // after the first batch's claim, before its read
		if committed {
			return nil
		}
		committed = true
		if _, err := writer.Exec(`INSERT INTO events VALUES ('acme', $1, 1, 'child')`, parent); err != nil {
			return err
		}
		return writer.Commit()
	}
	n, err := a.applyTo(ctx, math.MaxInt64, nil, nil)
	if err != nil || n != 4 {
		t.Fatalf("applied %d: %v; want the 2 others, then the parent with its child", n, err)
	}
	if mm, _, err := verifyAll(ctx, src, dst, tables, "tenant_id", "acme", 5); err != nil || len(mm) != 0 {
		t.Fatalf("after apply: %v %v", mm, err)
	}
}

// BenchmarkApply-like figure as a test: 50,000 captured changes (orders and
// their events, inserts then updates) applied; the log says rows/s.
func TestApplyRate(t *testing.T) {
	src, dst, a, tables := capturing(t, defaultApplyBatch)
	ctx := context.Background()
	const orders = 20_000
	for _, q := range []string{
		`INSERT INTO orders (tenant_id, id, item) SELECT 'acme', g, 'item-' || g FROM generate_series(1, 20000) g`,
		`INSERT INTO events SELECT 'acme', g, 1, 'created' FROM generate_series(1, 20000) g`,
		`UPDATE orders SET qty = 2 WHERE tenant_id = 'acme' AND id <= 10000`,
	} {
		if _, err := src.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	backlog, _ := a.backlog(ctx)
	if backlog != 2*orders+orders/2 {
		t.Fatalf("captured %d changes", backlog)
	}
	hwm, err := a.highWater(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n, err := a.applyTo(ctx, hwm, nil, nil)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if mm, _, err := verifyAll(ctx, src, dst, tables, "tenant_id", "acme", 5); err != nil || len(mm) != 0 {
		t.Fatalf("after apply: %v %v", mm, err)
	}
	t.Logf("applied %d captured changes in %s: %.0f changes/s (batch %d)", n, took.Round(time.Millisecond), float64(n)/took.Seconds(), a.batch)
}

// verifyKeys (the switch's verification of the rows applied since the
// full one) compares only the keys it is given, every table's in one
// query per side, and names each difference: a changed row, a row missing
// on one side, on either table; equal keys pass.
func TestVerifyKeysNamesEveryDifference(t *testing.T) {
	src, dst, _ := twoDatabases(t)
	ctx := context.Background()
	tables, err := DiscoverTables(ctx, src, "tenant_id")
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range []*sqlx.DB{src, dst} {
		if _, err := db.Exec(`INSERT INTO orders (tenant_id, id, item) SELECT 'acme', g, 'x' FROM generate_series(1, 5) g;
			INSERT INTO events SELECT 'acme', g, 1, 'created' FROM generate_series(1, 5) g`); err != nil {
			t.Fatal(err)
		}
	}
	key := func(s string) json.RawMessage { return json.RawMessage(s) }
	keys := map[string][]json.RawMessage{
		"public.orders": {key(`{"tenant_id":"acme","id":1}`), key(`{"tenant_id":"acme","id":2}`), key(`{"tenant_id":"acme","id":9}`)},
		"public.events": {key(`{"tenant_id":"acme","order_id":3,"seq":1}`), key(`{"tenant_id":"acme","order_id":3,"seq":1}`)},
	}
	if mm, err := verifyKeys(ctx, src, dst, tables, "tenant_id", "acme", keys, 0); err != nil || len(mm) != 0 {
		t.Fatalf("equal sides: %+v %v", mm, err)
	}
	for _, q := range []string{
		`UPDATE orders SET item = 'changed' WHERE tenant_id = 'acme' AND id = 1`,   // differs
		`INSERT INTO orders (tenant_id, id, item) VALUES ('acme', 9, 'only here')`, // only on the target
		`DELETE FROM events WHERE tenant_id = 'acme' AND order_id = 3`,             // only on the source
		`UPDATE orders SET item = 'not asked' WHERE tenant_id = 'acme' AND id = 5`, // a key not given
	} {
		if _, err := dst.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	mm, err := verifyKeys(ctx, src, dst, tables, "tenant_id", "acme", keys, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, m := range mm {
		got[m.Table] = m.Keys
	}
	want := map[string][]string{
		"public.orders": {`{"id": 1, "tenant_id": "acme"}`, `{"id": 9, "tenant_id": "acme"}`},
		"public.events": {`{"seq": 1, "order_id": 3, "tenant_id": "acme"}`},
	}
	for table, keys := range want {
		if !slices.Equal(sorted(got[table]), keys) {
			t.Errorf("%s: differences %v, want %v", table, got[table], keys)
		}
	}
	if len(got) != len(want) {
		t.Errorf("differences in %d tables, want %d: %+v", len(got), len(want), mm)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
