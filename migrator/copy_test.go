package migrator

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jmoiron/sqlx"

	"github.com/switchyard/switchyard/test/harness"
)

// The chunked copy resumes correctly for primary keys of any type:
// composite, text with characters COPY escapes, and uuid.
func TestCopyChunksAnyKeyType(t *testing.T) {
	pg := harness.PostgresT(t)
	ctx := context.Background()
	schema := `CREATE TABLE docs (tenant_id text NOT NULL, path text NOT NULL, rev int NOT NULL, uid uuid NOT NULL DEFAULT gen_random_uuid(), body jsonb,
		PRIMARY KEY (tenant_id, path, rev));
		CREATE TABLE blobs (tenant_id text NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(), data bytea, PRIMARY KEY (tenant_id, id));`
	for _, name := range []string{"src", "dst"} {
		if err := pg.CreateDatabase(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	src, dst := openT(t, pg.DSN("src")), openT(t, pg.DSN("dst"))
	for _, db := range []string{pg.DSN("src"), pg.DSN("dst")} {
		d := openT(t, db)
		if _, err := d.Exec(schema); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := src.Exec(`INSERT INTO docs (tenant_id, path, rev, body)
		SELECT 'acme', 'dir' || (g % 7) || E'/tab\there\\back' || g, g % 3, jsonb_build_object('g', g) FROM generate_series(1, 1000) g;
		INSERT INTO docs (tenant_id, path, rev) VALUES ('other', 'x', 1);
		INSERT INTO blobs (tenant_id, data) SELECT 'acme', decode(md5(g::text), 'hex') FROM generate_series(1, 500) g;`); err != nil {
		t.Fatal(err)
	}
	tables, err := DiscoverTables(ctx, src, "tenant_id")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := pgconn.Connect(ctx, pg.DSN("src"))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close(ctx)
	dc, err := pgconn.Connect(ctx, pg.DSN("dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close(ctx)
	for _, tb := range tables {
		c := &copier{src: sc, dst: dc, table: tb, keyColumn: "tenant_id", tenant: "acme", chunkRows: 64}
		chunks := 0
		for {
			// Resume from the target every time, as after a crash.
			last, err := c.resumeKey(ctx)
			if err != nil {
				t.Fatal(err)
			}
			res, err := c.copyChunk(ctx, last)
			if err != nil {
				t.Fatalf("%s chunk %d: %v", tb.Key(), chunks, err)
			}
			chunks++
			if res.rows < 64 {
				break
			}
		}
		if chunks < 5 {
			t.Fatalf("%s copied in %d chunks", tb.Key(), chunks)
		}
	}
	mm, _, err := verifyAll(ctx, src, dst, tables, "tenant_id", "acme", 10)
	if err != nil || len(mm) != 0 {
		t.Fatalf("after the copy: %v %v", mm, err)
	}
	var n int
	_ = dst.Get(&n, `SELECT count(*) FROM docs WHERE tenant_id = 'other'`)
	if n != 0 {
		t.Fatal("another tenant's row was copied")
	}
}

func openT(t *testing.T, dsn string) *sqlx.DB {
	t.Helper()
	db, err := openDB(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
