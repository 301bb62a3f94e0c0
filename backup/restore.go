package backup

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

// ErrDestination: the destination cannot take the restore as asked (the
// tenant exists already, its database or rows are there already).
var ErrDestination = errors.New("destination refused")

// RestoreRequest asks to restore a backup as a new tenant.
type RestoreRequest struct {
	BackupID string
	Store    Store
	// Key opens an encrypted backup.
	Key *Key
	// As is the new tenant's id.
	As string
	// Target is where the new tenant's data goes (any tier).
	Target catalog.Target
	// Catalog, if set, gets the new tenant's record (the backup's plan,
	// labels, limits and residency; the target's tier) once its rows are in.
	Catalog *catalog.Store
	// Progress, if set, is called as objects are verified and rows written.
	Progress func(Progress)
	// TempDir holds the verified objects while restoring ("": os.TempDir).
	TempDir string
	Logger  *slog.Logger
}

// RestoreResult says what a restore did.
type RestoreResult struct {
	Manifest *Manifest      `json:"manifest"`
	Tenant   catalog.Tenant `json:"tenant"`
	Rows     int64          `json:"rows"`
}

// LoadManifest reads and verifies a backup's manifest (its seal, under key
// for an encrypted backup).
func LoadManifest(ctx context.Context, s Store, id string, key *Key) (*Manifest, error) {
	data, err := readManifest(ctx, s, id)
	if err != nil {
		return nil, err
	}
	m, err := verifyManifest(data, key)
	if err != nil {
		return nil, err
	}
	if m.ID != id {
		return nil, fmt.Errorf("%w: manifest at %s is of backup %s", ErrCorrupt, id, m.ID)
	}
	return m, nil
}

// Restore restores a backup as a new tenant onto req.Target. Before it
// writes anything it verifies every object against the manifest (stored
// bytes, then row counts and content hashes) and the destination's tables
// against the backup's schema; then it writes all rows with COPY in one
// transaction, recomputes every table's hash inside it and commits only
// if they all match. Any refusal leaves the destination as it was.
func Restore(ctx context.Context, req RestoreRequest) (*RestoreResult, error) {
	if !catalog.ValidID(req.As) || req.Store == nil {
		return nil, fmt.Errorf("%w: restore needs a store and a valid new tenant id (--as), got %q", ErrInvalid, req.As)
	}
	log := req.Logger
	if log == nil {
		log = slog.Default()
	}
	m, err := LoadManifest(ctx, req.Store, req.BackupID, req.Key)
	if err != nil {
		return nil, err
	}
	if req.Catalog != nil {
		if _, err := req.Catalog.GetTenant(ctx, req.As); err == nil {
			return nil, fmt.Errorf("%w: tenant %s exists already", ErrDestination, req.As)
		} else if !errors.Is(err, catalog.ErrNotFound) {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp(req.TempDir, "switchyard-restore-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	r := &restorer{req: req, m: m, dir: dir}
	if err := r.verify(ctx); err != nil {
		return nil, err
	}
	if err := r.write(ctx); err != nil {
		return nil, err
	}
	res := &RestoreResult{Manifest: m, Tenant: r.tenant, Rows: m.Rows()}
	log.Info("backup restored", "backup", m.ID, "as", req.As, "target", req.Target.ID, "rows", res.Rows)
	return res, nil
}

// restorer carries one restore.
type restorer struct {
	req    RestoreRequest
	m      *Manifest
	dir    string
	tenant catalog.Tenant
	done   int64
	// key, if set, is the key the rows are written under instead of
	// req.As (an in-place restore's hidden staging copy).
	key string
}

// rowKey is the tenant key the restored rows carry.
func (r *restorer) rowKey() string {
	if r.key != "" {
		return r.key
	}
	return r.req.As
}

func (r *restorer) report(p Progress) {
	if r.req.Progress != nil {
		r.req.Progress(p)
	}
}

func (r *restorer) local(name string) string {
	return filepath.Join(r.dir, strings.ReplaceAll(name, "/", "_"))
}

// verify downloads every object, checks its size and SHA-256, then
// decodes it and checks the tables' row counts and hashes and reads the
// catalog record.
func (r *restorer) verify(ctx context.Context) error {
	p, _ := prefix(r.m.ID)
	for _, o := range r.m.Objects {
		if err := r.fetch(ctx, p, o); err != nil {
			return err
		}
	}
	r.report(Progress{Phase: "verify", RowsTotal: r.m.Rows()})
	for _, t := range r.m.Tables {
		keyIdx := columnIndex(t.Table, r.m.KeyColumn)
		if keyIdx < 0 {
			return fmt.Errorf("%w: table %s has no key column %s", ErrCorrupt, t.Table.Key(), r.m.KeyColumn)
		}
		h := newRowHasher(keyIdx, r.m.Tenant)
		if err := r.decode(t.Object, h); err != nil {
			return err
		}
		if err := h.finish(); err != nil {
			return fmt.Errorf("%s: %w", t.Object, err)
		}
		if h.rows != t.Rows || h.Sum() != t.Hash {
			return fmt.Errorf("%w: table %s: %d rows hashing %.12s, manifest says %d rows hashing %.12s",
				ErrCorrupt, t.Table.Key(), h.rows, h.Sum(), t.Rows, t.Hash)
		}
	}
	return r.readTenant()
}

// fetch downloads one object into the temp dir, checking size and hash.
func (r *restorer) fetch(ctx context.Context, prefix string, o ObjectEntry) error {
	rc, err := r.req.Store.Get(ctx, prefix+o.Name)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%w: object %s is missing", ErrCorrupt, o.Name)
		}
		return err
	}
	defer rc.Close()
	f, err := os.Create(r.local(o.Name))
	if err != nil {
		return err
	}
	defer f.Close()
	sum := &countingHash{w: f, h: sha256.New()}
	if _, err := io.Copy(sum, io.LimitReader(rc, o.Size+1)); err != nil {
		return fmt.Errorf("fetch %s: %w", o.Name, err)
	}
	if got := hex.EncodeToString(sum.h.Sum(nil)); sum.n != o.Size || got != o.SHA256 {
		return fmt.Errorf("%w: object %s is %d bytes with SHA-256 %.12s, manifest says %d bytes with %.12s",
			ErrCorrupt, o.Name, sum.n, got, o.Size, o.SHA256)
	}
	return f.Sync()
}

// decode writes a fetched object's content (opened, decompressed) to w.
func (r *restorer) decode(name string, w io.Writer) error {
	f, err := os.Open(r.local(name))
	if err != nil {
		return err
	}
	defer f.Close()
	var src io.Reader = bufio.NewReaderSize(f, 256<<10)
	if r.m.Encryption != "" {
		if src, err = newOpenReader(src, r.req.Key, name); err != nil {
			return err
		}
	}
	zr, err := gzip.NewReader(src)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, name, err)
	}
	if _, err := io.Copy(w, zr); err != nil {
		if errors.Is(err, ErrCorrupt) {
			return err
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// readTenant reads the backed-up catalog record and derives the new one.
func (r *restorer) readTenant() error {
	name := "tenant.json.gz"
	if r.m.Encryption != "" {
		name += ".enc"
	}
	var sb strings.Builder
	if err := r.decode(name, &sb); err != nil {
		return err
	}
	var t catalog.Tenant
	if err := json.Unmarshal([]byte(sb.String()), &t); err != nil {
		return fmt.Errorf("%w: tenant record: %w", ErrCorrupt, err)
	}
	t.ID, t.Tier, t.Target, t.State, t.Epoch = r.req.As, r.req.Target.Tier, r.req.Target.ID, catalog.StateActive, 0
	if err := t.Validate(); err != nil {
		return fmt.Errorf("%w: new tenant record: %w", ErrDestination, err)
	}
	r.tenant = t
	return nil
}

// tables is the backup's schema.
func (r *restorer) tables() []migrator.Table {
	out := make([]migrator.Table, len(r.m.Tables))
	for i, t := range r.m.Tables {
		out[i] = t.Table
	}
	return out
}

// quoteList quotes identifiers and joins them with commas.
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = pq.QuoteIdentifier(n)
	}
	return strings.Join(q, ", ")
}

func columnNames(t migrator.Table) []string {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = c.Name
	}
	return names
}

// copyIn writes one table's rows (tenant key rewritten) on conn and
// recomputes their hash in the same transaction.
func (r *restorer) copyIn(ctx context.Context, conn *pgconn.PgConn, t TableEntry) error {
	keyIdx := columnIndex(t.Table, r.m.KeyColumn)
	pr, pw := io.Pipe()
	go func() {
		rw := newKeyRewriter(pw, keyIdx, r.rowKey())
		err := r.decode(t.Object, rw)
		if err == nil {
			err = rw.finish()
		}
		pw.CloseWithError(err)
	}()
	sql := fmt.Sprintf("COPY %s (%s) FROM STDIN", t.Table.Ident(), quoteList(columnNames(t.Table)))
	if _, err := conn.CopyFrom(ctx, pr, sql); err != nil {
		pr.CloseWithError(err)
		return fmt.Errorf("write %s: %w", t.Table.Key(), err)
	}
	h := newRowHasher(keyIdx, r.rowKey())
	if _, err := conn.CopyTo(ctx, h, fmt.Sprintf("COPY (%s) TO STDOUT", selectRows(t.Table, r.m.KeyColumn, r.rowKey()))); err != nil {
		return fmt.Errorf("re-read %s: %w", t.Table.Key(), err)
	}
	if h.rows != t.Rows || h.Sum() != t.Hash {
		return fmt.Errorf("%w: table %s after writing: %d rows hashing %.12s, backup has %d rows hashing %.12s",
			ErrCorrupt, t.Table.Key(), h.rows, h.Sum(), t.Rows, t.Hash)
	}
	r.done += t.Rows
	r.report(Progress{Phase: "restore", Table: t.Table.Key(), RowsDone: r.done, RowsTotal: r.m.Rows()})
	return nil
}
