package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
	"github.com/switchyard/switchyard/placement"
)

type targetView struct {
	catalog.Target
	TenantCount int     `json:"tenant_count"`
	Bytes       int64   `json:"bytes"`
	RPS         float64 `json:"rps"`
}

func (s *Server) listTargets(c *gin.Context) {
	loads, _, err := s.loads(c.Request.Context())
	if err != nil {
		failErr(c, err)
		return
	}
	out := make([]targetView, 0, len(loads))
	for _, l := range loads {
		l.Target.DSN = redactDSN(l.Target.DSN)
		out = append(out, targetView{Target: l.Target, TenantCount: l.Tenants, Bytes: l.Bytes, RPS: l.RPS})
	}
	c.JSON(http.StatusOK, gin.H{"targets": out})
}

func (s *Server) registerTarget(c *gin.Context) {
	var t catalog.Target
	if !bindJSON(c, &t) {
		return
	}
	if err := s.store.CreateTarget(c.Request.Context(), t); err != nil {
		failErr(c, err)
		return
	}
	s.audit(c.Request.Context(), auditEntry{Actor: actor(c), Action: "target.register", Target: t.ID, Detail: fmt.Sprintf("%s, service %s", t.Tier, t.Service)})
	t.DSN = redactDSN(t.DSN)
	c.JSON(http.StatusCreated, t)
}

type cordonRequest struct {
	Cordoned *bool `json:"cordoned"`
}

func (s *Server) cordonTarget(c *gin.Context) {
	var req cordonRequest
	if !bindJSON(c, &req) {
		return
	}
	if req.Cordoned == nil {
		fail(c, http.StatusBadRequest, "invalid", `body must set "cordoned": true or false`)
		return
	}
	t, err := s.store.UpdateTarget(c.Request.Context(), c.Param("id"), func(t *catalog.Target) error { t.Cordoned = *req.Cordoned; return nil })
	if err != nil {
		failErr(c, err)
		return
	}
	s.audit(c.Request.Context(), auditEntry{Actor: actor(c), Action: "target.cordon", Target: t.ID, Detail: fmt.Sprintf("cordoned=%v", t.Cordoned)})
	t.DSN = redactDSN(t.DSN)
	c.JSON(http.StatusOK, t)
}

// planRequest is the body of a rebalance or a drain. DryRun is a pointer so
// that a field left out is told apart from false: only an explicit
// "dry_run": false changes anything.
type planRequest struct {
	DryRun   *bool   `json:"dry_run"`
	MaxMoves int     `json:"max_moves,omitempty"`
	Spread   float64 `json:"spread,omitempty"`
}

// dryRun reports whether the request asks for the plan only: true unless
// the body says "dry_run": false (an empty body, {} and null are dry runs).
func (r planRequest) dryRun() bool { return r.DryRun == nil || *r.DryRun }

type planResponse struct {
	// DryRun says whether this was the plan only (nothing changed).
	DryRun bool             `json:"dry_run"`
	Plan   placement.Plan   `json:"plan"`
	Moves  []*migrator.Move `json:"moves,omitempty"`
}

// drainTarget cordons the target and moves every tenant off it; by default
// (no "dry_run": false) it only answers the plan and changes nothing.
func (s *Server) drainTarget(c *gin.Context) {
	var req planRequest
	if !bindOptionalJSON(c, &req) {
		return
	}
	ctx := c.Request.Context()
	id := c.Param("id")
	if _, _, err := s.store.GetTarget(ctx, id); err != nil {
		failErr(c, err)
		return
	}
	targets, tenants, err := s.loads(ctx)
	if err != nil {
		failErr(c, err)
		return
	}
	plan, err := placement.PlanDrain(id, targets, tenants, placement.Config{})
	s.auditDrainRefusals(ctx, actor(c), planWhat("drain of "+id, req.dryRun()), err)
	s.answerPlan(c, plan, err, req.dryRun(), "drain of "+id, func() error {
		_, err := s.store.UpdateTarget(ctx, id, func(t *catalog.Target) error { t.Cordoned = true; return nil })
		return err
	})
}

// planWhat names a planning request in audit entries.
func planWhat(what string, dryRun bool) string {
	if dryRun {
		return what + " (dry run)"
	}
	return what
}

// answerPlan answers a planning request: the plan alone for a dry run (200),
// otherwise before() then the plan's moves started (202).
func (s *Server) answerPlan(c *gin.Context, plan placement.Plan, err error, dryRun bool, why string, before func() error) {
	if err != nil {
		failErr(c, err)
		return
	}
	if plan.Moves == nil {
		plan.Moves = []placement.Move{}
	}
	if dryRun {
		c.JSON(http.StatusOK, planResponse{DryRun: true, Plan: plan})
		return
	}
	if before != nil {
		if err := before(); err != nil {
			failErr(c, err)
			return
		}
	}
	moves, err := s.startMoves(c, plan, why)
	if err != nil {
		failErr(c, err)
		return
	}
	c.JSON(http.StatusAccepted, planResponse{Plan: plan, Moves: moves})
}

// rebalance plans moves that even out the shared pools; it starts them only
// when the body says "dry_run": false.
func (s *Server) rebalance(c *gin.Context) {
	var req planRequest
	if !bindOptionalJSON(c, &req) {
		return
	}
	if err := req.validRebalance(); err != nil {
		fail(c, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	plan, err := s.planRebalance(c.Request.Context(), req)
	s.auditSkipped(c.Request.Context(), actor(c), planWhat("rebalance", req.dryRun()), plan.Skipped)
	s.answerPlan(c, plan, err, req.dryRun(), "rebalance", nil)
}

// errBadRebalance is a rebalance request out of range.
var errBadRebalance = errors.New("max_moves must be 0..10000 and spread in [0, 1)")

// validRebalance checks a rebalance request's figures.
func (r planRequest) validRebalance() error {
	if r.MaxMoves < 0 || r.MaxMoves > 10000 || r.Spread < 0 || r.Spread >= 1 {
		return errBadRebalance
	}
	return nil
}

// planRebalance makes the rebalance plan for req from the current loads
// (the API's POST /v1/rebalance and the console's Rebalance page).
func (s *Server) planRebalance(ctx context.Context, req planRequest) (placement.Plan, error) {
	targets, tenants, err := s.loads(ctx)
	if err != nil {
		return placement.Plan{}, err
	}
	cfg := placement.RebalanceConfig{MaxMoves: req.MaxMoves, Spread: req.Spread, Metric: placement.MetricTenants}
	return placement.PlanRebalance(targets, tenants, cfg)
}

// startMovesParallel bounds how many moves a plan creates at once: each
// runs its own preflight (both databases), which is most of the time.
const startMovesParallel = 8

// startMoves creates the plan's moves, a few at a time; the leader runs
// them, a bounded number at a time. On an error it returns the moves
// created (in plan order) and the first error in plan order.
func (s *Server) startMoves(c *gin.Context, plan placement.Plan, why string) ([]*migrator.Move, error) {
	ctx, who := c.Request.Context(), actor(c)
	created := make([]*migrator.Move, len(plan.Moves))
	errs := make([]error, len(plan.Moves))
	sem := make(chan struct{}, startMovesParallel)
	var wg sync.WaitGroup
	for i, pm := range plan.Moves {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			m, _, err := s.migrator.Create(ctx, migrator.Request{Tenant: pm.Tenant, To: pm.To, Reason: why + ": " + pm.Reason + " (by " + who + ")",
				Options: s.moveOptions()})
			if err != nil {
				errs[i] = fmt.Errorf("move %s → %s: %w", pm.Tenant, pm.To, err)
				s.auditResidency(ctx, who, pm.Tenant, why+": move to "+pm.To, err)
				return
			}
			s.audit(ctx, auditEntry{Actor: who, Action: "move.start", Tenant: pm.Tenant, Move: m.ID, Detail: why + ": " + pm.Reason})
			created[i] = m
		}()
	}
	wg.Wait()
	var out []*migrator.Move
	for _, m := range created {
		if m != nil {
			out = append(out, m)
		}
	}
	for _, err := range errs {
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func (s *Server) listMoves(c *gin.Context) {
	moves, err := s.migrator.List(c.Request.Context())
	if err != nil {
		failErr(c, err)
		return
	}
	if moves == nil {
		moves = []*migrator.Move{}
	}
	c.JSON(http.StatusOK, gin.H{"moves": moves})
}

func (s *Server) getMove(c *gin.Context) {
	m, err := s.migrator.Get(c.Request.Context(), c.Param("id"))
	if err != nil {
		failErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"move": m, "progress": m.Progress()})
}

func (s *Server) abortMove(c *gin.Context) {
	m, err := s.abort(c.Request.Context(), c.Param("id"), actor(c))
	if err != nil {
		failErr(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"move": m})
}

// abort aborts a move that has not switched yet, and audits it (the API
// and the console).
func (s *Server) abort(ctx context.Context, id, who string) (*migrator.Move, error) {
	m, err := s.migrator.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if m.Phase == migrator.PhaseRetained || m.Phase == migrator.PhaseDone {
		return nil, migrator.ErrTooLateToAbort
	}
	if m, err = s.migrator.Abort(ctx, m.ID); err != nil {
		return nil, err
	}
	s.audit(ctx, auditEntry{Actor: who, Action: "move.abort", Tenant: m.Tenant, Move: m.ID})
	return m, nil
}

func (s *Server) retryMove(c *gin.Context) {
	m, err := s.retry(c.Request.Context(), c.Param("id"), actor(c))
	if err != nil {
		failErr(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"move": m})
}

// retry resumes a paused move, and audits it (the API and the console).
func (s *Server) retry(ctx context.Context, id, who string) (*migrator.Move, error) {
	m, err := s.migrator.Retry(ctx, id)
	if err != nil {
		return nil, err
	}
	s.audit(ctx, auditEntry{Actor: who, Action: "move.retry", Tenant: m.Tenant, Move: m.ID})
	return m, nil
}
