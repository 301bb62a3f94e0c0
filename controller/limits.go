package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/catalog"
)

// Per-tenant limits (README "Per-tenant limits"):
//
//	GET    /v1/plans                      the policy: plan → tier, plan → limits
//	PUT    /v1/plans/{plan}/limits        a plan's limits (operator)
//	GET    /v1/tenants/{id}/limits        the plan's, the override and what is enforced
//	PUT    /v1/tenants/{id}/limits        the tenant's override (billing, operator)
//	DELETE /v1/tenants/{id}/limits        back to the plan's
//
// Routers pick every change up from their catalog watch, without a
// restart. Nonsense (a negative figure, a zero burst with a rate, an
// unknown plan) is refused with 400 naming the field, and changes nothing.

// limitsRoutes registers the limits endpoints.
func (s *Server) limitsRoutes(v1 *gin.RouterGroup, read, billing, operator gin.HandlerFunc) {
	v1.GET("/plans", read, s.getPlans)
	v1.PUT("/plans/:plan/limits", operator, s.setPlanLimits)
	v1.GET("/tenants/:id/limits", read, s.getTenantLimits)
	v1.PUT("/tenants/:id/limits", billing, s.setTenantLimits)
	v1.DELETE("/tenants/:id/limits", billing, s.clearTenantLimits)
}

// failLimits answers a limits error: a field error names its field.
func failLimits(c *gin.Context, err error) {
	var fe *catalog.FieldError
	if errors.As(err, &fe) {
		c.AbortWithStatusJSON(http.StatusBadRequest, apiError{Error: "invalid", Message: fe.Error(), Field: fe.Field})
		return
	}
	failErr(c, err)
}

func (s *Server) getPlans(c *gin.Context) {
	p, err := s.store.Policy(c.Request.Context())
	if err != nil {
		failErr(c, err)
		return
	}
	c.JSON(http.StatusOK, p)
}

// errUnknownPlan: limits for a plan the policy does not map.
var errUnknownPlan = errors.New("unknown plan")

func (s *Server) setPlanLimits(c *gin.Context) {
	var l catalog.Limits
	if !bindJSON(c, &l) {
		return
	}
	if err := l.Validate(); err != nil {
		failLimits(c, err)
		return
	}
	plan := c.Param("plan")
	_, err := s.store.UpdatePolicy(c.Request.Context(), func(p *catalog.PlanPolicy) error {
		if _, ok := p.Tiers[plan]; !ok {
			return errUnknownPlan
		}
		if p.Limits == nil {
			p.Limits = map[string]catalog.Limits{}
		}
		if l.IsZero() {
			delete(p.Limits, plan)
		} else {
			p.Limits[plan] = l
		}
		return nil
	})
	if errors.Is(err, errUnknownPlan) {
		c.AbortWithStatusJSON(http.StatusBadRequest, apiError{Error: "unknown_plan", Message: fmt.Sprintf("plan %q is not in the policy", plan), Field: "plan"})
		return
	}
	if err != nil {
		failLimits(c, err)
		return
	}
	s.audit(c.Request.Context(), auditEntry{Actor: actor(c), Action: "plan.limits", Detail: fmt.Sprintf("plan %s: %s", plan, jsonText(l))})
	c.JSON(http.StatusOK, gin.H{"plan": plan, "limits": l})
}

// tenantLimits is a tenant's limits: its plan's, its override, and what
// routers enforce (the plan's changed by the override; zero: no limit).
type tenantLimits struct {
	Tenant    string                  `json:"tenant"`
	Plan      string                  `json:"plan"`
	PlanLimit catalog.Limits          `json:"plan_limits"`
	Override  *catalog.LimitsOverride `json:"override,omitempty"`
	Effective catalog.Limits          `json:"effective"`
}

func (s *Server) tenantLimits(ctx context.Context, t catalog.Tenant) (tenantLimits, error) {
	p, err := s.store.Policy(ctx)
	if err != nil {
		return tenantLimits{}, err
	}
	pl := p.Limits[t.Plan]
	return tenantLimits{Tenant: t.ID, Plan: t.Plan, PlanLimit: pl, Override: t.Limits, Effective: pl.With(t.Limits)}, nil
}

func (s *Server) getTenantLimits(c *gin.Context) {
	t, err := s.store.GetTenant(catalog.Consistent(c.Request.Context()), c.Param("id"))
	if err != nil {
		failErr(c, err)
		return
	}
	s.answerTenantLimits(c, t)
}

func (s *Server) answerTenantLimits(c *gin.Context, t catalog.Tenant) {
	out, err := s.tenantLimits(c.Request.Context(), t)
	if err != nil {
		failErr(c, err)
		return
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) setTenantLimits(c *gin.Context) {
	var o catalog.LimitsOverride
	if !bindJSON(c, &o) {
		return
	}
	s.changeTenantLimits(c, &o)
}

func (s *Server) clearTenantLimits(c *gin.Context) { s.changeTenantLimits(c, nil) }

// changeTenantLimits sets (nil: clears) the tenant's override.
func (s *Server) changeTenantLimits(c *gin.Context, o *catalog.LimitsOverride) {
	if err := o.Validate(); err != nil {
		failLimits(c, err)
		return
	}
	id := c.Param("id")
	t, err := s.store.SetTenantLimits(c.Request.Context(), id, o)
	if err != nil {
		failLimits(c, err)
		return
	}
	detail := "override cleared: the plan's limits"
	if o != nil {
		detail = "override " + jsonText(o)
	}
	s.audit(c.Request.Context(), auditEntry{Actor: actor(c), Action: "tenant.limits", Tenant: id, Detail: detail})
	s.answerTenantLimits(c, t)
}

// jsonText is v as compact JSON, for audit details.
func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
