package migrator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/lib/pq"

	"github.com/switchyard/switchyard/catalog"
)

// provision gives the destination what the tenant needs: for a
// dedicated-db target its own database, and wherever the tenant tables are
// missing, the source's schema for them (pg_dump --schema-only of the tenant
// tables, without Switchyard's own triggers, applied with psql).
func (r *run) provision(ctx context.Context) error {
	if r.to.Tier == catalog.TierDedicatedDB {
		admin, err := openDB(ctx, r.to.DSN)
		if err != nil {
			return fmt.Errorf("destination server: %w", err)
		}
		defer admin.Close()
		name := catalog.DatabaseName(r.m.Tenant)
		var exists bool
		if err := admin.GetContext(ctx, &exists, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name); err != nil {
			return err
		}
		if !exists {
			if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+pq.QuoteIdentifier(name)); err != nil && !strings.Contains(err.Error(), "already exists") {
				return fmt.Errorf("create database %s: %w", name, err)
			}
		}
	}
	dst, err := openDB(ctx, r.dstDSN)
	if err != nil {
		return fmt.Errorf("destination database: %w", err)
	}
	defer dst.Close()
	have, err := DiscoverTables(ctx, dst, r.m.Options.KeyColumn)
	if err != nil {
		return err
	}
	if len(have) > 0 {
		return SameShape(r.tables, have)
	}
	ddl, err := SchemaDDL(ctx, r.mg.cfg.PGBinDir, r.srcDSN, r.tables)
	if err != nil {
		return err
	}
	// One transaction: a run that dies (or loses its lock) half way must
	// not leave tables without their keys for the next run to find.
	psql := exec.CommandContext(ctx, filepath.Join(r.mg.cfg.PGBinDir, "psql"), "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--quiet",
		"--single-transaction", "--dbname", r.dstDSN)
	psql.Stdin = strings.NewReader(ddl)
	var perr bytes.Buffer
	psql.Stderr = &perr
	if err := psql.Run(); err != nil {
		return fmt.Errorf("apply schema to %s: %w: %s", redact(r.dstDSN), err, perr.String())
	}
	r.m.Tables = nil
	return nil
}

// SchemaDDL is the DDL of tables in the database at dsn (pg_dump
// --schema-only of them, run from pgBinDir, without Switchyard's own
// triggers): what a destination without the tables needs to get them.
func SchemaDDL(ctx context.Context, pgBinDir, dsn string, tables []Table) (string, error) {
	args := []string{"--schema-only", "--no-owner", "--no-privileges", "--dbname", dsn}
	for _, t := range tables {
		args = append(args, "--table", t.Schema+"."+t.Name)
	}
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(pgBinDir, "pg_dump"), args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("pg_dump schema: %w: %s", err, errOut.String())
	}
	var ddl strings.Builder
	for _, line := range strings.SplitAfter(out.String(), "\n") {
		if strings.HasPrefix(line, "CREATE TRIGGER switchyard_") {
			continue // the guard belongs to the source
		}
		ddl.WriteString(line)
	}
	return ddl.String(), nil
}

// ErrStaleDatabase: a new tenant's database name is taken by a database
// left from an earlier tenant with the same id.
var ErrStaleDatabase = errors.New("a database for this tenant id already exists")

// CreateTenantDatabase creates a new tenant's own database on a
// dedicated-db target (the app gives it its schema on first use). It is a
// no-op for other tiers. It refuses a database that exists already: it can
// only hold an earlier tenant's data, never a new tenant's.
func CreateTenantDatabase(ctx context.Context, target catalog.Target, tenant string) error {
	if target.Tier != catalog.TierDedicatedDB {
		return nil
	}
	admin, err := openDB(ctx, target.DSN)
	if err != nil {
		return fmt.Errorf("target %s: %w", target.ID, err)
	}
	defer admin.Close()
	name := catalog.DatabaseName(tenant)
	var exists bool
	if err := admin.GetContext(ctx, &exists, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name); err != nil {
		return err
	}
	if exists {
		return fmt.Errorf("%w: %s on %s (drop it once its data is no longer needed)", ErrStaleDatabase, name, target.ID)
	}
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+pq.QuoteIdentifier(name)); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}
