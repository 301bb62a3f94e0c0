package migrator

import (
	"context"
	"testing"
)

// The schema stamp changes with every DDL that touches the tenant tables'
// shape, and with none of the writes or unrelated DDL the switch must not
// stop for.
func TestSchemaStamp(t *testing.T) {
	src, _, _ := twoDatabases(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		stmt    string
		changes bool
	}{
		{name: "rows written", stmt: `INSERT INTO orders (tenant_id, item) VALUES ('acme', 'x'); UPDATE orders SET qty = 2`, changes: false},
		{name: "table without the key column", stmt: `CREATE TABLE lookup (code text PRIMARY KEY)`, changes: false},
		{name: "index", stmt: `CREATE INDEX orders_item ON orders (item)`, changes: false},
		{name: "vacuum full", stmt: `VACUUM FULL orders`, changes: false},
		{name: "temporary table with the key column", stmt: `CREATE TEMPORARY TABLE staging (tenant_id text, id bigint)`, changes: false},
		{name: "column added", stmt: `ALTER TABLE orders ADD COLUMN note text`, changes: true},
		{name: "column type", stmt: `ALTER TABLE orders ALTER COLUMN note TYPE varchar(20)`, changes: true},
		{name: "column renamed", stmt: `ALTER TABLE orders RENAME COLUMN note TO remark`, changes: true},
		{name: "column dropped", stmt: `ALTER TABLE orders DROP COLUMN remark`, changes: true},
		{name: "foreign key dropped", stmt: `ALTER TABLE events DROP CONSTRAINT events_tenant_id_order_id_fkey`, changes: true},
		{name: "tenant table added", stmt: `CREATE TABLE notes (tenant_id text NOT NULL, id int, PRIMARY KEY (tenant_id, id))`, changes: true},
		{name: "primary key changed", stmt: `ALTER TABLE notes DROP CONSTRAINT notes_pkey, ADD PRIMARY KEY (id, tenant_id)`, changes: true},
		{name: "tenant table renamed", stmt: `ALTER TABLE notes RENAME TO memos`, changes: true},
		{name: "tenant table dropped", stmt: `DROP TABLE memos`, changes: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := schemaStamp(ctx, src, "tenant_id")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := src.ExecContext(ctx, tc.stmt); err != nil {
				t.Fatal(err)
			}
			after, err := schemaStamp(ctx, src, "tenant_id")
			if err != nil {
				t.Fatal(err)
			}
			if (before != after) != tc.changes {
				t.Fatalf("stamp %s → %s after %q; want changed=%v", before, after, tc.stmt, tc.changes)
			}
		})
	}
}
