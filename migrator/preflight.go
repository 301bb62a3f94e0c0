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
	"github.com/switchyard/switchyard/placement"
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

	// refusal is the residency check's *placement.ResidencyError, if it failed.
	refusal error
}

// Err is the error of a failed preflight: it wraps ErrPreflight, and also
// placement.ErrResidency (with the *placement.ResidencyError) when the
// destination is outside the tenant's residency.
func (p *PreflightReport) Err() error {
	if p.refusal == nil {
		return fmt.Errorf("%w: %s", ErrPreflight, p.Summary())
	}
	if others := p.summary(residencyCheck); others != "" {
		return fmt.Errorf("%w: %w; %s", ErrPreflight, p.refusal, others)
	}
	return fmt.Errorf("%w: %w", ErrPreflight, p.refusal)
}

// residencyCheck names the residency check in the report.
const residencyCheck = "residency"

// Summary lists the failing checks.
func (p *PreflightReport) Summary() string { return p.summary("") }

// summary lists the failing checks but the one named skip.
func (p *PreflightReport) summary(skip string) string {
	var out []string
	for _, c := range p.Checks {
		if !c.OK && c.Name != skip {
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
	t, from, to, ok, err := mg.checkPlacement(ctx, rep, req, inMove)
	if err != nil {
		return nil, err
	}
	if !ok {
		return rep, nil
	}
	tables, ok, err := checkSource(ctx, rep, t.ID, from, req.Options.KeyColumn)
	if err != nil {
		return nil, err
	}
	if !ok {
		return rep, nil
	}
	if to.Capacity.Bytes > 0 {
		rep.add("room on destination", rep.Bytes < to.Capacity.Bytes, fmt.Sprintf("tenant data ≈ %d bytes, capacity %d", rep.Bytes, to.Capacity.Bytes), "choose a target with room")
	}
	if ok, err = checkDestination(ctx, rep, t.ID, to, tables, req.Options.KeyColumn, inMove); err != nil {
		return nil, err
	}
	if !ok {
		return rep, nil
	}
	var seqs []string
	for _, tb := range tables {
		seqs = append(seqs, tb.Sequences...)
	}
	rep.add("sequences", true, fmt.Sprintf("%d sequences will be moved past the source's values: %v", len(seqs), seqs), "")
	return rep, nil
}

// checkPlacement checks the tenant, its other moves, and the source and
// destination targets; ok is false when the checks cannot go on.
func (mg *Migrator) checkPlacement(ctx context.Context, rep *PreflightReport, req Request, inMove bool) (t catalog.Tenant, from, to catalog.Target, ok bool, err error) {
	t, err = mg.catalog.GetTenant(ctx, req.Tenant)
	if errors.Is(err, catalog.ErrNotFound) {
		rep.add("tenant", false, fmt.Sprintf("tenant %q is not in the catalog", req.Tenant), "create it first")
		return t, from, to, false, nil
	}
	if err != nil {
		return t, from, to, false, err
	}
	rep.add("tenant", t.State == catalog.StateActive, fmt.Sprintf("tenant %s is %s on %s (%s)", t.ID, t.State, t.Target, t.Tier),
		"wait for the tenant to be active")
	if !inMove {
		active, err := mg.moves.activeMove(ctx, req.Tenant)
		if err != nil {
			return t, from, to, false, err
		}
		rep.add("no other move", active == "", fmt.Sprintf("active move: %q", active), "wait for it, or abort it")
	}
	if from, _, err = mg.catalog.GetTarget(ctx, t.Target); err != nil {
		rep.add("source target", false, err.Error(), "register the tenant's target")
		return t, from, to, false, nil
	}
	if to, _, err = mg.catalog.GetTarget(ctx, req.To); err != nil {
		rep.add("destination target", false, fmt.Sprintf("target %q: %v", req.To, err), "register it with switchyard targets register")
		return t, from, to, false, nil
	}
	if !inMove && !rep.add("destination differs", to.ID != from.ID, fmt.Sprintf("tenant is already on %s", to.ID), "choose another target") {
		return t, from, to, false, nil
	}
	rep.add("destination open", !to.Cordoned || inMove, fmt.Sprintf("target %s cordoned=%v", to.ID, to.Cordoned), "uncordon it or choose another")
	if err := placement.CheckResidency(&t, &to); err != nil {
		// Checked in the move's own preflight too: the residency may have
		// changed since the move was created.
		var re *placement.ResidencyError
		errors.As(err, &re)
		rep.add(residencyCheck, false, re.Reason(), fmt.Sprintf("choose a target whose %s label is one of %s", catalog.RegionLabel, catalog.FormatRegions(t.Residency)))
		rep.refusal = err
		return t, from, to, false, nil
	}
	if !inMove {
		if err := mg.checkRoom(ctx, rep, t, to); err != nil {
			return t, from, to, false, err
		}
	}
	return t, from, to, true, nil
}

// checkRoom checks the destination has room for one more tenant: a
// dedicated cluster serves one (counting moves on their way there), a
// target with a tenant capacity up to it.
func (mg *Migrator) checkRoom(ctx context.Context, rep *PreflightReport, t catalog.Tenant, to catalog.Target) error {
	dedicated := to.Tier == catalog.TierDedicatedCluster
	if !dedicated && to.Capacity.Tenants <= 0 {
		return nil
	}
	tenants, err := mg.catalog.ListTenants(ctx)
	if err != nil {
		return err
	}
	n := 0
	for _, o := range tenants {
		if o.Target == to.ID && (!dedicated || o.ID != t.ID) {
			n++
		}
	}
	if !dedicated {
		rep.add("capacity", n < to.Capacity.Tenants, fmt.Sprintf("%d of %d tenants on %s", n, to.Capacity.Tenants, to.ID), "raise its capacity or choose another target")
		return nil
	}
	moves, err := mg.moves.list(ctx)
	if err != nil {
		return err
	}
	for _, m := range moves {
		if m.To == to.ID && m.Tenant != t.ID && m.Phase != PhaseRetained && !m.Terminal() {
			n++ // another move is on its way there
		}
	}
	rep.add("dedicated cluster free", n == 0, fmt.Sprintf("%d other tenants on %s", n, to.ID), "a dedicated cluster serves one tenant: choose a free one")
	return nil
}

// checkSource checks the source is reachable and its tenant tables can be
// moved, and sizes the tenant's data; ok is false when the checks cannot
// go on.
func checkSource(ctx context.Context, rep *PreflightReport, tenant string, from catalog.Target, key string) ([]Table, bool, error) {
	srcDSN, _ := from.DSNFor(tenant)
	src, err := openDB(ctx, srcDSN)
	if !rep.add("source reachable", err == nil, fmt.Sprintf("%s: %v", redact(srcDSN), err), "check the source database is up") {
		return nil, false, nil
	}
	defer src.Close()
	tables, err := DiscoverTables(ctx, src, key)
	if err != nil {
		rep.add("tenant tables", false, err.Error(), "")
		return nil, false, nil
	}
	if !rep.add("tenant tables", len(tables) > 0, fmt.Sprintf("%d tables carry %s", len(tables), key), "tenant tables must have the key column "+key) {
		return nil, false, nil
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
		if err := src.QueryRowContext(ctx, fmt.Sprintf(`SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0) FROM %s t WHERE %s = $1`, tb.Ident(), quoteIdents([]string{key})), tenant).Scan(&rows, &bytes); err != nil {
			return nil, false, fmt.Errorf("size of %s: %w", tb.Key(), err)
		}
		rep.Rows += rows
		rep.Bytes += bytes
	}
	return tables, true, nil
}

// checkDestination checks the destination is reachable, and either
// without the tables (they will be created) or with the same shape and
// none of the tenant's rows (or a retained copy of them, re-synced by
// difference); ok is false when the checks cannot go on.
func checkDestination(ctx context.Context, rep *PreflightReport, tenant string, to catalog.Target, tables []Table, key string, inMove bool) (bool, error) {
	dstDSN, _ := to.DSNFor(tenant)
	serverDSN := to.DSN
	dst, err := openDB(ctx, serverDSN)
	if !rep.add("destination reachable", err == nil, fmt.Sprintf("%s: %v", redact(serverDSN), err), "check the destination database is up") {
		return false, nil
	}
	dst.Close()
	if dst, err = openDB(ctx, dstDSN); err != nil {
		rep.add("destination schema", true, "database "+catalog.DatabaseName(tenant)+" will be created", "")
		return true, nil
	}
	defer dst.Close()
	dtables, err := DiscoverTables(ctx, dst, key)
	if err != nil {
		return false, err
	}
	if len(dtables) == 0 {
		rep.add("destination schema", true, "tenant tables will be created from the source's schema", "")
		return true, nil
	}
	if err := SameShape(tables, dtables); err != nil {
		rep.add("destination schema", false, err.Error(), "make the destination's tenant tables match the source's")
	} else {
		rep.add("destination schema", true, "tenant tables match", "")
	}
	retained := retainedBy(ctx, dst, tenant)
	if retained != "" {
		rep.add("destination copy", true, "a retained copy from move "+retained+" is there: it will be re-synced by difference (quick move back)", "")
	}
	if inMove || retained != "" {
		return true, nil
	}
	for _, tb := range dtables {
		var n int64
		if err := dst.GetContext(ctx, &n, fmt.Sprintf(`SELECT count(*) FROM %s WHERE %s = $1`, tb.Ident(), quoteIdents([]string{key})), tenant); err != nil {
			return false, err
		}
		rep.add("destination empty "+tb.Key(), n == 0, fmt.Sprintf("%d rows of %s already there", n, tenant),
			"a retained copy from an earlier move? wait for its cleanup, or delete those rows")
	}
	return true, nil
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

// RedactDSN hides a DSN's password, for logs and errors.
func RedactDSN(dsn string) string { return redact(dsn) }

// redact hides a DSN's password.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable dsn)"
	}
	return u.Redacted()
}
