package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/switchyard/switchyard/backup"
	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/test/harness"
)

// BenchmarkBackupMillion backs up a tenant of 1M order rows
// ($SWITCHYARD_BENCH_ROWS to change it) from a shared pool to the S3
// server and to a local directory, restores it into a dedicated cluster,
// and does the same the plain way an operator would: psql \copy (SELECT …
// WHERE tenant_id = …) TO STDOUT | gzip -1 > file, and back with gunzip |
// psql \copy … FROM STDIN. The object store's share is the time to upload
// and download the backup's objects alone, over the S3 backup's time.
// Reported as rows/s per path and s3_share.
func BenchmarkBackupMillion(b *testing.B) {
	rows := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("SWITCHYARD_BENCH_ROWS")); err == nil && v > 0 {
		rows = v
	}
	ctx := context.Background()
	pgs := harness.PostgresN(b, 2)
	for _, db := range []struct {
		pg   *harness.Postgres
		name string
	}{{pgs[0], "pool"}, {pgs[1], "app"}, {pgs[1], "plain"}} {
		if err := db.pg.CreateDatabase(ctx, db.name); err != nil {
			b.Fatal(err)
		}
		mustSchema(b, db.pg.DSN(db.name))
	}
	pool := catalog.Target{ID: "pool-1", Tier: catalog.TierShared, Service: "app-shared", DSN: pgs[0].DSN("pool")}
	cluster := catalog.Target{ID: "cl-1", Tier: catalog.TierDedicatedCluster, Service: "app-cl-1", DSN: pgs[1].DSN("app")}
	seedBench(b, pool.DSN, "big", rows)
	s3 := harness.S3T(b)
	s3Store, err := backup.NewS3Store(ctx, backup.S3Config{Endpoint: s3.Endpoint(), Bucket: "bench", AccessKey: s3.AccessKey(), SecretKey: s3.SecretKey(), Region: "eu"})
	if err != nil {
		b.Fatal(err)
	}
	dirStore, err := backup.NewDirStore(b.TempDir(), "eu")
	if err != nil {
		b.Fatal(err)
	}
	tenant := catalog.Tenant{ID: "big", Plan: "free", Tier: catalog.TierShared, Target: "pool-1", State: catalog.StateActive}
	var tS3, tDir, tRestore, tPlainOut, tPlainIn, tStore time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		m, err := backup.Backup(ctx, backup.Request{Tenant: tenant, Target: pool, Store: s3Store})
		if err != nil {
			b.Fatal(err)
		}
		tS3 += time.Since(start)
		start = time.Now()
		if _, err := backup.Backup(ctx, backup.Request{Tenant: tenant, Target: pool, Store: dirStore}); err != nil {
			b.Fatal(err)
		}
		tDir += time.Since(start)
		start = time.Now()
		if _, err := backup.Restore(ctx, backup.RestoreRequest{BackupID: m.ID, Store: s3Store, As: fmt.Sprintf("copy-%d", i), Target: cluster, TempDir: b.TempDir()}); err != nil {
			b.Fatal(err)
		}
		tRestore += time.Since(start)
		tStore += storeRoundTrip(b, s3Store, m)
		out, in := plainBackup(b, pgs[0].DSN("pool"), pgs[1].DSN("plain"), "big")
		tPlainOut, tPlainIn = tPlainOut+out, tPlainIn+in
		truncate(b, pgs[1].DSN("plain"))
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return float64(rows) * float64(b.N) / d.Seconds() }
	b.ReportMetric(per(tS3), "backup_s3_rows/s")
	b.ReportMetric(per(tDir), "backup_dir_rows/s")
	b.ReportMetric(per(tRestore), "restore_s3_rows/s")
	b.ReportMetric(per(tPlainOut), "psql_gzip_out_rows/s")
	b.ReportMetric(per(tPlainIn), "psql_gzip_in_rows/s")
	b.ReportMetric(tStore.Seconds()/(tS3+tRestore).Seconds(), "s3_share")
}

// seedBench writes n orders of tenant at dsn in one statement.
func seedBench(b *testing.B, dsn, tenant string, n int) {
	db := sqlx.MustConnect("postgres", dsn)
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO orders (tenant_id, item, quantity, price_cents, attrs)
		SELECT $1, 'item number ' || g, g % 50 + 1, g * 7, jsonb_build_object('g', g, 'note', 'some attributes')
		FROM generate_series(1, $2) g`, tenant, n); err != nil {
		b.Fatal(err)
	}
	if _, err := db.Exec(`VACUUM ANALYZE orders`); err != nil {
		b.Fatal(err)
	}
}

func truncate(b *testing.B, dsn string) {
	db := sqlx.MustConnect("postgres", dsn)
	defer db.Close()
	if _, err := db.Exec(`TRUNCATE orders CASCADE`); err != nil {
		b.Fatal(err)
	}
}

// storeRoundTrip uploads and downloads the backup's objects alone: the
// object store's part of a backup and a restore.
func storeRoundTrip(b *testing.B, s backup.Store, m *backup.Manifest) time.Duration {
	ctx := context.Background()
	var total time.Duration
	for _, o := range m.Objects {
		name := m.Tenant + "/" + m.ID + "/" + o.Name
		rc, err := s.Get(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		start = time.Now()
		if err := s.Put(ctx, "roundtrip/"+o.Name, bytes.NewReader(data), int64(len(data))); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
	}
	return total
}

// plainBackup is the operator's way, with psql and gzip: out to a file and
// back into another database.
func plainBackup(b *testing.B, srcDSN, dstDSN, tenant string) (out, in time.Duration) {
	file := filepath.Join(b.TempDir(), "orders.copy.gz")
	sel := fmt.Sprintf(`\copy (SELECT * FROM orders WHERE tenant_id = '%s' ORDER BY tenant_id, id) TO STDOUT`, tenant)
	start := time.Now()
	runSh(b, fmt.Sprintf(`psql -X -q -d '%s' -c "%s" | gzip -1 > '%s'`, srcDSN, sel, file))
	out = time.Since(start)
	start = time.Now()
	runSh(b, fmt.Sprintf(`gunzip -c '%s' | psql -X -q -d '%s' -c '\copy orders FROM STDIN'`, file, dstDSN))
	return out, time.Since(start)
}

func runSh(b *testing.B, script string) {
	cmd := exec.Command("bash", "-c", "set -eo pipefail; "+script)
	if outp, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%s: %v: %s", script, err, outp)
	}
}
