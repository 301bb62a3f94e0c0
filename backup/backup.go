package backup

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

// Progress is how far a backup or restore is.
type Progress struct {
	Phase     string `json:"phase"`
	Table     string `json:"table,omitempty"`
	RowsDone  int64  `json:"rows_done"`
	RowsTotal int64  `json:"rows_total"`
}

// Request asks for a backup of one tenant.
type Request struct {
	// Tenant is the tenant's catalog record (stored in the backup, and its
	// residency checked against the store's region).
	Tenant catalog.Tenant
	// Target is the tenant's target; its data is read at Target.DSNFor.
	Target catalog.Target
	Store  Store
	// Key seals the backup (nil: not encrypted).
	Key *Key
	// KeyColumn is the tenant key column ("": migrator.DefaultKeyColumn).
	KeyColumn string
	// PGBinDir holds pg_dump ("": migrator.DefaultPGBinDir).
	PGBinDir string
	// Progress, if set, is called as rows are read.
	Progress func(Progress)
	Logger   *slog.Logger
}

// CheckResidency refuses a store whose region the tenant may not live in;
// the error names the constraint and the store's region.
func CheckResidency(t *catalog.Tenant, s Store) error {
	if t.ResidentIn(s.Region()) {
		return nil
	}
	return fmt.Errorf("%w: tenant %s may live only in %v; the store is in region %q",
		ErrResidency, t.ID, t.Residency, s.Region())
}

// Backup takes one backup of the tenant: its tables' rows read in one
// REPEATABLE READ, READ ONLY snapshot (writers are not blocked), their
// schema, its catalog record and the manifest, written last.
func Backup(ctx context.Context, req Request) (*Manifest, error) {
	if req.Store == nil || !catalog.ValidID(req.Tenant.ID) {
		return nil, fmt.Errorf("%w: a store and a valid tenant are required", ErrInvalid)
	}
	if err := CheckResidency(&req.Tenant, req.Store); err != nil {
		return nil, err
	}
	if req.KeyColumn == "" {
		req.KeyColumn = migrator.DefaultKeyColumn
	}
	log := req.Logger
	if log == nil {
		log = slog.Default()
	}
	dsn, err := req.Target.DSNFor(req.Tenant.ID)
	if err != nil {
		return nil, err
	}
	tables, err := discover(ctx, dsn, req.KeyColumn)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	m := &Manifest{Format: FormatVersion, ID: NewID(req.Tenant.ID, now), Tenant: req.Tenant.ID, CreatedAt: now,
		Source: Source{Tier: req.Tenant.Tier, Target: req.Target.ID}, Region: req.Store.Region(),
		Compression: "gzip", KeyColumn: req.KeyColumn}
	if req.Key != nil {
		m.Encryption, m.KeyID = "aes-256-gcm", req.Key.ID()
	}
	b := &writer{store: req.Store, key: req.Key, m: m, progress: req.Progress}
	if b.prefix, err = prefix(m.ID); err != nil {
		return nil, err
	}
	if err := b.snapshot(ctx, dsn, tables); err != nil {
		b.cleanup(ctx)
		return nil, err
	}
	if req.PGBinDir == "" {
		req.PGBinDir = migrator.DefaultPGBinDir
	}
	ddl, err := migrator.SchemaDDL(ctx, req.PGBinDir, dsn, tables)
	if err != nil {
		b.cleanup(ctx)
		return nil, err
	}
	if err := b.meta(ctx, &req.Tenant, tables, ddl); err != nil {
		b.cleanup(ctx)
		return nil, err
	}
	data, err := m.encode(keyBytes(req.Key))
	if err != nil {
		b.cleanup(ctx)
		return nil, err
	}
	if err := req.Store.Put(ctx, b.prefix+manifestName, strings.NewReader(string(data)), int64(len(data))); err != nil {
		b.cleanup(ctx)
		return nil, err
	}
	log.Info("backup taken", "backup", m.ID, "tenant", m.Tenant, "rows", m.Rows(), "tables", len(m.Tables),
		"region", m.Region, "encrypted", m.Encryption != "")
	return m, nil
}

func keyBytes(k *Key) []byte {
	if k == nil {
		return nil
	}
	return k.raw
}

// discover lists the tenant tables at dsn.
func discover(ctx context.Context, dsn, keyColumn string) ([]migrator.Table, error) {
	db, err := sqlx.Open("postgres", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", migrator.RedactDSN(dsn), err)
	}
	defer db.Close()
	return migrator.DiscoverTables(ctx, db, keyColumn)
}

// writer writes one backup's objects.
type writer struct {
	store    Store
	key      *Key
	m        *Manifest
	prefix   string
	progress func(Progress)
	done     int64
}

// snapshot reads every table in one snapshot and stores its rows.
func (b *writer) snapshot(ctx context.Context, dsn string, tables []migrator.Table) error {
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect %s: %w", migrator.RedactDSN(dsn), err)
	}
	defer conn.Close(context.Background())
	if err := exec(ctx, conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return err
	}
	defer func() { _ = exec(context.Background(), conn, "ROLLBACK") }()
	row, err := queryRow(ctx, conn, "SELECT pg_export_snapshot(), txid_current_snapshot()::text")
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	b.m.Snapshot, b.m.SnapshotTxn = row[0], row[1]
	total, err := b.count(ctx, conn, tables)
	if err != nil {
		return err
	}
	if err := b.sequences(ctx, conn, tables); err != nil {
		return err
	}
	for i, t := range tables {
		entry, err := b.table(ctx, conn, i, t, total)
		if err != nil {
			return err
		}
		b.m.Tables = append(b.m.Tables, entry)
	}
	return nil
}

// count counts the tenant's rows in the snapshot (the progress total).
func (b *writer) count(ctx context.Context, conn *pgconn.PgConn, tables []migrator.Table) (int64, error) {
	var total int64
	for _, t := range tables {
		row, err := queryRow(ctx, conn, fmt.Sprintf("SELECT count(*) FROM %s WHERE %s = %s",
			t.Ident(), pq.QuoteIdentifier(b.m.KeyColumn), pq.QuoteLiteral(b.m.Tenant)))
		if err != nil {
			return 0, fmt.Errorf("count %s: %w", t.Key(), err)
		}
		n, err := strconv.ParseInt(row[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("count %s: %w", t.Key(), err)
		}
		total += n
	}
	b.report(Progress{Phase: "backup", RowsTotal: total})
	return total, nil
}

// sequences records the last value of every sequence feeding the tables.
func (b *writer) sequences(ctx context.Context, conn *pgconn.PgConn, tables []migrator.Table) error {
	for _, t := range tables {
		for _, seq := range t.Sequences {
			row, err := queryRow(ctx, conn, fmt.Sprintf("SELECT coalesce(pg_sequence_last_value(to_regclass(%s)), 0)", pq.QuoteLiteral(seq)))
			if err != nil {
				return fmt.Errorf("sequence %s: %w", seq, err)
			}
			v, err := strconv.ParseInt(row[0], 10, 64)
			if err != nil {
				return fmt.Errorf("sequence %s: %w", seq, err)
			}
			if v > 0 {
				if b.m.Sequences == nil {
					b.m.Sequences = map[string]int64{}
				}
				b.m.Sequences[seq] = v
			}
		}
	}
	return nil
}

func (b *writer) report(p Progress) {
	if b.progress != nil {
		b.progress(p)
	}
}

// table stores one table's rows and returns its entry.
func (b *writer) table(ctx context.Context, conn *pgconn.PgConn, i int, t migrator.Table, total int64) (TableEntry, error) {
	keyIdx := columnIndex(t, b.m.KeyColumn)
	if keyIdx < 0 {
		return TableEntry{}, fmt.Errorf("table %s has no column %s", t.Key(), b.m.KeyColumn)
	}
	name := fmt.Sprintf("tables/%03d.copy.gz", i)
	hasher := newRowHasher(keyIdx, b.m.Tenant)
	sql := fmt.Sprintf("COPY (%s) TO STDOUT", selectRows(t, b.m.KeyColumn, b.m.Tenant))
	obj, err := b.put(ctx, name, func(w io.Writer) error {
		pw := &progressWriter{w: io.MultiWriter(w, hasher), every: 10000, tick: func(rows int64) {
			b.report(Progress{Phase: "backup", Table: t.Key(), RowsDone: b.done + rows, RowsTotal: total})
		}}
		if _, err := conn.CopyTo(ctx, pw, sql); err != nil {
			return fmt.Errorf("read %s: %w", t.Key(), err)
		}
		return hasher.finish()
	})
	if err != nil {
		return TableEntry{}, err
	}
	b.done += hasher.rows
	b.report(Progress{Phase: "backup", Table: t.Key(), RowsDone: b.done, RowsTotal: total})
	return TableEntry{Table: t, Rows: hasher.rows, Hash: hasher.Sum(), Object: obj.Name}, nil
}

// meta stores the catalog record, the schema and its DDL.
func (b *writer) meta(ctx context.Context, t *catalog.Tenant, tables []migrator.Table, ddl string) error {
	for _, o := range []struct {
		name string
		v    any
	}{{"tenant.json.gz", t}, {"schema.json.gz", tables}, {"schema.sql.gz", ddl}} {
		data := []byte(ddl)
		if o.name != "schema.sql.gz" {
			var err error
			if data, err = json.MarshalIndent(o.v, "", "  "); err != nil {
				return err
			}
		}
		e, err := b.put(ctx, o.name, func(w io.Writer) error { _, err := w.Write(data); return err })
		if err != nil {
			return err
		}
		if o.name == "schema.sql.gz" {
			b.m.DDLObject = e.Name
		}
	}
	return nil
}

// put stores one object: what fill writes, gzip-compressed, sealed if the
// backup is encrypted, and records its size and hash in the manifest.
func (b *writer) put(ctx context.Context, name string, fill func(io.Writer) error) (ObjectEntry, error) {
	if b.key != nil {
		name += ".enc"
	}
	pr, pw := io.Pipe()
	putErr := make(chan error, 1)
	go func() {
		err := b.store.Put(ctx, b.prefix+name, pr, -1)
		pr.CloseWithError(err)
		putErr <- err
	}()
	sum := &countingHash{w: pw, h: sha256.New()}
	err := encodeObject(sum, b.key, name, fill)
	pw.CloseWithError(err)
	if perr := <-putErr; err == nil && perr != nil {
		err = perr
	}
	if err != nil {
		return ObjectEntry{}, fmt.Errorf("backup object %s: %w", name, err)
	}
	e := ObjectEntry{Name: name, Size: sum.n, SHA256: hex.EncodeToString(sum.h.Sum(nil))}
	b.m.Objects = append(b.m.Objects, e)
	return e, nil
}

// encodeObject writes fill's output compressed (and sealed under key) to w.
func encodeObject(w io.Writer, key *Key, name string, fill func(io.Writer) error) error {
	var sealer *sealWriter
	if key != nil {
		s, err := newSealWriter(w, key, name)
		if err != nil {
			return err
		}
		sealer, w = s, s
	}
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	if err := fill(zw); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if sealer != nil {
		return sealer.Close()
	}
	return nil
}

// cleanup removes the objects of a backup that failed (best effort).
func (b *writer) cleanup(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	names, _ := b.store.List(ctx, b.prefix)
	for _, n := range names {
		_ = b.store.Delete(ctx, n)
	}
}

// progressWriter calls tick every `every` rows (newlines) written.
type progressWriter struct {
	w     io.Writer
	rows  int64
	every int64
	tick  func(rows int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	for _, c := range b {
		if c == '\n' {
			p.rows++
			if p.rows%p.every == 0 {
				p.tick(p.rows)
			}
		}
	}
	return p.w.Write(b)
}

func columnIndex(t migrator.Table, name string) int {
	for i, c := range t.Columns {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// selectRows selects the tenant's rows of t, every column, in key order.
func selectRows(t migrator.Table, keyColumn, tenant string) string {
	cols := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		cols[i] = pq.QuoteIdentifier(c.Name)
	}
	pk := make([]string, len(t.PK))
	for i, k := range t.PK {
		pk[i] = pq.QuoteIdentifier(k)
	}
	order := ""
	if len(pk) > 0 {
		order = " ORDER BY " + strings.Join(pk, ", ")
	}
	return fmt.Sprintf("SELECT %s FROM %s WHERE %s = %s%s", strings.Join(cols, ", "), t.Ident(),
		pq.QuoteIdentifier(keyColumn), pq.QuoteLiteral(tenant), order)
}

func exec(ctx context.Context, conn *pgconn.PgConn, sql string) error {
	if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
		return fmt.Errorf("%s: %w", strings.Fields(sql)[0], err)
	}
	return nil
}

// queryRow runs a one-row query and returns its fields as text.
func queryRow(ctx context.Context, conn *pgconn.PgConn, sql string) ([]string, error) {
	res := conn.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, res.Err
	}
	if len(res.Rows) != 1 {
		return nil, errors.New("expected one row")
	}
	out := make([]string, len(res.Rows[0]))
	for i, v := range res.Rows[0] {
		out[i] = string(v)
	}
	return out, nil
}
