package migrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/internal/retry"
)

// deleteBatch is how many rows one cleanup statement deletes; the pause
// between batches keeps the cleanup from disturbing the pool.
const (
	deleteBatch = 2000
	deletePause = 20 * time.Millisecond
)

// deleteTenantRows deletes the tenant's rows from every table, children
// first, in small batches. The guard lets these deletes through (and only
// these) by the switchyard.bypass setting.
func deleteTenantRows(ctx context.Context, db *sqlx.DB, tables []Table, keyColumn, tenant string) (int64, error) {
	var total int64
	for i := len(tables) - 1; i >= 0; i-- {
		t := tables[i]
		q := fmt.Sprintf(`DELETE FROM %[1]s WHERE ctid = ANY (ARRAY(SELECT ctid FROM %[1]s WHERE %[2]s = $1 LIMIT %[3]d))`,
			t.Ident(), pq.QuoteIdentifier(keyColumn), deleteBatch)
		for {
			n, err := deleteOnce(ctx, db, q, tenant)
			if err != nil {
				return total, fmt.Errorf("delete %s rows of %s: %w", tenant, t.Key(), err)
			}
			total += n
			if n < deleteBatch {
				break
			}
			if err := retry.Sleep(ctx, deletePause); err != nil {
				return total, err
			}
		}
	}
	return total, nil
}

func deleteOnce(ctx context.Context, db *sqlx.DB, q, tenant string) (int64, error) {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT set_config('switchyard.bypass', $1, true)`, tenant); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, q, tenant)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return n, tx.Commit()
}

// cleanupSource ends the retention window: the fenced source copy goes
// (its own database for a dedicated-db source, its rows otherwise), then the
// guard, then the switchyard schema if nothing else uses it.
func (r *run) cleanupSource(ctx context.Context) error {
	log := r.mg.log.With("move", r.m.ID, "tenant", r.m.Tenant)
	// Never delete the copy the tenant is served from (it may have been
	// moved back onto this source since).
	if t, err := r.mg.catalog.GetTenant(ctx, r.m.Tenant); err != nil && !errors.Is(err, catalog.ErrNotFound) {
		return err
	} else if err == nil && t.Target == r.m.From {
		log.Info("the tenant lives on this move's source again: nothing to clean up")
		return nil
	}
	// (An offboarded tenant is no longer in the catalog: its retained copy
	// goes all the same.)
	if r.from.Tier == catalog.TierDedicatedDB {
		r.src.Close()
		r.src = nil
		admin, err := openDB(ctx, r.from.DSN)
		if err != nil {
			return fmt.Errorf("source server: %w", err)
		}
		defer admin.Close()
		name := catalog.DatabaseName(r.m.Tenant)
		if _, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+pq.QuoteIdentifier(name)+` WITH (FORCE)`); err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		log.Info("retention over: dropped the source database", "database", name)
		return nil
	}
	n, err := deleteTenantRows(ctx, r.src, r.tables, r.m.Options.KeyColumn, r.m.Tenant)
	if err != nil {
		return err
	}
	if err := removeGuard(ctx, r.src, r.tables, r.m.Tenant); err != nil {
		return err
	}
	if err := dropGuardSchemaIfUnused(ctx, r.src); err != nil {
		return err
	}
	log.Info("retention over: deleted the source copy", "rows", n)
	return nil
}

// abort undoes a move that has not switched: the tenant stays on the source;
// the guard, captured changes and every row copied to the destination go
// (the tenant's own database too, if the move created it for a dedicated-db
// destination).
func (r *run) abort(ctx context.Context) error {
	log := r.mg.log.With("move", r.m.ID, "tenant", r.m.Tenant)
	// The catalog is the truth: a tenant already served from the
	// destination must never lose that copy to an abort.
	if t, err := r.mg.catalog.GetTenant(ctx, r.m.Tenant); err == nil && t.Target == r.m.To && r.m.From != r.m.To {
		if r.m.Phase != PhaseDone {
			r.m.Phase = PhaseRetained
		}
	}
	if r.m.Phase == PhaseRetained || r.m.Phase == PhaseDone {
		r.m.Status = StatusDone
		if r.m.Phase == PhaseRetained {
			r.m.Status = StatusRunning
		}
		_ = r.save(ctx)
		return ErrTooLateToAbort
	}
	var errs []error
	if r.ap != nil {
		r.ap.close() // its target connection would hold the database
		r.ap = nil
	}
	if err := r.open(ctx, false); err != nil {
		return r.mg.pause(ctx, r.m, fmt.Errorf("abort: %w", err))
	}
	if r.m.Phase == PhaseSwitch || r.m.FreezeEpoch != 0 {
		if err := r.rollbackSwitch(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeGuard(ctx, r.src, r.tables, r.m.Tenant); err != nil {
		errs = append(errs, err)
	}
	if err := dropGuardSchemaIfUnused(ctx, r.src); err != nil {
		errs = append(errs, err)
	}
	if r.to.Tier == catalog.TierDedicatedDB {
		if admin, err := openDB(ctx, r.to.DSN); err == nil {
			if r.dst != nil {
				r.dst.Close()
				r.dst = nil
			}
			if _, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+pq.QuoteIdentifier(catalog.DatabaseName(r.m.Tenant))+` WITH (FORCE)`); err != nil {
				errs = append(errs, err)
			}
			admin.Close()
		} else {
			errs = append(errs, err)
		}
	} else if dst, err := openDB(ctx, r.dstDSN); err == nil {
		if _, err := deleteTenantRows(ctx, dst, r.tables, r.m.Options.KeyColumn, r.m.Tenant); err != nil {
			errs = append(errs, err)
		}
		dst.Close()
	} else {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return r.mg.pause(ctx, r.m, fmt.Errorf("abort: %w", err))
	}
	r.m.Phase, r.m.Status, r.m.Error = PhaseAborted, StatusAborted, ""
	log.Info("move aborted; the tenant stays on the source")
	return r.save(ctx)
}

// DeleteTenantData removes an offboarded tenant's data from its target: the
// tenant's own database on a dedicated-db target, its rows (in small
// batches, children first) anywhere else.
func DeleteTenantData(ctx context.Context, target catalog.Target, tenant, keyColumn string) (int64, error) {
	if keyColumn == "" {
		keyColumn = DefaultKeyColumn
	}
	if target.Tier == catalog.TierDedicatedDB {
		admin, err := openDB(ctx, target.DSN)
		if err != nil {
			return 0, err
		}
		defer admin.Close()
		_, err = admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+pq.QuoteIdentifier(catalog.DatabaseName(tenant))+` WITH (FORCE)`)
		return 0, err
	}
	db, err := openDB(ctx, target.DSN)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	tables, err := DiscoverTables(ctx, db, keyColumn)
	if err != nil {
		return 0, err
	}
	return deleteTenantRows(ctx, db, tables, keyColumn, tenant)
}
