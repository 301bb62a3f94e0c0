package catalog

import "errors"

// limitTables resolve a route's limits without allocating: the policy's
// limits by plan code, and the tenants' overrides by override code (both
// codes are in the route, from its slot).
type limitTables struct {
	policy     *PlanPolicy
	planLimits []Limits         // by plan code
	overrides  []LimitsOverride // by override code; 0 is none
	plans      []string         // plan names by plan code
}

// limitCodes interns a tenant's plan and limits override (its bucket
// line's encoded form, "" for none).
func (n *nameTable) limitCodes(plan, override string) (uint8, uint16, error) {
	p, err := n.plans.code(plan, sameString)
	if err != nil {
		return 0, 0, err
	}
	o, err := n.limits.code(override, decodeOverride)
	if errors.Is(err, errTableFull) {
		// More distinct overrides than codes since this router started:
		// the tenant is held to its plan's limits rather than the catalog
		// going unread (a restart starts the table afresh).
		o, err = 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	return uint8(p), o, nil
}

// index fills the tables for policy (nil: none) and every plan and
// override names knows of now: a superset of what the snapshot's slots
// name, since the tables only grow.
func (t *limitTables) index(policy *PlanPolicy, names *nameTable) {
	t.policy = policy
	t.overrides = names.limits.snapshot()
	plans := names.plans.snapshot()
	t.plans = plans
	t.planLimits = make([]Limits, len(plans))
	if policy == nil {
		return
	}
	for code, plan := range plans {
		t.planLimits[code] = policy.Limits[plan]
	}
}

// Limits returns the limits a tenant's route is under: its plan's in the
// policy, changed by the tenant's override. Zero fields are no limit. It
// never blocks and never allocates.
func (s *Snapshot) Limits(r Route) Limits {
	var l Limits
	if s == nil {
		return l
	}
	if int(r.plan) < len(s.planLimits) {
		l = s.planLimits[r.plan]
	}
	if r.limits != 0 && int(r.limits) < len(s.overrides) {
		l = l.With(&s.overrides[r.limits])
	}
	return l
}

// Policy is the plan policy the snapshot enforces limits by (nil before
// it is loaded). Do not modify it.
func (s *Snapshot) Policy() *PlanPolicy {
	if s == nil {
		return nil
	}
	return s.policy
}

// Plan returns the plan of a tenant's route ("" if the snapshot does not
// know its code). It never blocks and never allocates.
func (s *Snapshot) Plan(r Route) string {
	if s == nil || int(r.plan) >= len(s.plans) {
		return ""
	}
	return s.plans[r.plan]
}
