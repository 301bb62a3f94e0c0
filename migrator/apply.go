package migrator

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// applier replays captured changes: for each captured key it re-reads the
// row on the source and upserts it on the target, or deletes it there if the
// source no longer has it. A replay is therefore harmless, and the order in
// which changes committed does not matter. Handled change rows are deleted
// (never "id > last seen", which skips rows that commit late).
type applier struct {
	src, dst  *sqlx.DB
	tables    []Table // parents first
	keyColumn string
	tenant    string
	batch     int
	// only, if set, limits the applier to these tables (during the copy:
	// the tables already copied, whose rows may be upserted safely).
	only []string
}

type change struct {
	ID  int64           `db:"id"`
	Tbl string          `db:"tbl"`
	PK  json.RawMessage `db:"pk"`
}

// backlog counts captured changes not applied yet.
func (a *applier) backlog(ctx context.Context) (int, error) {
	var n int
	err := a.src.GetContext(ctx, &n, `SELECT count(*) FROM switchyard.changes WHERE tenant_id = $1`, a.tenant)
	return n, err
}

// pendingKeys returns table → set of keys (canonical jsonb text) with
// captured changes not applied yet.
func (a *applier) pendingKeys(ctx context.Context) (map[string]map[string]bool, error) {
	rows, err := a.src.QueryContext(ctx, `SELECT DISTINCT tbl, pk::text FROM switchyard.changes WHERE tenant_id = $1`, a.tenant)
	if err != nil {
		return nil, fmt.Errorf("pending keys: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]bool{}
	for rows.Next() {
		var tbl, pk string
		if err := rows.Scan(&tbl, &pk); err != nil {
			return nil, err
		}
		if out[tbl] == nil {
			out[tbl] = map[string]bool{}
		}
		out[tbl][pk] = true
	}
	return out, rows.Err()
}

// applyBatch applies up to a.batch changes and returns how many it handled
// and the distinct keys per table it touched.
func (a *applier) applyBatch(ctx context.Context) (int, map[string][]json.RawMessage, error) {
	var changes []change
	q, args := `SELECT id, tbl, pk FROM switchyard.changes WHERE tenant_id = $1 ORDER BY id LIMIT $2`, []any{a.tenant, a.batch}
	if a.only != nil {
		q = `SELECT id, tbl, pk FROM switchyard.changes WHERE tenant_id = $1 AND tbl = ANY($3) ORDER BY id LIMIT $2`
		args = append(args, pq.Array(a.only))
	}
	if err := a.src.SelectContext(ctx, &changes, q, args...); err != nil {
		return 0, nil, fmt.Errorf("read changes: %w", err)
	}
	if len(changes) == 0 {
		return 0, nil, nil
	}
	keys := map[string][]json.RawMessage{}
	seen := map[string]bool{}
	ids := make([]int64, 0, len(changes))
	for _, c := range changes {
		ids = append(ids, c.ID)
		k := c.Tbl + "|" + string(c.PK)
		if !seen[k] {
			seen[k] = true
			keys[c.Tbl] = append(keys[c.Tbl], c.PK)
		}
	}
	if err := a.sync(ctx, keys); err != nil {
		return 0, nil, err
	}
	if _, err := a.src.ExecContext(ctx, `DELETE FROM switchyard.changes WHERE id = ANY($1)`, pq.Array(ids)); err != nil {
		return 0, nil, fmt.Errorf("delete applied changes: %w", err)
	}
	return len(changes), keys, nil
}

// sync makes the target's rows for the given keys equal the source's: upserts
// parents first, deletes children first, in one target transaction.
func (a *applier) sync(ctx context.Context, keys map[string][]json.RawMessage) error {
	type current struct {
		table Table
		rows  json.RawMessage // rows present on the source (a JSON array)
		gone  json.RawMessage // keys absent from the source (a JSON array)
	}
	var work []current
	for _, t := range a.tables {
		ks := keys[t.Key()]
		if len(ks) == 0 {
			continue
		}
		arr, _ := json.Marshal(ks)
		// Re-read the current rows and the keys that are gone, in one query.
		var rows, gone json.RawMessage
		q := fmt.Sprintf(`
			WITH k AS (SELECT * FROM jsonb_populate_recordset(NULL::%[1]s, $1::jsonb))
			SELECT
				coalesce((SELECT jsonb_agg(to_jsonb(t)) FROM %[1]s t JOIN k USING (%[2]s) WHERE t.%[3]s = $2), '[]'::jsonb),
				coalesce((SELECT jsonb_agg(to_jsonb(k)) FROM k WHERE NOT EXISTS (SELECT 1 FROM %[1]s t WHERE (%[4]s) = (%[5]s) AND t.%[3]s = $2)), '[]'::jsonb)`,
			t.Ident(), quoteIdents(t.PK), pq.QuoteIdentifier(a.keyColumn), prefixed("t", t.PK), prefixed("k", t.PK))
		if err := a.src.QueryRowContext(ctx, q, string(arr), a.tenant).Scan(&rows, &gone); err != nil {
			return fmt.Errorf("re-read %s: %w", t.Key(), err)
		}
		work = append(work, current{table: t, rows: rows, gone: gone})
	}
	tx, err := a.dst.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	defer tx.Rollback()
	// A destination holding a retained (fenced) copy of the tenant lets
	// Switchyard's own writes through.
	if _, err := tx.ExecContext(ctx, `SELECT set_config('switchyard.bypass', $1, true)`, a.tenant); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	for i := len(work) - 1; i >= 0; i-- { // deletes: children first
		w := work[i]
		if string(w.gone) == "[]" {
			continue
		}
		q := fmt.Sprintf(`DELETE FROM %[1]s t USING jsonb_populate_recordset(NULL::%[1]s, $1::jsonb) k WHERE (%[2]s) = (%[3]s) AND t.%[4]s = $2`,
			w.table.Ident(), prefixed("t", w.table.PK), prefixed("k", w.table.PK), pq.QuoteIdentifier(a.keyColumn))
		if _, err := tx.ExecContext(ctx, q, string(w.gone), a.tenant); err != nil {
			return fmt.Errorf("apply deletes to %s: %w", w.table.Key(), err)
		}
	}
	for _, w := range work { // upserts: parents first
		if string(w.rows) == "[]" {
			continue
		}
		if _, err := tx.ExecContext(ctx, upsertSQL(w.table), string(w.rows)); err != nil {
			return fmt.Errorf("apply upserts to %s: %w", w.table.Key(), err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	return nil
}

func upsertSQL(t Table) string {
	cols := make([]string, len(t.Columns))
	var sets []string
	for i, c := range t.Columns {
		cols[i] = pq.QuoteIdentifier(c.Name)
		isKey := false
		for _, k := range t.PK {
			if k == c.Name {
				isKey = true
			}
		}
		if !isKey {
			sets = append(sets, fmt.Sprintf("%s = EXCLUDED.%s", cols[i], cols[i]))
		}
	}
	conflict := "DO NOTHING"
	if len(sets) > 0 {
		conflict = "DO UPDATE SET " + strings.Join(sets, ", ")
	}
	return fmt.Sprintf(`INSERT INTO %[1]s (%[2]s) SELECT %[2]s FROM jsonb_populate_recordset(NULL::%[1]s, $1::jsonb) ON CONFLICT (%[3]s) %[4]s`,
		t.Ident(), strings.Join(cols, ", "), quoteIdents(t.PK), conflict)
}

func prefixed(alias string, cols []string) string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = alias + "." + pq.QuoteIdentifier(c)
	}
	return strings.Join(out, ", ")
}
