package migrator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/switchyard/switchyard/internal/retry"
)

// Change capture and the write fence live in the source database, in a
// schema of their own:
//
//   - switchyard.changes: the primary key of every row of the moving tenant
//     written since capture started (the row itself is re-read when applied,
//     so replays are harmless and commit order does not matter);
//   - switchyard.fences: tenants whose writes this database must refuse;
//   - switchyard.guard(): the BEFORE ROW trigger function. It takes a shared
//     per-tenant advisory lock, refuses the write if the tenant is fenced, and
//     records the key. Fencing inserts the fence row and then takes the same
//     lock exclusively, so it waits for every transaction that got past the
//     check before the fence committed: those are drained, later ones refused.
//
// Triggers are per tenant (WHEN clauses in C, so other tenants of a shared
// pool pay almost nothing) and refuse TRUNCATE outright while installed.
const guardSQL = `
CREATE SCHEMA IF NOT EXISTS switchyard;
CREATE TABLE IF NOT EXISTS switchyard.changes (
	id bigserial PRIMARY KEY,
	tenant_id text NOT NULL,
	tbl text NOT NULL,
	pk jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_tenant_id ON switchyard.changes (tenant_id, id);
CREATE TABLE IF NOT EXISTS switchyard.fences (
	tenant_id text PRIMARY KEY,
	move_id text NOT NULL,
	fenced_at timestamptz NOT NULL DEFAULT now()
);
CREATE SEQUENCE IF NOT EXISTS switchyard.fence_gen;
CREATE TABLE IF NOT EXISTS switchyard.fence_state (one boolean PRIMARY KEY DEFAULT true CHECK (one), gen bigint NOT NULL);
INSERT INTO switchyard.fence_state (gen) SELECT nextval('switchyard.fence_gen') WHERE NOT EXISTS (SELECT 1 FROM switchyard.fence_state);
CREATE OR REPLACE FUNCTION switchyard.guard() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
	tenant text := TG_ARGV[0];
	capture boolean := TG_ARGV[1] = 'capture';
	keys text[] := TG_ARGV[2:];
	k text;
	newpk jsonb;
	oldpk jsonb;
BEGIN
	PERFORM pg_advisory_xact_lock_shared(hashtext('switchyard:' || tenant));
	-- A REPEATABLE READ or SERIALIZABLE snapshot may predate a fence it
	-- cannot see. The sequence is not transactional: if a fence changed
	-- since this snapshot, ask the client to retry (40001).
	IF current_setting('transaction_isolation') <> 'read committed'
		AND (SELECT last_value FROM switchyard.fence_gen) <> (SELECT gen FROM switchyard.fence_state) THEN
		RAISE EXCEPTION 'switchyard: a fence changed during this transaction; retry it'
			USING ERRCODE = '40001';
	END IF;
	IF current_setting('switchyard.bypass', true) = tenant THEN
		-- Switchyard itself: the retention cleanup deleting a fenced copy,
		-- or a quick move back re-syncing a retained copy.
		IF TG_OP = 'DELETE' THEN
			RETURN OLD;
		END IF;
		RETURN NEW;
	END IF;
	IF EXISTS (SELECT 1 FROM switchyard.fences f WHERE f.tenant_id = tenant) THEN
		RAISE EXCEPTION 'switchyard: tenant % is fenced on this database (moved or moving); retry through the router', tenant
			USING ERRCODE = 'P0001';
	END IF;
	IF capture THEN
		IF TG_OP <> 'DELETE' THEN
			newpk := '{}'::jsonb;
			FOREACH k IN ARRAY keys LOOP
				newpk := newpk || jsonb_build_object(k, to_jsonb(NEW) -> k);
			END LOOP;
			INSERT INTO switchyard.changes (tenant_id, tbl, pk) VALUES (tenant, TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, newpk);
		END IF;
		IF TG_OP <> 'INSERT' THEN
			oldpk := '{}'::jsonb;
			FOREACH k IN ARRAY keys LOOP
				oldpk := oldpk || jsonb_build_object(k, to_jsonb(OLD) -> k);
			END LOOP;
			IF newpk IS NULL OR oldpk <> newpk THEN
				INSERT INTO switchyard.changes (tenant_id, tbl, pk) VALUES (tenant, TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, oldpk);
			END IF;
		END IF;
	END IF;
	IF TG_OP = 'DELETE' THEN
		RETURN OLD;
	END IF;
	RETURN NEW;
END
$fn$;
CREATE OR REPLACE FUNCTION switchyard.no_truncate() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
	RAISE EXCEPTION 'switchyard: TRUNCATE of %.% refused while tenant % is moving or retained', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0]
		USING ERRCODE = 'P0001';
END
$fn$;
`

// triggerBase names a tenant's triggers: short, and stable per tenant.
func triggerBase(tenant string) string {
	h := sha256.Sum256([]byte(tenant))
	return "switchyard_" + hex.EncodeToString(h[:6])
}

func advisoryKey(tenant string) string {
	return "hashtext(" + pq.QuoteLiteral("switchyard:"+tenant) + ")"
}

// installGuard creates the guard triggers for tenant on every table, in
// mode "capture" (fence check + change capture) or "fence" (check only).
func installGuard(ctx context.Context, db *sqlx.DB, tables []Table, keyColumn, tenant, mode string) error {
	return retryDDL(ctx, func() error { return installGuardOnce(ctx, db, tables, keyColumn, tenant, mode) })
}

// retryDDL retries guard DDL that lost a deadlock or timed out on a lock
// (writers and other moves' DDL on the same tables): PostgreSQL aborts one
// side, and trying again is the cure.
func retryDDL(ctx context.Context, f func() error) error {
	var err error
	for attempt := 0; attempt < 6; attempt++ {
		err = f()
		var pqErr *pq.Error
		// 40P01 deadlock, 55P03 lock timeout; 42P01/3F000: another move
		// dropped the switchyard schema after this transaction's catalog
		// cache looked (a new transaction sees the truth).
		if err == nil || !errors.As(err, &pqErr) || (pqErr.Code != "40P01" && pqErr.Code != "55P03" && pqErr.Code != "42P01" && pqErr.Code != "3F000") {
			return err
		}
		if serr := retry.Sleep(ctx, time.Duration(50<<attempt)*time.Millisecond); serr != nil {
			return err
		}
	}
	return err
}

func installGuardOnce(ctx context.Context, db *sqlx.DB, tables []Table, keyColumn, tenant, mode string) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("install guard: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL lock_timeout = '5s'`); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('switchyard:ddl'))`); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, guardSQL); err != nil {
		return fmt.Errorf("install guard schema: %w", err)
	}
	base := triggerBase(tenant)
	col := pq.QuoteIdentifier(keyColumn)
	lit := pq.QuoteLiteral(tenant)
	for _, t := range tables {
		args := []string{lit, pq.QuoteLiteral(mode)}
		for _, k := range t.PK {
			args = append(args, pq.QuoteLiteral(k))
		}
		argList := strings.Join(args, ", ")
		stmts := []string{
			fmt.Sprintf(`DROP TRIGGER IF EXISTS %s ON %s`, pq.QuoteIdentifier(base+"_i"), t.Ident()),
			fmt.Sprintf(`DROP TRIGGER IF EXISTS %s ON %s`, pq.QuoteIdentifier(base+"_u"), t.Ident()),
			fmt.Sprintf(`DROP TRIGGER IF EXISTS %s ON %s`, pq.QuoteIdentifier(base+"_d"), t.Ident()),
			fmt.Sprintf(`DROP TRIGGER IF EXISTS %s ON %s`, pq.QuoteIdentifier(base+"_t"), t.Ident()),
			fmt.Sprintf(`CREATE TRIGGER %s BEFORE INSERT ON %s FOR EACH ROW WHEN (NEW.%s = %s) EXECUTE FUNCTION switchyard.guard(%s)`,
				pq.QuoteIdentifier(base+"_i"), t.Ident(), col, lit, argList),
			fmt.Sprintf(`CREATE TRIGGER %s BEFORE UPDATE ON %s FOR EACH ROW WHEN (OLD.%s = %s OR NEW.%s = %s) EXECUTE FUNCTION switchyard.guard(%s)`,
				pq.QuoteIdentifier(base+"_u"), t.Ident(), col, lit, col, lit, argList),
			fmt.Sprintf(`CREATE TRIGGER %s BEFORE DELETE ON %s FOR EACH ROW WHEN (OLD.%s = %s) EXECUTE FUNCTION switchyard.guard(%s)`,
				pq.QuoteIdentifier(base+"_d"), t.Ident(), col, lit, argList),
			fmt.Sprintf(`CREATE TRIGGER %s BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION switchyard.no_truncate(%s)`,
				pq.QuoteIdentifier(base+"_t"), t.Ident(), lit),
		}
		for _, s := range stmts {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				return fmt.Errorf("install guard on %s: %w", t.Key(), err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("install guard: %w", err)
	}
	return nil
}

// removeGuard drops the tenant's triggers, fence and pending changes. It is
// harmless where none exist.
func removeGuard(ctx context.Context, db *sqlx.DB, tables []Table, tenant string) error {
	return retryDDL(ctx, func() error { return removeGuardOnce(ctx, db, tables, tenant) })
}

func removeGuardOnce(ctx context.Context, db *sqlx.DB, tables []Table, tenant string) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("remove guard: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL lock_timeout = '5s'`); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('switchyard:ddl'))`); err != nil {
		return err
	}
	base := triggerBase(tenant)
	for _, t := range tables {
		for _, suffix := range []string{"_i", "_u", "_d", "_t"} {
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(`DROP TRIGGER IF EXISTS %s ON %s`, pq.QuoteIdentifier(base+suffix), t.Ident())); err != nil {
				return fmt.Errorf("remove guard on %s: %w", t.Key(), err)
			}
		}
	}
	var exists bool
	if err := tx.GetContext(ctx, &exists, `SELECT to_regclass('switchyard.changes') IS NOT NULL`); err != nil {
		return err
	}
	if exists {
		if _, err := tx.ExecContext(ctx, `DELETE FROM switchyard.changes WHERE tenant_id = $1`, tenant); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM switchyard.fences WHERE tenant_id = $1`, tenant); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE switchyard.fence_state SET gen = nextval('switchyard.fence_gen')`); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("remove guard: %w", err)
	}
	return nil
}

// fence makes the database refuse every write of the tenant, then waits for
// the transactions that passed the guard before the fence to finish.
func fence(ctx context.Context, db *sqlx.DB, tenant, moveID string) error {
	err := changeFence(ctx, db, `INSERT INTO switchyard.fences (tenant_id, move_id) VALUES ($1, $2) ON CONFLICT (tenant_id) DO NOTHING`, tenant, moveID)
	if err != nil {
		return fmt.Errorf("fence: %w", err)
	}
	return drainWriters(ctx, db, tenant)
}

// changeFence runs one change of the fences table together with a new fence
// generation, which REPEATABLE READ writers compare against.
func changeFence(ctx context.Context, db *sqlx.DB, stmt string, args ...any) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, stmt, args...); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE switchyard.fence_state SET gen = nextval('switchyard.fence_gen')`); err != nil {
		return err
	}
	return tx.Commit()
}

// drainWriters waits until no transaction holds the tenant's guard lock.
func drainWriters(ctx context.Context, db *sqlx.DB, tenant string) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("drain writers: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(`+advisoryKey(tenant)+`)`); err != nil {
		return fmt.Errorf("drain writers: %w", err)
	}
	return tx.Commit()
}

// unfence lets the database take the tenant's writes again.
func unfence(ctx context.Context, db *sqlx.DB, tenant string) error {
	var exists bool
	if err := db.GetContext(ctx, &exists, `SELECT to_regclass('switchyard.fences') IS NOT NULL`); err != nil {
		return fmt.Errorf("unfence: %w", err)
	}
	if !exists {
		return nil
	}
	if err := changeFence(ctx, db, `DELETE FROM switchyard.fences WHERE tenant_id = $1`, tenant); err != nil {
		return fmt.Errorf("unfence: %w", err)
	}
	return nil
}

// dropGuardSchemaIfUnused removes the switchyard schema once no tenant's
// guard, change or fence is left in the database.
func dropGuardSchemaIfUnused(ctx context.Context, db *sqlx.DB) error {
	return retryDDL(ctx, func() error { return dropGuardSchemaOnce(ctx, db) })
}

func dropGuardSchemaOnce(ctx context.Context, db *sqlx.DB) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('switchyard:ddl'))`); err != nil {
		return err
	}
	var exists bool
	if err := tx.GetContext(ctx, &exists, `SELECT to_regclass('switchyard.changes') IS NOT NULL`); err != nil || !exists {
		return err
	}
	var inUse bool
	if err := tx.GetContext(ctx, &inUse, `SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname LIKE 'switchyard\_%')
		OR EXISTS (SELECT 1 FROM switchyard.changes) OR EXISTS (SELECT 1 FROM switchyard.fences)`); err != nil {
		return err
	}
	if inUse {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `DROP SCHEMA switchyard CASCADE`); err != nil {
		return fmt.Errorf("drop switchyard schema: %w", err)
	}
	return tx.Commit()
}
