package migrator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Column is one column of a tenant table.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"` // format_type(), e.g. "bigint", "jsonb"
}

// Table is a table holding tenant rows: it has the tenant key column.
type Table struct {
	Schema  string   `json:"schema"`
	Name    string   `json:"name"`
	Columns []Column `json:"columns"`
	// PK lists the primary key columns in key order.
	PK []string `json:"pk"`
	// Parents are the tenant tables this one references.
	Parents []string `json:"parents,omitempty"`
	// Sequences are sequences feeding columns of this table (serial, identity).
	Sequences []string `json:"sequences,omitempty"`
}

// Ident is the quoted schema-qualified name.
func (t Table) Ident() string { return pq.QuoteIdentifier(t.Schema) + "." + pq.QuoteIdentifier(t.Name) }

// Key is "schema.name", as used in change records and progress.
func (t Table) Key() string { return t.Schema + "." + t.Name }

func (t Table) colType(name string) string {
	for _, c := range t.Columns {
		if c.Name == name {
			return c.Type
		}
	}
	return "text"
}

func quoteIdents(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = pq.QuoteIdentifier(n)
	}
	return strings.Join(q, ", ")
}

// DefaultKeyColumn is the tenant key column when none is configured.
const DefaultKeyColumn = "tenant_id"

// tenantTablesSQL selects the tenant tables (schema, name, oid): the
// tables, outside the system schemas, with the key column ($1). Temporary
// tables are not (the applier's staging tables on the target, of any
// session, come and go during a move).
const tenantTablesSQL = `
		SELECT n.nspname, c.relname, c.oid::int8 AS oid
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema','switchyard')
		  AND NOT c.relispartition AND c.relpersistence <> 't'
		  AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = $1 AND NOT a.attisdropped AND a.attnum > 0)`

// DiscoverTables finds every table in the database with the tenant key
// column ("": DefaultKeyColumn), with its columns, primary key, parents and
// sequences, ordered so that parents come before children. It is the one
// discovery of tenant tables: moves, cleanup and the controller's size
// measurements use it.
func DiscoverTables(ctx context.Context, db *sqlx.DB, keyColumn string) ([]Table, error) {
	if keyColumn == "" {
		keyColumn = DefaultKeyColumn
	}
	type row struct {
		Schema string `db:"nspname"`
		Name   string `db:"relname"`
		OID    uint32 `db:"oid"`
	}
	var rows []row
	err := db.SelectContext(ctx, &rows, tenantTablesSQL+` ORDER BY 1, 2`, keyColumn)
	if err != nil {
		return nil, fmt.Errorf("discover tenant tables: %w", err)
	}
	byOID := map[uint32]*Table{}
	var tables []*Table
	for _, r := range rows {
		t := &Table{Schema: r.Schema, Name: r.Name}
		var cols []struct {
			Name string `db:"attname"`
			Type string `db:"typ"`
		}
		if err := db.SelectContext(ctx, &cols, `
			SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS typ
			FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
			ORDER BY a.attnum`, r.OID); err != nil {
			return nil, fmt.Errorf("columns of %s: %w", t.Key(), err)
		}
		for _, c := range cols {
			t.Columns = append(t.Columns, Column{Name: c.Name, Type: c.Type})
		}
		if err := db.SelectContext(ctx, &t.PK, `
			SELECT a.attname FROM pg_index i
			JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
			JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
			WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord`, r.OID); err != nil {
			return nil, fmt.Errorf("primary key of %s: %w", t.Key(), err)
		}
		if err := db.SelectContext(ctx, &t.Sequences, `
			SELECT DISTINCT s.oid::regclass::text FROM pg_depend d
			JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
			WHERE d.refobjid = $1 AND d.deptype IN ('a','i') ORDER BY 1`, r.OID); err != nil {
			return nil, fmt.Errorf("sequences of %s: %w", t.Key(), err)
		}
		byOID[r.OID] = t
		tables = append(tables, t)
	}
	// Foreign keys between tenant tables give the copy order.
	var fks []struct {
		Child  uint32 `db:"child"`
		Parent uint32 `db:"parent"`
	}
	if err := db.SelectContext(ctx, &fks, `SELECT conrelid::int8 AS child, confrelid::int8 AS parent FROM pg_constraint WHERE contype = 'f'`); err != nil {
		return nil, fmt.Errorf("foreign keys: %w", err)
	}
	for _, fk := range fks {
		c, p := byOID[fk.Child], byOID[fk.Parent]
		if c != nil && p != nil && c != p {
			c.Parents = append(c.Parents, p.Key())
		}
	}
	return topoSort(tables)
}

// topoSort orders tables parents first; ties by name, so the order is stable.
func topoSort(tables []*Table) ([]Table, error) {
	byKey := map[string]*Table{}
	for _, t := range tables {
		byKey[t.Key()] = t
		sort.Strings(t.Parents)
	}
	var out []Table
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(t *Table) error
	visit = func(t *Table) error {
		switch state[t.Key()] {
		case 1:
			return fmt.Errorf("foreign keys form a cycle through %s", t.Key())
		case 2:
			return nil
		}
		state[t.Key()] = 1
		for _, p := range t.Parents {
			if err := visit(byKey[p]); err != nil {
				return err
			}
		}
		state[t.Key()] = 2
		out = append(out, *t)
		return nil
	}
	sort.Slice(tables, func(i, j int) bool { return tables[i].Key() < tables[j].Key() })
	for _, t := range tables {
		if err := visit(t); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// fingerprint summarises the tenant tables' shape (names, columns, types,
// keys): any DDL that touches them changes it.
func fingerprint(tables []Table) string {
	h := sha256.New()
	for _, t := range tables {
		fmt.Fprintf(h, "%s|%v|%v;", t.Key(), t.Columns, t.PK)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// schemaStamp reads, in one query, a digest of everything DiscoverTables
// and fingerprint look at in db: which tables carry the key column, their
// columns (name, position, type, generation, identity), primary keys and
// foreign keys. Any DDL on a tenant table changes it. The switch takes it
// before the freeze (then checks the full shape) and compares it inside
// the fence: one cheap read per side instead of the whole discovery.
func schemaStamp(ctx context.Context, db *sqlx.DB, keyColumn string) (string, error) {
	var stamp string
	// The key column as a literal: with no arguments lib/pq sends one
	// simple query (one round trip inside the pause, not two).
	tables := strings.Replace(tenantTablesSQL, "$1", pq.QuoteLiteral(keyColumn), 1)
	err := db.GetContext(ctx, &stamp, `
		WITH t AS (`+tables+`)
		SELECT md5(coalesce(string_agg(x, '|' ORDER BY x), '')) FROM (
		  SELECT t.nspname || '.' || t.relname || ':' || a.attnum || ':' || a.attname || ':' ||
		         format_type(a.atttypid, a.atttypmod) || ':' || a.attgenerated::text || ':' || a.attidentity::text AS x
		  FROM t JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
		  UNION ALL
		  SELECT t.nspname || '.' || t.relname || ':' || c.contype::text || ':' || c.conkey::text || ':' || c.confrelid::regclass::text
		  FROM t JOIN pg_constraint c ON c.conrelid = t.oid AND c.contype IN ('p', 'f')
		) s`)
	if err != nil {
		return "", fmt.Errorf("schema stamp: %w", err)
	}
	return stamp, nil
}

// ErrShapeMismatch marks a destination whose tenant tables differ from the
// source's (a table missing, a column or key different).
var ErrShapeMismatch = errors.New("tenant tables differ")

// SameShape reports the first difference between the tables src describes
// and the tables dst has, naming the table and the column: a missing
// table, the first column (by position) whose name or type differs, a
// column only one side has, or different primary keys. The error wraps
// ErrShapeMismatch.
func SameShape(src, dst []Table) error {
	have := map[string]Table{}
	for _, t := range dst {
		have[t.Key()] = t
	}
	for _, s := range src {
		d, ok := have[s.Key()]
		if !ok {
			return fmt.Errorf("%w: table %s is missing on the target", ErrShapeMismatch, s.Key())
		}
		if err := sameColumns(s, d); err != nil {
			return err
		}
		if fmt.Sprint(s.PK) != fmt.Sprint(d.PK) {
			return fmt.Errorf("%w: table %s: primary keys differ (source %v, target %v)", ErrShapeMismatch, s.Key(), s.PK, d.PK)
		}
	}
	return nil
}

// sameColumns names the first column of s that d does not have alike.
func sameColumns(s, d Table) error {
	for i, c := range s.Columns {
		if i >= len(d.Columns) {
			return fmt.Errorf("%w: table %s: column %s (%s) is missing on the target", ErrShapeMismatch, s.Key(), c.Name, c.Type)
		}
		if dc := d.Columns[i]; dc != c {
			return fmt.Errorf("%w: table %s: column %d is %s %s on the source, %s %s on the target",
				ErrShapeMismatch, s.Key(), i+1, c.Name, c.Type, dc.Name, dc.Type)
		}
	}
	if len(d.Columns) > len(s.Columns) {
		c := d.Columns[len(s.Columns)]
		return fmt.Errorf("%w: table %s: column %s (%s) exists only on the target", ErrShapeMismatch, s.Key(), c.Name, c.Type)
	}
	return nil
}
