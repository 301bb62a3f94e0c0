package migrator

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/switchyard/switchyard/test/harness"
)

const testSchema = `
CREATE TABLE orders (tenant_id text NOT NULL, id bigserial, item text NOT NULL, qty int NOT NULL DEFAULT 1, PRIMARY KEY (tenant_id, id));
CREATE TABLE events (tenant_id text NOT NULL, order_id bigint NOT NULL, seq int NOT NULL, kind text NOT NULL,
	PRIMARY KEY (tenant_id, order_id, seq), FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, id) ON DELETE CASCADE);
`

func twoDatabases(t *testing.T) (*sqlx.DB, *sqlx.DB) {
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
	return dbs[0], dbs[1]
}

// Captured inserts, updates and deletes of parents and children replay onto
// the target in one pass, and a second replay changes nothing.
func TestCaptureAndApply(t *testing.T) {
	src, dst := twoDatabases(t)
	ctx := context.Background()
	tables, err := discoverTables(ctx, src, "tenant_id")
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
	a := &applier{src: src, dst: dst, tables: tables, keyColumn: "tenant_id", tenant: "acme", batch: 1000}
	if n, _ := a.backlog(ctx); n != 5*2+1+2 {
		t.Fatalf("backlog %d", n)
	}
	n, _, err := a.applyBatch(ctx)
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
