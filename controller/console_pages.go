package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
	"github.com/switchyard/switchyard/placement"
)

// Console pages that read: the fleet, tenants, one tenant, the audit log.
// Each reads through the functions the JSON API uses.

// consoleIndex is the tenant index of the controller's watched snapshot
// (503 until the watcher has loaded the catalog).
func (s *Server) consoleIndex(c *gin.Context) (*tenantIndex, bool) {
	select {
	case <-s.watcher.Ready():
	case <-c.Request.Context().Done():
		return nil, false
	case <-time.After(5 * time.Second):
		s.consoleFail(c, http.StatusServiceUnavailable, "unavailable", "the catalog is still loading; retry in a moment")
		return nil, false
	}
	snap := s.watcher.Snapshot()
	return s.console.index.get(snap, snap.Len()), true
}

// capacityBar is one figure of a target against its capacity.
type capacityBar struct {
	Label string
	Text  string
	Pct   int
	Width float64
	Full  bool
}

func newBar(label string, used, capacity float64, unit func(float64) string) capacityBar {
	b := capacityBar{Label: label, Text: unit(used)}
	if capacity <= 0 {
		b.Text += " (no capacity set)"
		return b
	}
	f := used / capacity
	b.Pct, b.Width, b.Full = int(f*100+0.5), min(f*100, 100), f >= 1
	b.Text += " of " + unit(capacity)
	return b
}

func count(v float64) string { return fmt.Sprintf("%.0f", v) }
func rate(v float64) string  { return fmt.Sprintf("%.1f/s", v) }
func size(v float64) string {
	units := []string{"B", "KB", "MB", "GB", "TB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v, i = v/1024, i+1
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

type fleetTarget struct {
	ID                 string
	Cordoned, Draining bool
	Bars               []capacityBar
}

type fleetTier struct {
	Tier    catalog.Tier
	Tenants int
	Targets []fleetTarget
}

func (s *Server) fleetPage(c *gin.Context) {
	ctx := c.Request.Context()
	ix, ok := s.consoleIndex(c)
	if !ok {
		return
	}
	loads, err := s.targetLoads(ctx)
	if err != nil {
		s.consoleErr(c, err)
		return
	}
	moves, err := s.migrator.List(ctx)
	if err != nil {
		s.consoleErr(c, err)
		return
	}
	draining := map[string]bool{}
	for _, m := range moves {
		if !m.Terminal() && m.Phase != migrator.PhaseRetained {
			draining[m.From] = true
		}
	}
	sort.Slice(loads, func(i, j int) bool { return loads[i].Target.ID < loads[j].Target.ID })
	tiers := []*fleetTier{}
	for _, t := range indexTiers {
		ft := &fleetTier{Tier: t, Tenants: ix.perTier[t]}
		for _, l := range loads {
			if l.Target.Tier != t {
				continue
			}
			cp := l.Target.Capacity
			ft.Targets = append(ft.Targets, fleetTarget{ID: l.Target.ID, Cordoned: l.Target.Cordoned, Draining: l.Target.Cordoned && draining[l.Target.ID],
				Bars: []capacityBar{newBar(l.Target.ID+" tenants", float64(l.Tenants), float64(cp.Tenants), count),
					newBar(l.Target.ID+" bytes", float64(l.Bytes), float64(cp.Bytes), size), newBar(l.Target.ID+" requests per second", l.RPS, cp.RPS, rate)}})
		}
		tiers = append(tiers, ft)
	}
	s.render(c, http.StatusOK, "fleet", "fleet", map[string]any{"Tiers": tiers, "Total": len(ix.rows), "AsOf": when(ix.built)})
}

// consoleErr answers a domain error with the status the API gives it.
func (s *Server) consoleErr(c *gin.Context, err error) {
	if !wantsHTML(c) {
		failErr(c, err)
		return
	}
	status, code, msg := errStatus(err)
	if status == http.StatusServiceUnavailable {
		c.Error(err) //nolint:errcheck // logged by the access log
	}
	s.consoleFail(c, status, code, msg)
}

// Page size of the tenant list.
const tenantsPerPage = 50

// labelScanMax bounds the full records one tenants page reads to filter by
// label (labels are not in the snapshot): past it the page ends early with
// a cursor to go on from.
const labelScanMax = 400

func tenantQueryOf(c *gin.Context) tenantQuery {
	return tenantQuery{Prefix: strings.TrimSpace(c.Query("q")), Plan: c.Query("plan"), Tier: c.Query("tier"), Target: c.Query("target"),
		State: c.Query("state"), Label: strings.TrimSpace(c.Query("label")), After: c.Query("after"), Limit: tenantsPerPage}
}

func (q tenantQuery) url(after string) string {
	v := url.Values{}
	for k, x := range map[string]string{"q": q.Prefix, "plan": q.Plan, "tier": q.Tier, "target": q.Target, "state": q.State, "label": q.Label, "after": after} {
		if x != "" {
			v.Set(k, x)
		}
	}
	return "/ui/tenants?" + v.Encode()
}

func (s *Server) tenantsPage(c *gin.Context) {
	start := time.Now()
	q := tenantQueryOf(c)
	if q.Tier != "" && !catalog.Tier(q.Tier).Valid() || q.State != "" && !catalog.State(q.State).Valid() {
		s.consoleFail(c, http.StatusBadRequest, "invalid", "tier or state is not one the catalog knows")
		return
	}
	key, val, hasLabel := strings.Cut(q.Label, "=")
	if q.Label != "" && (!hasLabel || key == "") {
		s.consoleFail(c, http.StatusBadRequest, "invalid", `label filter must be key=value`)
		return
	}
	ix, ok := s.consoleIndex(c)
	if !ok {
		return
	}
	var rows []tenantRow
	var next, note string
	if q.Label == "" {
		rows, next = ix.page(q)
	} else {
		var err error
		if rows, next, note, err = s.labelPage(c.Request.Context(), ix, q, key, val); err != nil {
			s.consoleErr(c, err)
			return
		}
	}
	data := map[string]any{"Q": q, "Rows": rows, "Plans": ix.plans, "Tiers": ix.tiers, "States": ix.states, "Targets": sortedCopy(ix.targets),
		"Note": note, "FirstURL": q.url(""), "IndexAge": when(ix.built), "Took": time.Since(start).Round(time.Microsecond).String()}
	if next != "" {
		data["NextURL"] = q.url(next)
	}
	s.render(c, http.StatusOK, "tenants", "tenants", data)
}

func sortedCopy(in []string) []string {
	out := append([]string(nil), in...)
	sort.Strings(out)
	return out
}

// labelPage filters the index's matches by a label, reading their full
// records, at most labelScanMax of them per page: past that the page ends
// early, its cursor the last tenant read.
func (s *Server) labelPage(ctx context.Context, ix *tenantIndex, q tenantQuery, key, val string) ([]tenantRow, string, string, error) {
	var rows []tenantRow
	var next, note, lastRead string
	var err error
	read := 0
	ix.scan(q, func(r *indexRow) bool {
		if len(rows) == q.Limit {
			next = rows[len(rows)-1].ID
			return false
		}
		if read == labelScanMax {
			next = lastRead
			note = fmt.Sprintf("Filtering by label reads each tenant's record: this page stopped after reading %d; the next page goes on from there.", labelScanMax)
			return false
		}
		read, lastRead = read+1, r.id
		var t catalog.Tenant
		if t, err = s.store.GetTenant(ctx, r.id); errors.Is(err, catalog.ErrNotFound) {
			err = nil
			return true // removed since the snapshot
		}
		if err != nil {
			return false
		}
		if v, ok := t.Labels[key]; ok && v == val {
			rows = append(rows, ix.row(r))
		}
		return true
	})
	return rows, next, note, err
}

func (s *Server) tenantPage(c *gin.Context) {
	ctx := c.Request.Context()
	t, err := s.store.GetTenant(ctx, c.Param("id"))
	if err != nil {
		s.consoleErr(c, err)
		return
	}
	moves, err := s.migrator.List(ctx)
	if err != nil {
		s.consoleErr(c, err)
		return
	}
	mine := []*migrator.Move{}
	for _, m := range moves {
		if m.Tenant == t.ID {
			mine = append(mine, m)
		}
	}
	sort.Slice(mine, func(i, j int) bool { return mine[i].Created.After(mine[j].Created) })
	audit, err := s.auditEntries(ctx, auditFilter{Tenant: t.ID}, 50)
	if err != nil {
		s.consoleErr(c, err)
		return
	}
	domains, err := s.store.ListDomains(ctx, t.ID)
	if err != nil {
		s.consoleErr(c, err)
		return
	}
	data := map[string]any{"Tenant": t, "Moves": mine, "Audit": audit, "Plans": s.planChoices(ctx), "Domains": domains}
	s.addBackups(ctx, c, t.ID, data)
	if u, err := s.usageTotal(c, t.ID, 24*time.Hour); err != nil {
		data["UsageError"] = "usage could not be read: " + err.Error()
	} else {
		data["Usage"] = u
	}
	s.render(c, http.StatusOK, "tenant", "tenants", data)
}

// planChoice is a plan and the tier it places a tenant in.
type planChoice struct {
	Name string
	Tier catalog.Tier
}

func (s *Server) planChoices(ctx context.Context) []planChoice {
	policy, err := s.store.Policy(ctx)
	if err != nil {
		return nil
	}
	var out []planChoice
	for name := range policy.Tiers {
		if tier, err := placement.TierFor(policy, name); err == nil {
			out = append(out, planChoice{Name: name, Tier: tier})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// usageTotal is a tenant's usage over the last d, whole minutes (what
// GET /v1/tenants/{id}/usage sums).
func (s *Server) usageTotal(c *gin.Context, id string, d time.Duration) (usagePoint, error) {
	to := time.Now().UTC().Truncate(time.Minute)
	r := usageRange{From: to.Add(-d), To: to, Step: d}
	all, err := s.collectUsage(c, r, id)
	if err != nil {
		return usagePoint{}, err
	}
	var total catalog.UsageCounts
	for _, u := range all[id] {
		total.Add(u)
	}
	return newUsagePoint(r.From, r.To, total), nil
}

func (s *Server) auditPage(c *gin.Context) {
	f := auditFilter{Tenant: c.Query("tenant"), Action: c.Query("action"), Actor: c.Query("actor"), Move: c.Query("move")}
	entries, err := s.auditEntries(c.Request.Context(), f, 200)
	if err != nil {
		s.consoleErr(c, err)
		return
	}
	s.render(c, http.StatusOK, "audit", "audit", map[string]any{"F": f, "Entries": entries})
}
