package backup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

// write prepares the destination, checks it and writes the rows in one
// transaction; on any error it undoes what it did (the database it
// created, the catalog record).
func (r *restorer) write(ctx context.Context) (err error) {
	dsn, err := r.req.Target.DSNFor(r.req.As)
	if err != nil {
		return err
	}
	if r.req.Target.Tier == catalog.TierDedicatedDB {
		if err := migrator.CreateTenantDatabase(ctx, r.req.Target, r.req.As); err != nil {
			if errors.Is(err, migrator.ErrStaleDatabase) {
				return fmt.Errorf("%w: %w", ErrDestination, err)
			}
			return err
		}
		defer func() {
			if err != nil {
				r.dropDatabase(ctx)
			}
		}()
	}
	create, err := r.checkDestination(ctx, dsn)
	if err != nil {
		return err
	}
	return r.transaction(ctx, dsn, create)
}

// checkDestination compares the destination's tenant tables with the
// backup's schema (create: it has none, they are to be created) and
// refuses one that already has rows of the new tenant.
func (r *restorer) checkDestination(ctx context.Context, dsn string) (create bool, err error) {
	db, err := sqlx.Open("postgres", dsn)
	if err != nil {
		return false, err
	}
	defer db.Close()
	have, err := migrator.DiscoverTables(ctx, db, r.m.KeyColumn)
	if err != nil {
		return false, err
	}
	if len(have) == 0 {
		return true, nil
	}
	if err := migrator.SameShape(r.tables(), have); err != nil {
		return false, fmt.Errorf("backup %s does not fit target %s: %w", r.m.ID, r.req.Target.ID, err)
	}
	for _, t := range r.m.Tables {
		var exists bool
		q := fmt.Sprintf("SELECT EXISTS (SELECT 1 FROM %s WHERE %s = $1)", t.Table.Ident(), pq.QuoteIdentifier(r.m.KeyColumn))
		if err := db.GetContext(ctx, &exists, q, r.req.As); err != nil {
			return false, err
		}
		if exists {
			return false, fmt.Errorf("%w: target %s already has rows of tenant %s in %s", ErrDestination, r.req.Target.ID, r.req.As, t.Table.Key())
		}
	}
	return false, nil
}

// transaction writes every table, checks its hash, raises the sequences
// and creates the catalog record, then commits.
func (r *restorer) transaction(ctx context.Context, dsn string, create bool) (err error) {
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect %s: %w", migrator.RedactDSN(dsn), err)
	}
	defer conn.Close(context.Background())
	if err := exec(ctx, conn, "BEGIN"); err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			_ = exec(context.Background(), conn, "ROLLBACK")
		}
	}()
	if create {
		if err := r.createTables(ctx, conn); err != nil {
			return err
		}
	}
	for _, t := range r.m.Tables {
		if err := r.copyIn(ctx, conn, t); err != nil {
			return err
		}
	}
	if err := exec(ctx, conn, raiseSequencesSQL(r.m.Sequences)); err != nil {
		return fmt.Errorf("sequences: %w", err)
	}
	if r.req.Catalog != nil {
		if _, err := r.req.Catalog.CreateTenant(ctx, r.tenant); err != nil {
			return fmt.Errorf("%w: catalog record of %s: %w", ErrDestination, r.req.As, err)
		}
		defer func() {
			if err != nil {
				_ = r.req.Catalog.DeleteTenant(context.WithoutCancel(ctx), r.req.As)
			}
		}()
	}
	if err := exec(ctx, conn, "COMMIT"); err != nil {
		return err
	}
	committed = true
	return nil
}

// createTables gives a destination without the tables the backup's DDL
// (or, for a backup without one, tables made from its schema) inside the
// restore's transaction.
func (r *restorer) createTables(ctx context.Context, conn *pgconn.PgConn) error {
	sql := createTablesSQL(r.tables())
	if r.m.DDLObject != "" {
		var ddl strings.Builder
		if err := r.decode(r.m.DDLObject, &ddl); err != nil {
			return err
		}
		sql = withoutMetaCommands(ddl.String())
	}
	if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
		return fmt.Errorf("create tables on %s: %w", r.req.Target.ID, err)
	}
	// pg_dump's script empties search_path for its session.
	return exec(ctx, conn, "RESET search_path")
}

// withoutMetaCommands drops psql's backslash lines (pg_dump writes
// \restrict and \unrestrict) from a script.
func withoutMetaCommands(script string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(script, "\n") {
		if !strings.HasPrefix(line, "\\") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// createTablesSQL creates tables as the backup describes them (columns,
// types, primary keys) for a destination that has none.
func createTablesSQL(tables []migrator.Table) string {
	var b strings.Builder
	for _, t := range tables {
		fmt.Fprintf(&b, "CREATE SCHEMA IF NOT EXISTS %s; CREATE TABLE %s (", pq.QuoteIdentifier(t.Schema), t.Ident())
		for i, c := range t.Columns {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s %s", pq.QuoteIdentifier(c.Name), c.Type)
		}
		if len(t.PK) > 0 {
			fmt.Fprintf(&b, ", PRIMARY KEY (%s)", quoteList(t.PK))
		}
		b.WriteString(");\n")
	}
	return b.String()
}

// raiseSequencesSQL sets each sequence (where the destination has it) to
// at least its value in the backup, never lower than it is.
func raiseSequencesSQL(seqs map[string]int64) string {
	if len(seqs) == 0 {
		return "SELECT 1"
	}
	var cols []string
	for name, v := range seqs {
		lit := pq.QuoteLiteral(name)
		cols = append(cols, fmt.Sprintf("setval(to_regclass(%s), GREATEST(coalesce(pg_sequence_last_value(to_regclass(%s)), 1), %d))", lit, lit, v))
	}
	return "SELECT " + strings.Join(cols, ", ")
}

// dropDatabase removes the database a failed restore created.
func (r *restorer) dropDatabase(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	db, err := sqlx.Open("postgres", r.req.Target.DSN)
	if err != nil {
		return
	}
	defer db.Close()
	_, _ = db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(catalog.DatabaseName(r.req.As))+" WITH (FORCE)")
}
