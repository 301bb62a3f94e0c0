package placement

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// UnplacedError reports the tenants PlanDrain could place nowhere. It wraps
// ErrNoTarget.
type UnplacedError struct {
	// Target is the target being drained.
	Target string
	// Tenants maps each unplaced tenant to why no target takes it (each
	// candidate and its rejection).
	Tenants map[string]string
}

// Error names every unplaced tenant, sorted, with its reasons.
func (e *UnplacedError) Error() string {
	ids := make([]string, 0, len(e.Tenants))
	for id := range e.Tenants {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b strings.Builder
	fmt.Fprintf(&b, "%s: draining %s: %d tenant(s) fit nowhere: ", ErrNoTarget, e.Target, len(ids))
	for i, id := range ids {
		if i > 0 {
			b.WriteString(" | ")
		}
		fmt.Fprintf(&b, "%s (%s)", id, e.Tenants[id])
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrNoTarget) hold.
func (e *UnplacedError) Unwrap() error { return ErrNoTarget }

// PlanDrain plans moving every tenant off target (the tenants whose
// Tenant.Target is target) to other targets of the same tier, each chosen as
// Choose would, against loads updated by the moves planned before it. Larger
// tenants (by bytes, then RPS) are placed first, so they get the most room;
// ties go by id, so the plan does not depend on input order.
//
// The drained target is never a destination; a controller should cordon it
// before applying the plan so nothing new lands on it meanwhile (the Note
// says so when it is not). Plan.Before and Plan.After hold the utilisation
// (TargetLoad.Utilisation) of every target of the tier.
//
// When some tenants fit nowhere, PlanDrain returns the plan for the others
// (Converged false) and an *UnplacedError, wrapping ErrNoTarget, naming each
// unplaced tenant and why every candidate rejected it. An unknown target is
// ErrUnknownTarget.
func PlanDrain(target string, targets []TargetLoad, tenants []TenantLoad, cfg Config) (Plan, error) {
	if err := cfg.Validate(); err != nil {
		return Plan{}, err
	}
	if err := validateTargets(targets); err != nil {
		return Plan{}, err
	}
	src := -1
	for i := range targets {
		if targets[i].Target.ID == target {
			src = i
		}
	}
	if src < 0 {
		return Plan{}, fmt.Errorf("%w: %q is not among the %d target(s)", ErrUnknownTarget, target, len(targets))
	}
	tier := targets[src].Target.Tier
	var on []int
	for i := range tenants {
		if tenants[i].Tenant.Target == target {
			if err := tenants[i].validate(); err != nil {
				return Plan{}, err
			}
			on = append(on, i)
		}
	}
	slices.SortFunc(on, func(a, b int) int {
		ta, tb := &tenants[a], &tenants[b]
		if c := cmp.Compare(tb.Bytes, ta.Bytes); c != 0 {
			return c
		}
		if c := cmp.Compare(tb.RPS, ta.RPS); c != 0 {
			return c
		}
		return strings.Compare(ta.Tenant.ID, tb.Tenant.ID)
	})
	for k := 1; k < len(on); k++ {
		if id := tenants[on[k]].Tenant.ID; id == tenants[on[k-1]].Tenant.ID {
			return Plan{}, fmt.Errorf("%w: duplicate tenant id %s", ErrInvalidInput, id)
		}
	}

	sim := append([]TargetLoad(nil), targets...)
	tierUtil := func() map[string]float64 {
		m := map[string]float64{}
		for i := range sim {
			if sim[i].Target.Tier == tier {
				m[sim[i].Target.ID] = sim[i].Utilisation()
			}
		}
		return m
	}
	plan := Plan{Before: tierUtil()}
	c := chooser{keys: cfg.constraintKeys(), h: cfg.Headroom}
	unplaced := map[string]string{}
	dests := map[string]bool{}
	var moved int64
	for _, i := range on {
		t := &tenants[i]
		best, second, fit, sameTier := c.pick(t, tier, sim)
		if best.i < 0 {
			d, _ := c.decide(t, tier, sim)
			delete(d.Rejected, target)
			why := joinReasons(d.Rejected)
			if why == "" {
				why = fmt.Sprintf("no other %s target", tier)
			}
			unplaced[t.Tenant.ID] = why
			continue
		}
		reason := c.reason(t, tier, sim, best, second, fit, sameTier-fit-1) // the drained target is not counted as rejected
		dst := &sim[best.i]
		plan.Moves = append(plan.Moves, Move{
			Tenant: t.Tenant.ID, From: target, To: dst.Target.ID, Bytes: t.Bytes,
			Reason: "drain " + target + ": " + reason,
		})
		dests[dst.Target.ID] = true
		moved += t.Bytes
		dst.Tenants++
		dst.Bytes += t.Bytes
		dst.RPS += t.RPS
		sim[src].Tenants--
		sim[src].Bytes -= t.Bytes
		sim[src].RPS -= t.RPS
	}
	plan.After = tierUtil()
	plan.Converged = len(unplaced) == 0
	var b strings.Builder
	fmt.Fprintf(&b, "drain %s (%s): %d tenant(s); %d move(s) totalling %s to %d target(s)",
		target, tier, len(on), len(plan.Moves), formatBytes(moved), len(dests))
	if len(unplaced) > 0 {
		ids := make([]string, 0, len(unplaced))
		for id := range unplaced {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		fmt.Fprintf(&b, "; not converged: %d tenant(s) fit nowhere: %s", len(ids), strings.Join(ids, ", "))
	}
	if !targets[src].Target.Cordoned {
		fmt.Fprintf(&b, "; %s is not cordoned: cordon it before applying so no new tenant lands on it", target)
	}
	plan.Note = b.String()
	if len(unplaced) > 0 {
		return plan, &UnplacedError{Target: target, Tenants: unplaced}
	}
	return plan, nil
}
