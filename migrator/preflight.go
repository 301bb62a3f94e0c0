package migrator

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/switchyard/switchyard/catalog"
)

// Check is one preflight finding.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	// Fix says how to make a failing check pass.
	Fix string `json:"fix,omitempty"`
}

// PreflightReport is what a dry run returns. A failing preflight changes
// nothing.
type PreflightReport struct {
	OK     bool    `json:"ok"`
	Checks []Check `json:"checks"`
	// Tables are the tenant tables in copy order.
	Tables []string `json:"tables,omitempty"`
	// Rows and Bytes estimate the tenant's data on the source.
	Rows  int64 `json:"rows"`
	Bytes int64 `json:"bytes"`
}

// Summary lists the failing checks.
func (p *PreflightReport) Summary() string {
	var out []string
	for _, c := range p.Checks {
		if !c.OK {
			s := c.Name + ": " + c.Detail
			if c.Fix != "" {
				s += " (fix: " + c.Fix + ")"
			}
			out = append(out, s)
		}
	}
	return strings.Join(out, "; ")
}

func (p *PreflightReport) add(name string, ok bool, detail, fix string) bool {
	p.Checks = append(p.Checks, Check{Name: name, OK: ok, Detail: detail, Fix: fix})
	if !ok {
		p.OK = false
	}
	return ok
}

// Preflight checks a move without changing anything (the dry run).
func (mg *Migrator) Preflight(ctx context.Context, req Request) (*PreflightReport, error) {
	req.Options.setDefaults()
	if err := req.Options.Validate(); err != nil {
		return nil, err
	}
	return mg.preflight(ctx, req, false)
}

// preflight runs the checks; inMove is true when the move itself runs them
// (its own active marker then does not count against it).
func (mg *Migrator) preflight(ctx context.Context, req Request, inMove bool) (*PreflightReport, error) {
	rep := &PreflightReport{OK: true}
	key := req.Options.KeyColumn
	t, err := mg.catalog.GetTenant(ctx, req.Tenant)
	if errors.Is(err, catalog.ErrNotFound) {
		rep.add("tenant", false, fmt.Sprintf("tenant %q is not in the catalog", req.Tenant), "create it first")
		return rep, nil
	}
	if err != nil {
		return nil, err
	}
	rep.add("tenant", t.State == catalog.StateActive, fmt.Sprintf("tenant %s is %s on %s (%s)", t.ID, t.State, t.Target, t.Tier),
		"wait for the tenant to be active")
	if !inMove {
		active, err := mg.moves.activeMove(ctx, req.Tenant)
		if err != nil {
			return nil, err
		}
		rep.add("no other move", active == "", fmt.Sprintf("active move: %q", active), "wait for it, or abort it")
	}
	from, _, err := mg.catalog.GetTarget(ctx, t.Target)
	if err != nil {
		rep.add("source target", false, err.Error(), "register the tenant's target")
		return rep, nil
	}
	to, _, err := mg.catalog.GetTarget(ctx, req.To)
	if err != nil {
		rep.add("destination target", false, fmt.Sprintf("target %q: %v", req.To, err), "register it with switchyard targets register")
		return rep, nil
	}
	if !inMove && !rep.add("destination differs", to.ID != from.ID, fmt.Sprintf("tenant is already on %s", to.ID), "choose another target") {
		return rep, nil
	}
	rep.add("destination open", !to.Cordoned || inMove, fmt.Sprintf("target %s cordoned=%v", to.ID, to.Cordoned), "uncordon it or choose another")
	if to.Tier == catalog.TierDedicatedCluster && !inMove {
		tenants, err := mg.catalog.ListTenants(ctx)
		if err != nil {
			return nil, err
		}
		n := 0
		for _, o := range tenants {
			if o.Target == to.ID && o.ID != t.ID {
				n++
			}
		}
		moves, err := mg.moves.list(ctx)
		if err != nil {
			return nil, err
		}
		for _, m := range moves {
			if m.To == to.ID && m.Tenant != t.ID && m.Phase != PhaseRetained && !m.Terminal() {
				n++ // another move is on its way there
			}
		}
		rep.add("dedicated cluster free", n == 0, fmt.Sprintf("%d other tenants on %s", n, to.ID), "a dedicated cluster serves one tenant: choose a free one")
	} else if to.Capacity.Tenants > 0 && !inMove {
		tenants, err := mg.catalog.ListTenants(ctx)
		if err != nil {
			return nil, err
		}
		n := 0
		for _, o := range tenants {
			if o.Target == to.ID {
				n++
			}
		}
		rep.add("capacity", n < to.Capacity.Tenants, fmt.Sprintf("%d of %d tenants on %s", n, to.Capacity.Tenants, to.ID), "raise its capacity or choose another target")
	}

	srcDSN, _ := from.DSNFor(t.ID)
	src, err := openDB(ctx, srcDSN)
	if !rep.add("source reachable", err == nil, fmt.Sprintf("%s: %v", redact(srcDSN), err), "check the source database is up") {
		return rep, nil
	}
	defer src.Close()
	tables, err := DiscoverTables(ctx, src, key)
	if err != nil {
		rep.add("tenant tables", false, err.Error(), "")
		return rep, nil
	}
	if !rep.add("tenant tables", len(tables) > 0, fmt.Sprintf("%d tables carry %s", len(tables), key), "tenant tables must have the key column "+key) {
		return rep, nil
	}
	for _, tb := range tables {
		rep.Tables = append(rep.Tables, tb.Key())
		if !rep.add("primary key "+tb.Key(), len(tb.PK) > 0, fmt.Sprintf("primary key %v", tb.PK),
			fmt.Sprintf("ALTER TABLE %s ADD PRIMARY KEY (...)", tb.Ident())) {
			continue
		}
		rep.add("tenant key in primary key "+tb.Key(), slices.Contains(tb.PK, key), fmt.Sprintf("primary key %v", tb.PK),
			fmt.Sprintf("make %s part of the primary key of %s, so rows of different tenants can never collide on the target", key, tb.Ident()))
		var rows, bytes int64
		if err := src.QueryRowContext(ctx, fmt.Sprintf(`SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0) FROM %s t WHERE %s = $1`, tb.Ident(), quoteIdents([]string{key})), t.ID).Scan(&rows, &bytes); err != nil {
			return nil, fmt.Errorf("size of %s: %w", tb.Key(), err)
		}
		rep.Rows += rows
		rep.Bytes += bytes
	}
	if to.Capacity.Bytes > 0 {
		rep.add("room on destination", rep.Bytes < to.Capacity.Bytes, fmt.Sprintf("tenant data ≈ %d bytes, capacity %d", rep.Bytes, to.Capacity.Bytes), "choose a target with room")
	}

	// The destination: reachable, and either without the tables (they will
	// be created) or with the same shape and none of the tenant's rows.
	dstDSN, _ := to.DSNFor(t.ID)
	serverDSN := to.DSN
	dst, err := openDB(ctx, serverDSN)
	if !rep.add("destination reachable", err == nil, fmt.Sprintf("%s: %v", redact(serverDSN), err), "check the destination database is up") {
		return rep, nil
	}
	dst.Close()
	if dst, err = openDB(ctx, dstDSN); err == nil {
		defer dst.Close()
		dtables, err := DiscoverTables(ctx, dst, key)
		if err != nil {
			return nil, err
		}
		if len(dtables) > 0 {
			if err := sameShape(tables, dtables); err != nil {
				rep.add("destination schema", false, err.Error(), "make the destination's tenant tables match the source's")
			} else {
				rep.add("destination schema", true, "tenant tables match", "")
			}
			retained := retainedBy(ctx, dst, t.ID)
			if retained != "" {
				rep.add("destination copy", true, "a retained copy from move "+retained+" is there: it will be re-synced by difference (quick move back)", "")
			}
			if !inMove && retained == "" {
				for _, tb := range dtables {
					var n int64
					if err := dst.GetContext(ctx, &n, fmt.Sprintf(`SELECT count(*) FROM %s WHERE %s = $1`, tb.Ident(), quoteIdents([]string{key})), t.ID); err != nil {
						return nil, err
					}
					rep.add("destination empty "+tb.Key(), n == 0, fmt.Sprintf("%d rows of %s already there", n, t.ID),
						"a retained copy from an earlier move? wait for its cleanup, or delete those rows")
				}
			}
		} else {
			rep.add("destination schema", true, "tenant tables will be created from the source's schema", "")
		}
	} else {
		rep.add("destination schema", true, "database "+catalog.DatabaseName(t.ID)+" will be created", "")
	}
	var seqs []string
	for _, tb := range tables {
		seqs = append(seqs, tb.Sequences...)
	}
	rep.add("sequences", true, fmt.Sprintf("%d sequences will be moved past the source's values: %v", len(seqs), seqs), "")
	return rep, nil
}

// retainedBy returns the id of the move whose fenced copy of the tenant
// the database keeps, or "".
func retainedBy(ctx context.Context, db *sqlx.DB, tenant string) string {
	var exists bool
	if err := db.GetContext(ctx, &exists, `SELECT to_regclass('switchyard.fences') IS NOT NULL`); err != nil || !exists {
		return ""
	}
	var move string
	_ = db.GetContext(ctx, &move, `SELECT move_id FROM switchyard.fences WHERE tenant_id = $1`, tenant)
	return move
}

// redact hides a DSN's password.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable dsn)"
	}
	return u.Redacted()
}
