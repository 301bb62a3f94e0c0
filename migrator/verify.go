package migrator

import (
	"context"
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
// the given keys).
func keyHashes(ctx context.Context, db *sqlx.DB, t Table, keyColumn, tenant string, only []json.RawMessage) (map[string]string, error) {
	keyObj := make([]string, len(t.PK))
	for i, k := range t.PK {
		keyObj[i] = fmt.Sprintf("%s, r.%s", pq.QuoteLiteral(k), pq.QuoteIdentifier(k))
	}
	q := fmt.Sprintf(`SELECT jsonb_build_object(%s)::text, %s FROM %s r WHERE r.%s = $1`,
		strings.Join(keyObj, ", "), rowHashExpr(t), t.Ident(), pq.QuoteIdentifier(keyColumn))
	args := []any{tenant}
	if only != nil {
		arr, _ := json.Marshal(only)
		q += fmt.Sprintf(` AND (%s) IN (SELECT %s FROM jsonb_populate_recordset(NULL::%s, $2::jsonb) k)`,
			prefixed("r", t.PK), prefixed("k", t.PK), t.Ident())
		args = append(args, string(arr))
	}
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("row hashes of %s: %w", t.Key(), err)
	}
	defer rows.Close()
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

// verifyKeys compares only the given rows (those changed since the full
// verification) plus each table's row count.
func verifyKeys(ctx context.Context, src, dst *sqlx.DB, tables []Table, keyColumn, tenant string, keys map[string][]json.RawMessage) ([]Mismatch, error) {
	var out []Mismatch
	countQ := func(db *sqlx.DB, t Table) (int64, error) {
		var n int64
		err := db.GetContext(ctx, &n, fmt.Sprintf(`SELECT count(*) FROM %s WHERE %s = $1`, t.Ident(), pq.QuoteIdentifier(keyColumn)), tenant)
		return n, err
	}
	for _, t := range tables {
		sn, err := countQ(src, t)
		if err != nil {
			return nil, err
		}
		dn, err := countQ(dst, t)
		if err != nil {
			return nil, err
		}
		m := Mismatch{Table: t.Key(), Source: TableSum{Rows: sn}, Target: TableSum{Rows: dn}}
		if ks := keys[t.Key()]; len(ks) > 0 {
			sk, err := keyHashes(ctx, src, t, keyColumn, tenant, ks)
			if err != nil {
				return nil, err
			}
			dk, err := keyHashes(ctx, dst, t, keyColumn, tenant, ks)
			if err != nil {
				return nil, err
			}
			m.Keys = diffKeys(sk, dk, 20)
		}
		if sn != dn || len(m.Keys) > 0 {
			out = append(out, m)
		}
	}
	return out, nil
}
