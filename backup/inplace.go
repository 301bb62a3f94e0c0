package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

// In-place restore (RestoreInPlace): the tenant's data becomes a backup's,
// on the tenant's own target, under a hold like a cutover's:
//
//  1. the backup is verified as for a new-tenant restore (objects, row
//     counts, hashes) and the tenant's tables are compared with its schema;
//  2. its rows are written, in the tenant's own database, under a hidden
//     staging key ("~s~<stamp>~<tenant>") and hashed again there;
//  3. the routers hold the tenant (migrator.HoldTenant: catalog freeze,
//     acknowledgements, write fence) while one transaction moves the
//     tenant's current rows aside under a retained key
//     ("~r~<stamp>~<tenant>"), gives the staged rows the tenant's key and
//     records the restore in switchyard.restores; only rows carrying
//     those three keys are touched;
//  4. the tenant is unfrozen, served from the restored rows.
//
// The retained rows stay until retain_until; UndoInPlace swaps them back
// the same way (the undone data is retained in turn).

// DefaultRetention is how long an in-place restore keeps the data it
// replaced (as long as a move keeps its source copy, by default).
const DefaultRetention = 24 * time.Hour

// ErrNoRetained: the tenant has no retained copy to go back to (none, undone
// already, or past its retention).
var ErrNoRetained = errors.New("no retained copy to undo to")

// Holder holds a tenant where it is while a swap runs (the migrator).
type Holder interface {
	HoldTenant(ctx context.Context, req migrator.HoldRequest) (migrator.HoldResult, error)
}

var _ Holder = (*migrator.Migrator)(nil)

// InPlaceRequest asks to restore a backup of a tenant onto the tenant itself.
type InPlaceRequest struct {
	BackupID string
	Store    Store
	Key      *Key
	// Tenant is the backed-up tenant, Target where it lives now.
	Tenant string
	Target catalog.Target
	Holder Holder
	// Budget bounds the hold (default: the cutover's switch budget).
	Budget time.Duration
	// Retention keeps the replaced data (default DefaultRetention).
	Retention time.Duration
	Progress  func(Progress)
	TempDir   string
	Logger    *slog.Logger
}

// InPlaceResult says what an in-place restore (or its undo) did.
type InPlaceResult struct {
	Manifest *Manifest `json:"manifest,omitempty"`
	Rows     int64     `json:"rows"`
	// Retained is the hidden key the replaced rows are kept under.
	Retained    string        `json:"retained"`
	RetainUntil time.Time     `json:"retain_until"`
	Hold        time.Duration `json:"hold_ns"`
}

// CheckInPlace loads and verifies the backup's manifest and refuses it,
// before anything changes, if it is not the tenant's or its schema no
// longer matches the tenant's tables on target (naming table and column;
// wraps migrator.ErrShapeMismatch).
func CheckInPlace(ctx context.Context, s Store, id string, key *Key, tenant string, target catalog.Target) (*Manifest, error) {
	m, err := LoadManifest(ctx, s, id, key)
	if err != nil {
		return nil, err
	}
	if m.Tenant != tenant {
		return nil, fmt.Errorf("%w: backup %s is of tenant %s, not %s", ErrInvalid, id, m.Tenant, tenant)
	}
	db, err := openTenantDB(target, tenant)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if _, err := sameSchema(ctx, db, m); err != nil {
		return nil, err
	}
	return m, nil
}

// sameSchema compares the tenant tables of db with the backup's schema and
// returns them.
func sameSchema(ctx context.Context, db *sqlx.DB, m *Manifest) ([]migrator.Table, error) {
	have, err := migrator.DiscoverTables(ctx, db, m.KeyColumn)
	if err != nil {
		return nil, err
	}
	want := tablesOf(m)
	if err := migrator.SameShape(want, have); err != nil {
		return nil, fmt.Errorf("backup %s no longer matches the schema of tenant %s: %w", m.ID, m.Tenant, err)
	}
	if len(have) != len(want) {
		return nil, fmt.Errorf("%w: tenant %s has %d tenant tables, backup %s has %d", migrator.ErrShapeMismatch, m.Tenant, len(have), m.ID, len(want))
	}
	return want, nil
}

func openTenantDB(target catalog.Target, tenant string) (*sqlx.DB, error) {
	dsn, err := target.DSNFor(tenant)
	if err != nil {
		return nil, err
	}
	return sqlx.Open("postgres", dsn)
}

// hiddenKey is a key no tenant can have (ids are DNS labels).
func hiddenKey(kind, tenant string) string {
	return "~" + kind + "~" + strconv.FormatInt(time.Now().UnixNano(), 36) + "~" + tenant
}

// RestoreInPlace makes the tenant's data the backup's (see the comment at
// the top of this file). Every refusal before the hold leaves the tenant's
// rows as they were; a failure inside the hold rolls the swap back.
func RestoreInPlace(ctx context.Context, req InPlaceRequest) (*InPlaceResult, error) {
	if req.Store == nil || req.Holder == nil || !catalog.ValidID(req.Tenant) {
		return nil, fmt.Errorf("%w: in-place restore needs a store, a holder and a tenant, got %q", ErrInvalid, req.Tenant)
	}
	if req.Retention <= 0 {
		req.Retention = DefaultRetention
	}
	log := req.Logger
	if log == nil {
		log = slog.Default()
	}
	m, err := CheckInPlace(ctx, req.Store, req.BackupID, req.Key, req.Tenant, req.Target)
	if err != nil {
		return nil, err
	}
	db, err := openTenantDB(req.Target, req.Tenant)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if err := ensureRestoresTable(ctx, db); err != nil {
		return nil, err
	}
	staged, err := stage(ctx, req, m)
	if err != nil {
		return nil, err
	}
	defer dropKey(context.WithoutCancel(ctx), db, m.Tables, m.KeyColumn, staged) // nothing left there after a swap
	want := map[string]int64{}
	for _, t := range m.Tables {
		want[t.Table.Key()] = t.Rows
	}
	sw := swap{tables: tablesOf(m), keyColumn: m.KeyColumn, tenant: req.Tenant, from: staged, want: want,
		aside: hiddenKey("r", req.Tenant), backupID: m.ID, retainUntil: time.Now().Add(req.Retention).UTC()}
	hold, err := req.Holder.HoldTenant(ctx, migrator.HoldRequest{Tenant: req.Tenant, Reason: "restore:" + m.ID, DB: db,
		Tables: sw.tables, KeyColumn: m.KeyColumn, Budget: req.Budget, Swap: func(ctx context.Context) error { return sw.run(ctx, db) }})
	if err != nil {
		return nil, err
	}
	res := &InPlaceResult{Manifest: m, Rows: m.Rows(), Retained: sw.aside, RetainUntil: sw.retainUntil, Hold: hold.Hold}
	log.Info("backup restored in place", "backup", m.ID, "tenant", req.Tenant, "rows", res.Rows, "hold", hold.Hold, "retained", sw.aside)
	return res, nil
}

// stage verifies the backup's objects and writes its rows under a hidden
// staging key in the tenant's database, hashing them there; it returns
// the key.
func stage(ctx context.Context, req InPlaceRequest, m *Manifest) (string, error) {
	dir, err := os.MkdirTemp(req.TempDir, "switchyard-restore-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	r := &restorer{m: m, dir: dir, key: hiddenKey("s", req.Tenant), req: RestoreRequest{BackupID: m.ID, Store: req.Store,
		Key: req.Key, As: req.Tenant, Target: req.Target, Progress: req.Progress, Logger: req.Logger}}
	if err := r.verify(ctx); err != nil {
		return "", err
	}
	dsn, err := req.Target.DSNFor(req.Tenant)
	if err != nil {
		return "", err
	}
	if err := r.transaction(ctx, dsn, false); err != nil {
		return "", fmt.Errorf("stage backup %s in tenant %s's database: %w", m.ID, req.Tenant, err)
	}
	return r.key, nil
}

func tablesOf(m *Manifest) []migrator.Table {
	out := make([]migrator.Table, len(m.Tables))
	for i, t := range m.Tables {
		out[i] = t.Table
	}
	return out
}
