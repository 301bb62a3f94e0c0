package backup

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

// restoresSQL creates the record of in-place restores, in the tenant's own
// database (written in the swap's transaction).
const restoresSQL = `
SELECT pg_advisory_xact_lock(hashtext('switchyard:ddl'));
CREATE SCHEMA IF NOT EXISTS switchyard;
CREATE TABLE IF NOT EXISTS switchyard.restores (
	retained_key text PRIMARY KEY,
	tenant_id    text NOT NULL,
	backup_id    text NOT NULL,
	key_column   text NOT NULL,
	restored_at  timestamptz NOT NULL DEFAULT now(),
	retain_until timestamptz NOT NULL,
	undone_at    timestamptz
);`

func ensureRestoresTable(ctx context.Context, db *sqlx.DB) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, restoresSQL); err != nil {
		return fmt.Errorf("restores table: %w", err)
	}
	return tx.Commit()
}

// swap gives the tenant the rows under key from, and keeps its current
// rows under key aside, in one transaction.
type swap struct {
	tables    []migrator.Table // parents first
	keyColumn string
	tenant    string
	from      string
	aside     string
	// want, if set, is the row count each table must receive.
	want        map[string]int64
	backupID    string
	retainUntil time.Time
	// undoes, if set, is the retained key being taken back into service.
	undoes string
}

// run is the swap's transaction: the tenant's rows are copied under aside
// and deleted, the rows under from are copied under the tenant's key and
// deleted (parents first for inserts, children first for deletes), and
// the restore is recorded.
func (s *swap) run(ctx context.Context, db *sqlx.DB) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// The tenant's guard (fence) lets Switchyard itself through.
	if _, err := tx.ExecContext(ctx, `SELECT set_config('switchyard.bypass', $1, true)`, s.tenant); err != nil {
		return err
	}
	if _, err := s.move(ctx, tx, s.tenant, s.aside); err != nil {
		return err
	}
	got, err := s.move(ctx, tx, s.from, s.tenant)
	if err != nil {
		return err
	}
	for table, n := range s.want {
		if got[table] != n {
			return fmt.Errorf("%w: table %s: %d staged rows, backup has %d", ErrCorrupt, table, got[table], n)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO switchyard.restores (retained_key, tenant_id, backup_id, key_column, retain_until) VALUES ($1, $2, $3, $4, $5)`,
		s.aside, s.tenant, s.backupID, s.keyColumn, s.retainUntil); err != nil {
		return fmt.Errorf("record restore: %w", err)
	}
	if s.undoes != "" {
		if _, err := tx.ExecContext(ctx, `UPDATE switchyard.restores SET undone_at = now() WHERE retained_key = $1`, s.undoes); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// move re-keys every row under from to key to (copy, then delete) and
// returns the rows per table.
func (s *swap) move(ctx context.Context, tx *sqlx.Tx, from, to string) (map[string]int64, error) {
	col := pq.QuoteIdentifier(s.keyColumn)
	n := map[string]int64{}
	for _, t := range s.tables {
		names := columnNames(t)
		sel := make([]string, len(names))
		for i, c := range names {
			sel[i] = pq.QuoteIdentifier(c)
			if c == s.keyColumn {
				sel[i] = "$1"
			}
		}
		q := fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM %s WHERE %s = $2", t.Ident(), quoteList(names), strings.Join(sel, ", "), t.Ident(), col)
		res, err := tx.ExecContext(ctx, q, to, from)
		if err != nil {
			return nil, fmt.Errorf("swap %s: %w", t.Key(), err)
		}
		n[t.Key()], _ = res.RowsAffected()
	}
	for i := len(s.tables) - 1; i >= 0; i-- {
		t := s.tables[i]
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("DELETE FROM %s WHERE %s = $1", t.Ident(), col), from); err != nil {
			return nil, fmt.Errorf("swap %s: %w", t.Key(), err)
		}
	}
	return n, nil
}

// dropKey deletes every row under a hidden key (a staging copy left by a
// failed restore; nothing once a swap took it).
func dropKey(ctx context.Context, db *sqlx.DB, tables []TableEntry, keyColumn, key string) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i := len(tables) - 1; i >= 0; i-- {
		t := tables[i].Table
		_, _ = db.ExecContext(ctx, fmt.Sprintf("DELETE FROM %s WHERE %s = $1", t.Ident(), pq.QuoteIdentifier(keyColumn)), key)
	}
}

// UndoRequest asks to undo the tenant's latest in-place restore.
type UndoRequest struct {
	Tenant string
	Target catalog.Target
	Holder Holder
	Budget time.Duration
	Logger *slog.Logger
}

// UndoInPlace gives the tenant back the data its latest in-place restore
// replaced (ErrNoRetained if there is none within its retention), under
// the same hold; the data it replaces is retained in turn, as long.
func UndoInPlace(ctx context.Context, req UndoRequest) (*InPlaceResult, error) {
	db, err := openTenantDB(req.Target, req.Tenant)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	var rec struct {
		Key         string    `db:"retained_key"`
		Backup      string    `db:"backup_id"`
		KeyColumn   string    `db:"key_column"`
		RetainUntil time.Time `db:"retain_until"`
	}
	err = db.GetContext(ctx, &rec, `SELECT retained_key, backup_id, key_column, retain_until FROM switchyard.restores
		WHERE tenant_id = $1 AND undone_at IS NULL AND retain_until > now() ORDER BY restored_at DESC LIMIT 1`, req.Tenant)
	var pqErr *pq.Error
	if errors.Is(err, sql.ErrNoRows) || errors.As(err, &pqErr) && pqErr.Code == "42P01" {
		return nil, fmt.Errorf("%w: tenant %s", ErrNoRetained, req.Tenant)
	}
	if err != nil {
		return nil, err
	}
	tables, err := migrator.DiscoverTables(ctx, db, rec.KeyColumn)
	if err != nil {
		return nil, err
	}
	sw := swap{tables: tables, keyColumn: rec.KeyColumn, tenant: req.Tenant, from: rec.Key, aside: hiddenKey("r", req.Tenant),
		backupID: "undo:" + rec.Backup, retainUntil: rec.RetainUntil, undoes: rec.Key}
	hold, err := req.Holder.HoldTenant(ctx, migrator.HoldRequest{Tenant: req.Tenant, Reason: "restore-undo:" + rec.Backup, DB: db,
		Tables: tables, KeyColumn: rec.KeyColumn, Budget: req.Budget, Swap: func(ctx context.Context) error { return sw.run(ctx, db) }})
	if err != nil {
		return nil, err
	}
	if req.Logger != nil {
		req.Logger.Info("in-place restore undone", "tenant", req.Tenant, "backup", rec.Backup, "hold", hold.Hold)
	}
	return &InPlaceResult{Retained: sw.aside, RetainUntil: sw.retainUntil, Hold: hold.Hold}, nil
}

// Purged is one retained copy PurgeRetained deleted.
type Purged struct {
	Tenant   string
	Retained string
	Backup   string
	Rows     int64
}

// PurgeRetained deletes, in the database at dsn, the rows of every
// in-place restore's retained copy whose retention has passed, and its
// record (undo is then refused with ErrNoRetained). A database without
// in-place restores has nothing to purge.
func PurgeRetained(ctx context.Context, dsn string) ([]Purged, error) {
	db, err := sqlx.Open("postgres", dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	var exists bool
	if err := db.GetContext(ctx, &exists, `SELECT to_regclass('switchyard.restores') IS NOT NULL`); err != nil || !exists {
		return nil, err
	}
	var recs []struct {
		Key       string `db:"retained_key"`
		Tenant    string `db:"tenant_id"`
		Backup    string `db:"backup_id"`
		KeyColumn string `db:"key_column"`
	}
	if err := db.SelectContext(ctx, &recs, `SELECT retained_key, tenant_id, backup_id, key_column FROM switchyard.restores WHERE retain_until <= now()`); err != nil {
		return nil, fmt.Errorf("expired restores: %w", err)
	}
	var out []Purged
	for _, r := range recs {
		tables, err := migrator.DiscoverTables(ctx, db, r.KeyColumn)
		if err != nil {
			return out, err
		}
		p := Purged{Tenant: r.Tenant, Retained: r.Key, Backup: r.Backup}
		if p.Rows, err = purgeKey(ctx, db, tables, r.KeyColumn, r.Key); err != nil {
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
}

// purgeKey deletes a retained copy's rows (children first) and its record
// in one transaction.
func purgeKey(ctx context.Context, db *sqlx.DB, tables []migrator.Table, keyColumn, key string) (int64, error) {
	if !strings.HasPrefix(key, "~r~") {
		return 0, fmt.Errorf("%w: %q is not a retained copy's key", ErrInvalid, key)
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var rows int64
	for i := len(tables) - 1; i >= 0; i-- {
		res, err := tx.ExecContext(ctx, fmt.Sprintf("DELETE FROM %s WHERE %s = $1", tables[i].Ident(), pq.QuoteIdentifier(keyColumn)), key)
		if err != nil {
			return 0, fmt.Errorf("purge %s from %s: %w", key, tables[i].Key(), err)
		}
		n, _ := res.RowsAffected()
		rows += n
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM switchyard.restores WHERE retained_key = $1`, key); err != nil {
		return 0, err
	}
	return rows, tx.Commit()
}
