package migrator

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// TableSum is a table's tenant rows summarised: the count and the sum of the
// first 60 bits of each row's md5 (order-independent, like pgcopydb's).
type TableSum struct {
	Rows int64  `json:"rows"`
	Hash string `json:"hash"`
}

// Mismatch names a table whose sides differ and (some of) the keys.
type Mismatch struct {
	Table  string   `json:"table"`
	Source TableSum `json:"source"`
	Target TableSum `json:"target"`
	Keys   []string `json:"keys,omitempty"` // up to 20 differing keys (JSON)
}

func (m Mismatch) String() string {
	if m.Source.Hash == "" && m.Target.Hash == "" {
		return fmt.Sprintf("%s: of the rows changed since the full verification the source has %d, the target %d, differing keys %s",
			m.Table, m.Source.Rows, m.Target.Rows, strings.Join(m.Keys, " "))
	}
	return fmt.Sprintf("%s: source %d rows/%s, target %d rows/%s, differing keys %s",
		m.Table, m.Source.Rows, m.Source.Hash, m.Target.Rows, m.Target.Hash, strings.Join(m.Keys, " "))
}

func rowHashExpr(t Table) string {
	// md5 of the row's text form; columns listed so both sides agree on order.
	cols := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		cols[i] = "r." + pq.QuoteIdentifier(c.Name)
	}
	return fmt.Sprintf("md5(ROW(%s)::text)", strings.Join(cols, ", "))
}

func tableSum(ctx context.Context, db *sqlx.DB, t Table, keyColumn, tenant string) (TableSum, error) {
	q := fmt.Sprintf(`SELECT count(*), coalesce(sum(('x' || substr(%s, 1, 15))::bit(60)::bigint::numeric), 0)::text
		FROM %s r WHERE r.%s = $1`, rowHashExpr(t), t.Ident(), pq.QuoteIdentifier(keyColumn))
	var s TableSum
	if err := db.QueryRowContext(ctx, q, tenant).Scan(&s.Rows, &s.Hash); err != nil {
		return TableSum{}, fmt.Errorf("checksum %s: %w", t.Key(), err)
	}
	return s, nil
}

// keyHashes returns key → row md5 for the tenant's rows (optionally only
// the given keys). With keys it joins them to the table by primary key, so
// it reads those rows through the index, whatever the table's size.
func keyHashes(ctx context.Context, db *sqlx.DB, t Table, keyColumn, tenant string, only []json.RawMessage) (map[string]string, error) {
	q, err := keyHashesSQL(t, keyColumn, tenant, only)
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("row hashes of %s: %w", t.Key(), err)
	}
	defer rows.Close()
	return scanKeyHashes(rows)
}

// keyHashesSQL is keyHashes' query, its values inlined as literals: with
// no arguments lib/pq sends it in one round trip (simple protocol), and
// several can go in one query.
func keyHashesSQL(t Table, keyColumn, tenant string, only []json.RawMessage) (string, error) {
	keyObj := make([]string, len(t.PK))
	for i, k := range t.PK {
		keyObj[i] = fmt.Sprintf("%s, r.%s", pq.QuoteLiteral(k), pq.QuoteIdentifier(k))
	}
	from := fmt.Sprintf("%s r", t.Ident())
	if only != nil {
		arr, err := json.Marshal(only)
		if err != nil {
			return "", err
		}
		from = fmt.Sprintf("%s JOIN %s r ON (%s) = (%s)", keyRecordset(t, pq.QuoteLiteral(string(arr))+"::jsonb"), t.Ident(), prefixed("r", t.PK), prefixed("k", t.PK))
	}
	return fmt.Sprintf(`SELECT jsonb_build_object(%s)::text, %s FROM %s WHERE r.%s = %s`,
		strings.Join(keyObj, ", "), rowHashExpr(t), from, pq.QuoteIdentifier(keyColumn), pq.QuoteLiteral(tenant)), nil
}

// scanKeyHashes reads the current result set of a keyHashes query.
func scanKeyHashes(rows *sql.Rows) (map[string]string, error) {
	out := map[string]string{}
	for rows.Next() {
		var k, h string
		if err := rows.Scan(&k, &h); err != nil {
			return nil, err
		}
		out[k] = h
	}
	return out, rows.Err()
}

// diffKeys returns up to limit keys (0: all) whose rows differ between the maps.
func diffKeys(a, b map[string]string, limit int) []string {
	var out []string
	for k, h := range a {
		if b[k] != h {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// verifyAll compares every table by count and hash; for a table that differs
// it compares row by row and names the keys (up to limit, 0: all).
func verifyAll(ctx context.Context, src, dst *sqlx.DB, tables []Table, keyColumn, tenant string, limit int) ([]Mismatch, map[string]TableSum, error) {
	var out []Mismatch
	sums := map[string]TableSum{}
	for _, t := range tables {
		s, err := tableSum(ctx, src, t, keyColumn, tenant)
		if err != nil {
			return nil, nil, err
		}
		d, err := tableSum(ctx, dst, t, keyColumn, tenant)
		if err != nil {
			return nil, nil, err
		}
		sums[t.Key()] = s
		if s == d {
			continue
		}
		sk, err := keyHashes(ctx, src, t, keyColumn, tenant, nil)
		if err != nil {
			return nil, nil, err
		}
		dk, err := keyHashes(ctx, dst, t, keyColumn, tenant, nil)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, Mismatch{Table: t.Key(), Source: s, Target: d, Keys: diffKeys(sk, dk, limit)})
	}
	return out, sums, nil
}

// verifyKeys compares the given rows (table key → primary keys, canonical
// jsonb text) on both sides by their md5, reading source and target at the
// same time, and names up to limit differing keys per table (0: all). It
// costs what the keys cost, not what the tables hold: the
// switch uses it for the rows changed since the full verification.
//
// It counts no rows, and needs not: the full verification (verifyAll)
// proved every row equal except those with a change still queued, and every
// write to the source since is captured (the guard runs in the writer's
// transaction) and applied, which puts its key into the set verified here;
// a key never written since is equal on both sides as it was then, and no
// one else writes the target's copy of the tenant. So equal hashes of every
// changed key, present or absent on each side, prove equal tables; a row
// count inside the fence would read every row of the tenant again (O(rows):
// 300 ms for a million rows) to prove nothing more.
//
// Each side gets every table's statement in one query (lib/pq's simple
// protocol: one round trip), the two sides at once: inside the pause the
// verification is one round trip, not two per table and side.
func verifyKeys(ctx context.Context, src, dst *sqlx.DB, tables []Table, keyColumn, tenant string, keys map[string][]json.RawMessage, limit int) ([]Mismatch, error) {
	var with []Table
	var stmts []string
	for _, t := range tables {
		if ks := uniqueKeys(keys[t.Key()]); len(ks) > 0 {
			q, err := keyHashesSQL(t, keyColumn, tenant, ks)
			if err != nil {
				return nil, err
			}
			with, stmts = append(with, t), append(stmts, q)
		}
	}
	if len(with) == 0 {
		return nil, nil
	}
	q := strings.Join(stmts, ";\n")
	sh, dh, err := both(ctx, src, dst, func(ctx context.Context, db *sqlx.DB) ([]map[string]string, error) {
		return keyHashesAll(ctx, db, q, len(with))
	})
	if err != nil {
		return nil, err
	}
	var out []Mismatch
	for i, t := range with {
		if diff := diffKeys(sh[i], dh[i], limit); len(diff) > 0 {
			out = append(out, Mismatch{Table: t.Key(), Source: TableSum{Rows: int64(len(sh[i]))}, Target: TableSum{Rows: int64(len(dh[i]))}, Keys: diff})
		}
	}
	return out, nil
}

// keyHashesAll runs n keyHashes statements sent as one query and returns
// their answers in order.
func keyHashesAll(ctx context.Context, db *sqlx.DB, q string, n int) ([]map[string]string, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("row hashes: %w", err)
	}
	defer rows.Close()
	out := make([]map[string]string, 0, n)
	for {
		m, err := scanKeyHashes(rows)
		if err != nil {
			return nil, fmt.Errorf("row hashes: %w", err)
		}
		out = append(out, m)
		if len(out) == n || !rows.NextResultSet() {
			break
		}
	}
	if len(out) != n {
		return nil, fmt.Errorf("row hashes: %d answers to %d statements", len(out), n)
	}
	return out, nil
}

// uniqueKeys drops repeated keys (a key applied in several batches).
func uniqueKeys(ks []json.RawMessage) []json.RawMessage {
	seen := make(map[string]bool, len(ks))
	out := make([]json.RawMessage, 0, len(ks))
	for _, k := range ks {
		if !seen[string(k)] {
			seen[string(k)] = true
			out = append(out, k)
		}
	}
	return out
}
