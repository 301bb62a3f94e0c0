package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/placement"
)

// ActionResidencyRefused is the audit action of every residency refusal:
// the entry names who asked, what (the request, in Detail) and why (the
// refusal, naming the constraint and the target).
const ActionResidencyRefused = "residency.refused"

// auditResidency writes err to the audit log when it is a residency
// refusal (errors.Is placement.ErrResidency), and reports whether it was.
// what says what was asked ("create", "plan free → pro", "drain pool-us").
func (s *Server) auditResidency(ctx context.Context, who, tenant, what string, err error) bool {
	if !errors.Is(err, placement.ErrResidency) {
		return false
	}
	s.audit(ctx, residencyEntry(who, tenant, what, err))
	return true
}

func residencyEntry(who, tenant, what string, err error) auditEntry {
	e := auditEntry{Actor: who, Action: ActionResidencyRefused, Tenant: tenant, Detail: what + ": " + err.Error()}
	var re *placement.ResidencyError
	if errors.As(err, &re) {
		e.Target = re.Target
	}
	return e
}

// RecordResidencyRefusal writes a residency refusal made outside the
// controller (the CLI's manual move, which runs the migrator itself) to the
// audit log under prefix. It does nothing when err is not one.
func RecordResidencyRefusal(ctx context.Context, client *api.Client, prefix, who, tenant, what string, err error) error {
	if !errors.Is(err, placement.ErrResidency) {
		return nil
	}
	e := residencyEntry(who, tenant, what, err)
	return writeAudit(ctx, client, catalog.NewKeys(prefix), &e)
}

// auditMoveRefusal audits a move the leader ran that its own preflight
// refused for residency (the tenant's residency changed after the move was
// created, by a write that bypassed the API's check): the move is paused.
func (s *Server) auditMoveRefusal(ctx context.Context, id string, err error) {
	if !errors.Is(err, placement.ErrResidency) {
		return
	}
	tenant := ""
	if m, gerr := s.migrator.Get(ctx, id); gerr == nil {
		tenant = m.Tenant
	}
	e := residencyEntry("controller:"+s.cfg.ID, tenant, "run move "+id, err)
	e.Move = id
	s.audit(ctx, e)
}

// auditDrainRefusals audits each tenant a drain could not place because of
// residency.
func (s *Server) auditDrainRefusals(ctx context.Context, who, what string, err error) {
	var ue *placement.UnplacedError
	if !errors.As(err, &ue) {
		return
	}
	for _, id := range ue.Residency {
		s.audit(ctx, auditEntry{Actor: who, Action: ActionResidencyRefused, Tenant: id,
			Detail: fmt.Sprintf("%s: no target takes it: %s", what, ue.Tenants[id])})
	}
}

// auditSkipped audits each tenant a plan keeps in place because of
// residency (Plan.Skipped).
func (s *Server) auditSkipped(ctx context.Context, who, what string, skipped map[string]string) {
	ids := make([]string, 0, len(skipped))
	for id := range skipped {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		s.audit(ctx, auditEntry{Actor: who, Action: ActionResidencyRefused, Tenant: id, Detail: what + ": kept in place: " + skipped[id]})
	}
}

type setResidencyRequest struct {
	// Residency is the new list of regions; empty or absent clears it.
	Residency []string `json:"residency"`
	Reason    string   `json:"reason,omitempty"`
}

// setResidency changes a tenant's residency. A change that would leave the
// tenant's data outside its regions — its current target, or the
// destination of a move under way, is not in one of them — is refused
// (422, code "residency", audited) and nothing changes: move the tenant
// into the region first (switchyard move <tenant> --to <target>), then
// set the residency. The controller does not start that move itself.
func (s *Server) setResidency(c *gin.Context) {
	var req setResidencyRequest
	if !bindJSON(c, &req) {
		return
	}
	ctx, id, who := c.Request.Context(), c.Param("id"), actor(c)
	what := fmt.Sprintf("set residency %s", catalog.FormatRegions(req.Residency))
	cur, err := s.store.GetTenant(ctx, id)
	if err != nil {
		failErr(c, err)
		return
	}
	next := cur
	next.Residency = req.Residency
	if err := next.Validate(); err != nil {
		failErr(c, err)
		return
	}
	if err := s.residencyFits(ctx, &next); err != nil {
		s.auditResidency(ctx, who, id, what, err)
		failErr(c, err)
		return
	}
	updated, err := s.store.UpdateTenant(ctx, id, func(t *catalog.Tenant) error {
		if t.Target != cur.Target {
			return fmt.Errorf("%w: tenant %s moved from %s to %s meanwhile; retry", catalog.ErrConflict, id, cur.Target, t.Target)
		}
		t.Residency = req.Residency
		return nil
	})
	if err != nil {
		failErr(c, err)
		return
	}
	detail := fmt.Sprintf("residency %s → %s", catalog.FormatRegions(cur.Residency), catalog.FormatRegions(req.Residency))
	if req.Reason != "" {
		detail += ": " + req.Reason
	}
	s.audit(ctx, auditEntry{Actor: who, Action: "tenant.residency", Tenant: id, Target: cur.Target, Detail: detail})
	c.JSON(http.StatusOK, updated)
}

// residencyFits checks that t's current target and the destination of its
// move under way, if any, are in t's regions.
func (s *Server) residencyFits(ctx context.Context, t *catalog.Tenant) error {
	targets := []string{t.Target}
	active, err := s.migrator.ActiveMove(ctx, t.ID)
	if err != nil {
		return err
	}
	if active != nil {
		targets = append(targets, active.To)
	}
	for _, id := range targets {
		tg, _, err := s.store.GetTarget(ctx, id)
		if err != nil {
			return err
		}
		if err := placement.CheckResidency(t, &tg); err != nil {
			where := "its data is on " + id
			if id != t.Target {
				where = "move " + active.ID + " is taking it to " + id
			}
			return fmt.Errorf("%w (%s; move it into one of its regions first: switchyard move %s --to <target>)", err, where, t.ID)
		}
	}
	return nil
}
