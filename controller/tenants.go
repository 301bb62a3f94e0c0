package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
	"github.com/switchyard/switchyard/placement"
)

type createTenantRequest struct {
	ID     string            `json:"id"`
	Plan   string            `json:"plan"`
	Labels map[string]string `json:"labels,omitempty"`
}

type tenantResponse struct {
	Tenant    catalog.Tenant `json:"tenant"`
	Placement string         `json:"placement,omitempty"`
	Move      *migrator.Move `json:"move,omitempty"`
}

// loads gathers what placement needs: every target with its tenant count,
// and every tenant.
func (s *Server) loads(ctx context.Context) ([]placement.TargetLoad, []placement.TenantLoad, error) {
	targets, err := s.store.ListTargets(ctx)
	if err != nil {
		return nil, nil, err
	}
	tenants, err := s.store.ListTenants(ctx)
	if err != nil {
		return nil, nil, err
	}
	size, rps, err := s.tenantFigures(ctx)
	if err != nil {
		return nil, nil, err
	}
	count := map[string]int{}
	bytes := map[string]int64{}
	rate := map[string]float64{}
	var tl []placement.TenantLoad
	for _, t := range tenants {
		count[t.Target]++
		bytes[t.Target] += size[t.ID]
		rate[t.Target] += rps[t.ID]
		tl = append(tl, placement.TenantLoad{Tenant: t, Bytes: size[t.ID], RPS: rps[t.ID]})
	}
	// Moves under way already claim room on their destination.
	moves, err := s.migrator.List(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, m := range moves {
		if m.Phase != migrator.PhaseRetained && !m.Terminal() {
			count[m.To]++
		}
	}
	var out []placement.TargetLoad
	for _, t := range targets {
		out = append(out, placement.TargetLoad{Target: t, Tenants: count[t.ID], Bytes: bytes[t.ID], RPS: rate[t.ID]})
	}
	return out, tl, nil
}

// targetLoads is loads without the tenant list, for placing one tenant:
// counts come from the controller's catalog snapshot (kept current by a
// blocking-query watch) instead of reading every bucket, so it stays cheap
// at a million tenants. Before the snapshot is loaded it falls back to loads.
func (s *Server) targetLoads(ctx context.Context) ([]placement.TargetLoad, error) {
	select {
	case <-s.watcher.Ready():
	default:
		t, _, err := s.loads(ctx)
		return t, err
	}
	targets, err := s.store.ListTargets(ctx)
	if err != nil {
		return nil, err
	}
	size, rps, err := s.tenantFigures(ctx)
	if err != nil {
		return nil, err
	}
	count := map[string]int{}
	bytes := map[string]int64{}
	rate := map[string]float64{}
	s.watcher.Snapshot().Range(func(r catalog.Route) {
		count[r.Target]++
		bytes[r.Target] += size[r.ID]
		rate[r.Target] += rps[r.ID]
	})
	moves, err := s.migrator.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range moves {
		if m.Phase != migrator.PhaseRetained && !m.Terminal() {
			count[m.To]++
		}
	}
	out := make([]placement.TargetLoad, 0, len(targets))
	for _, t := range targets {
		out = append(out, placement.TargetLoad{Target: t, Tenants: count[t.ID], Bytes: bytes[t.ID], RPS: rate[t.ID]})
	}
	return out, nil
}

// choose places a tenant; when no dedicated cluster is free and a
// provisioner is configured, it makes one and places the tenant there.
func (s *Server) choose(ctx context.Context, t catalog.Tenant, tier catalog.Tier, targets []placement.TargetLoad) (placement.Decision, error) {
	d, err := placement.Choose(placement.TenantLoad{Tenant: t}, tier, targets, placement.Config{})
	if err == nil || !errors.Is(err, placement.ErrNoTarget) || tier != catalog.TierDedicatedCluster || s.cfg.ProvisionCluster == nil {
		return d, err
	}
	s.log.Info("no free dedicated cluster: provisioning one", "tenant", t.ID)
	nt, perr := s.cfg.ProvisionCluster(ctx, t.ID)
	if perr != nil {
		return d, fmt.Errorf("%w; provisioning a new cluster failed: %v", err, perr)
	}
	if perr := s.store.CreateTarget(ctx, nt); perr != nil && !errors.Is(perr, catalog.ErrExists) {
		return d, fmt.Errorf("%w; registering the new cluster %s: %v", err, nt.ID, perr)
	}
	s.audit(ctx, auditEntry{Actor: "controller:" + s.cfg.ID, Action: "target.provision", Target: nt.ID, Tenant: t.ID, Detail: "new dedicated cluster"})
	return placement.Decision{Target: nt.ID, Reason: fmt.Sprintf("%s → %s: a dedicated cluster provisioned for it", t.ID, nt.ID)}, nil
}

func (s *Server) createTenant(c *gin.Context) {
	var req createTenantRequest
	if !bindJSON(c, &req) {
		return
	}
	ctx := c.Request.Context()
	if !catalog.ValidID(req.ID) {
		fail(c, http.StatusBadRequest, "invalid", fmt.Sprintf("id %q must be a lowercase DNS label (a-z, 0-9, '-', at most 63)", req.ID))
		return
	}
	policy, err := s.store.Policy(ctx)
	if err != nil {
		failErr(c, err)
		return
	}
	tier, err := placement.TierFor(policy, req.Plan)
	if err != nil {
		failErr(c, err)
		return
	}
	candidate := catalog.Tenant{ID: req.ID, Plan: req.Plan, Tier: tier, Target: "pending", State: catalog.StateActive, Labels: req.Labels}
	if err := candidate.Validate(); err != nil {
		failErr(c, err)
		return
	}
	if _, err := s.store.GetTenant(ctx, req.ID); err == nil {
		fail(c, http.StatusConflict, "exists", fmt.Sprintf("tenant %q already exists", req.ID))
		return
	}
	targets, err := s.targetLoads(ctx)
	if err != nil {
		failErr(c, err)
		return
	}
	decision, err := s.choose(ctx, candidate, tier, targets)
	if err != nil {
		failErr(c, err)
		return
	}
	target, _, err := s.store.GetTarget(ctx, decision.Target)
	if err != nil {
		failErr(c, err)
		return
	}
	if tier == catalog.TierDedicatedDB {
		if err := migrator.CreateTenantDatabase(ctx, target, req.ID); err != nil {
			failErr(c, err)
			return
		}
	}
	candidate.Target = target.ID
	created, err := s.store.CreateTenant(ctx, candidate)
	if err != nil {
		failErr(c, err)
		return
	}
	s.audit(ctx, auditEntry{Actor: actor(c), Action: "tenant.create", Tenant: req.ID, Detail: decision.Reason})
	c.JSON(http.StatusCreated, tenantResponse{Tenant: created, Placement: decision.Reason})
}

func (s *Server) getTenant(c *gin.Context) {
	t, err := s.store.GetTenant(c.Request.Context(), c.Param("id"))
	if err != nil {
		failErr(c, err)
		return
	}
	c.JSON(http.StatusOK, t)
}

func (s *Server) listTenants(c *gin.Context) {
	limit, ok := queryLimit(c, 100, 1000)
	if !ok {
		return
	}
	if v := c.Query("tier"); v != "" && !catalog.Tier(v).Valid() {
		fail(c, http.StatusBadRequest, "invalid", fmt.Sprintf("tier %q is not a tier", v))
		return
	}
	after := c.Query("after")
	select {
	case <-s.watcher.Ready():
		if c.Query("plan") == "" {
			s.listFromSnapshot(c, limit, after)
			return
		}
	default:
	}
	tenants, err := s.store.ListTenants(c.Request.Context())
	if err != nil {
		failErr(c, err)
		return
	}
	sort.Slice(tenants, func(i, j int) bool { return tenants[i].ID < tenants[j].ID })
	out := []catalog.Tenant{}
	next := ""
	for _, t := range tenants {
		if after != "" && t.ID <= after {
			continue
		}
		if (c.Query("tier") != "" && string(t.Tier) != c.Query("tier")) || (c.Query("target") != "" && t.Target != c.Query("target")) ||
			(c.Query("plan") != "" && t.Plan != c.Query("plan")) || (c.Query("state") != "" && string(t.State) != c.Query("state")) {
			continue
		}
		if len(out) == limit {
			next = out[len(out)-1].ID
			break
		}
		out = append(out, t)
	}
	c.JSON(http.StatusOK, gin.H{"tenants": out, "next_after": next})
}

// listFromSnapshot pages through the watched catalog snapshot (filters on
// tier, target and state) and reads full records only for the page, so a
// million tenants cost one pass over memory, not a read of every bucket.
// It reflects the catalog as of a few milliseconds ago.
func (s *Server) listFromSnapshot(c *gin.Context, limit int, after string) {
	tier, target, state := c.Query("tier"), c.Query("target"), c.Query("state")
	var ids []string
	s.watcher.Snapshot().Range(func(r catalog.Route) {
		if r.ID <= after && after != "" {
			return
		}
		if (tier != "" && string(r.Tier) != tier) || (target != "" && r.Target != target) || (state != "" && string(r.State) != state) {
			return
		}
		ids = append(ids, r.ID)
	})
	sort.Strings(ids)
	next := ""
	if len(ids) > limit {
		ids = ids[:limit]
		next = ids[limit-1]
	}
	out := make([]catalog.Tenant, 0, len(ids))
	for _, id := range ids {
		t, err := s.store.GetTenant(c.Request.Context(), id)
		if errors.Is(err, catalog.ErrNotFound) {
			continue // removed since the snapshot
		}
		if err != nil {
			failErr(c, err)
			return
		}
		out = append(out, t)
	}
	c.JSON(http.StatusOK, gin.H{"tenants": out, "next_after": next})
}

type setPlanRequest struct {
	Plan   string `json:"plan"`
	Reason string `json:"reason,omitempty"`
}

func (s *Server) setPlan(c *gin.Context) {
	var req setPlanRequest
	if !bindJSON(c, &req) {
		return
	}
	res, status, err := s.changePlan(c.Request.Context(), c.Param("id"), req.Plan, actor(c), req.Reason)
	if err != nil {
		failErr(c, err)
		return
	}
	c.JSON(status, res)
}

// changePlan records a plan and, when the plan's tier differs from where
// the tenant is, starts the move that puts it there (202). Shared by the
// API and the billing webhook.
func (s *Server) changePlan(ctx context.Context, id, plan, who, reason string) (tenantResponse, int, error) {
	policy, err := s.store.Policy(ctx)
	if err != nil {
		return tenantResponse{}, 0, err
	}
	tier, err := placement.TierFor(policy, plan)
	if err != nil {
		return tenantResponse{}, 0, err
	}
	cur, err := s.store.GetTenant(ctx, id)
	if err != nil {
		return tenantResponse{}, 0, err
	}
	var move *migrator.Move
	var why string
	active, err := s.migrator.ActiveMove(ctx, id)
	if err != nil {
		return tenantResponse{}, 0, err
	}
	if active != nil {
		// A move is under way: the new plan must agree with where it goes.
		if active.ToTier != tier {
			return tenantResponse{}, 0, fmt.Errorf("%w: move %s is taking the tenant to %s (%s); abort it first", migrator.ErrMoveExists, active.ID, active.To, active.ToTier)
		}
		updated, err := s.store.UpdateTenant(ctx, id, func(t *catalog.Tenant) error { t.Plan = plan; return nil })
		if err != nil {
			return tenantResponse{}, 0, err
		}
		s.audit(ctx, auditEntry{Actor: who, Action: "tenant.plan", Tenant: id, Move: active.ID, Detail: fmt.Sprintf("plan %s → %s: already moving to %s", cur.Plan, plan, active.To)})
		return tenantResponse{Tenant: updated, Move: active}, http.StatusAccepted, nil
	}
	if tier != cur.Tier {
		targets, err := s.targetLoads(ctx)
		if err != nil {
			return tenantResponse{}, 0, err
		}
		decision, err := s.choose(ctx, cur, tier, targets)
		if err != nil {
			return tenantResponse{}, 0, err
		}
		why = decision.Reason
		if reason == "" {
			reason = fmt.Sprintf("plan %s → %s", cur.Plan, plan)
		}
		m, _, err := s.migrator.Create(ctx, migrator.Request{Tenant: id, To: decision.Target, Reason: reason + " (by " + who + ")",
			Options: s.moveOptions()})
		if err != nil {
			return tenantResponse{}, 0, err
		}
		move = m
	}
	updated, err := s.store.UpdateTenant(ctx, id, func(t *catalog.Tenant) error { t.Plan = plan; return nil })
	if err != nil {
		return tenantResponse{}, 0, err
	}
	e := auditEntry{Actor: who, Action: "tenant.plan", Tenant: id, Detail: fmt.Sprintf("plan %s → %s: %s", cur.Plan, plan, reason)}
	if move != nil {
		e.Move = move.ID
		e.Detail += "; " + why
	}
	s.audit(ctx, e)
	if move == nil {
		return tenantResponse{Tenant: updated}, http.StatusOK, nil
	}
	return tenantResponse{Tenant: updated, Placement: why, Move: move}, http.StatusAccepted, nil
}

func (s *Server) offboardTenant(c *gin.Context) {
	ctx := c.Request.Context()
	id := c.Param("id")
	t, err := s.store.UpdateTenant(ctx, id, func(t *catalog.Tenant) error { t.State = catalog.StateDisabled; return nil })
	if err != nil {
		failErr(c, err)
		return
	}
	rec, _ := json.Marshal(offboarding{Tenant: id, RemoveAfter: time.Now().UTC().Add(s.cfg.Retention)})
	if _, err := s.client.KV().Put(&api.KVPair{Key: s.store.Keys().Offboard(id), Value: rec}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		failErr(c, err)
		return
	}
	s.audit(ctx, auditEntry{Actor: actor(c), Action: "tenant.offboard", Tenant: id,
		Detail: fmt.Sprintf("served no more; data on %s removed after the retention window (%s)", t.Target, s.cfg.Retention)})
	c.JSON(http.StatusAccepted, t)
}

// offboarding schedules the removal of an offboarded tenant's data.
type offboarding struct {
	Tenant      string    `json:"tenant"`
	RemoveAfter time.Time `json:"remove_after"`
}

// removeOffboarded deletes the data and the catalog entry of tenants whose
// offboarding retention is over (run by the leader).
func (s *Server) removeOffboarded(ctx context.Context) error {
	pairs, _, err := s.client.KV().List(s.store.Keys().Offboards(), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err
	}
	for _, p := range pairs {
		var o offboarding
		if json.Unmarshal(p.Value, &o) != nil || time.Now().Before(o.RemoveAfter) {
			continue
		}
		t, err := s.store.GetTenant(ctx, o.Tenant)
		if errors.Is(err, catalog.ErrNotFound) {
			_, _ = s.client.KV().Delete(p.Key, nil)
			continue
		}
		if err != nil {
			return err
		}
		if t.State != catalog.StateDisabled {
			_, _ = s.client.KV().Delete(p.Key, nil) // re-enabled meanwhile
			continue
		}
		target, _, err := s.store.GetTarget(ctx, t.Target)
		if err != nil {
			return err
		}
		n, err := migrator.DeleteTenantData(ctx, target, t.ID, "")
		if err != nil {
			return fmt.Errorf("offboard %s: %w", t.ID, err)
		}
		if err := s.store.DeleteTenant(ctx, t.ID); err != nil {
			return err
		}
		if err := s.releaseDomains(ctx, t.ID); err != nil {
			return fmt.Errorf("offboard %s: %w", t.ID, err)
		}
		_, _ = s.client.KV().Delete(p.Key, nil)
		s.audit(ctx, auditEntry{Actor: "controller:" + s.cfg.ID, Action: "tenant.removed", Tenant: t.ID, Target: t.Target,
			Detail: fmt.Sprintf("retention over: data removed (%d rows)", n)})
	}
	return nil
}

// moveOptions are the options of every move the controller starts.
func (s *Server) moveOptions() migrator.Options {
	return migrator.Options{Retention: s.cfg.Retention, RateRows: s.cfg.MoveRateRows, ChunkRows: s.cfg.MoveChunkRows}
}
