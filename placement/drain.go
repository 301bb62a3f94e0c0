package placement

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/switchyard/switchyard/catalog"
)

// UnplacedError reports the tenants PlanDrain could place nowhere. It wraps
// ErrNoTarget.
type UnplacedError struct {
	// Target is the target being drained.
	Target string
	// Tenants maps each unplaced tenant to why no target takes it (each
	// candidate and its rejection).
	Tenants map[string]string
	// Residency lists, sorted, the unplaced tenants that residency alone
	// keeps from every other target of the tier; when there are any the
	// error also wraps ErrResidency.
	Residency []string
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

// Unwrap makes errors.Is(err, ErrNoTarget) hold, and errors.Is(err,
// ErrResidency) when residency keeps some tenant from every target.
func (e *UnplacedError) Unwrap() []error {
	if len(e.Residency) > 0 {
		return []error{ErrNoTarget, ErrResidency}
	}
	return []error{ErrNoTarget}
}

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
	src := slices.IndexFunc(targets, func(t TargetLoad) bool { return t.Target.ID == target })
	if src < 0 {
		return Plan{}, fmt.Errorf("%w: %q is not among the %d target(s)", ErrUnknownTarget, target, len(targets))
	}
	on, err := drainOrder(target, tenants)
	if err != nil {
		return Plan{}, err
	}
	d := drain{target: target, src: src, tier: targets[src].Target.Tier, sim: append([]TargetLoad(nil), targets...),
		c: chooser{keys: cfg.constraintKeys(), h: cfg.Headroom}, unplaced: map[string]string{}, dests: map[string]bool{}}
	plan := Plan{Before: d.tierUtil()}
	for _, i := range on {
		if mv, ok := d.place(&tenants[i]); ok {
			plan.Moves = append(plan.Moves, mv)
		}
	}
	plan.After = d.tierUtil()
	plan.Converged = len(d.unplaced) == 0
	plan.Note = d.note(len(on), len(plan.Moves), targets[src].Target.Cordoned)
	if len(d.unplaced) > 0 {
		sort.Strings(d.resident)
		return plan, &UnplacedError{Target: target, Tenants: d.unplaced, Residency: d.resident}
	}
	return plan, nil
}

// drainOrder returns the indexes of the tenants on target, largest first
// (bytes, then RPS, then id).
func drainOrder(target string, tenants []TenantLoad) ([]int, error) {
	var on []int
	for i := range tenants {
		if tenants[i].Tenant.Target == target {
			if err := tenants[i].validate(); err != nil {
				return nil, err
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
			return nil, fmt.Errorf("%w: duplicate tenant id %s", ErrInvalidInput, id)
		}
	}
	return on, nil
}

// drain is one PlanDrain: the targets' loads as the planned moves leave
// them, and what did not fit.
type drain struct {
	target   string
	src      int // index of target in sim
	tier     catalog.Tier
	sim      []TargetLoad
	c        chooser
	unplaced map[string]string // tenant → why it fits nowhere
	resident []string          // unplaced tenants residency alone keeps from every target
	dests    map[string]bool
	moved    int64
}

// tierUtil is the utilisation of every target of the tier.
func (d *drain) tierUtil() map[string]float64 {
	m := map[string]float64{}
	for i := range d.sim {
		if d.sim[i].Target.Tier == d.tier {
			m[d.sim[i].Target.ID] = d.sim[i].Utilisation()
		}
	}
	return m
}

// place chooses t's destination and accounts its move, or records why it
// fits nowhere.
func (d *drain) place(t *TenantLoad) (Move, bool) {
	best, second, fit, sameTier := d.c.pick(t, d.tier, d.sim)
	if best.i < 0 {
		dec, _ := d.c.decide(t, d.tier, d.sim)
		delete(dec.Rejected, d.target)
		why := joinReasons(dec.Rejected)
		if why == "" {
			why = fmt.Sprintf("no other %s target", d.tier)
		}
		d.unplaced[t.Tenant.ID] = why
		if residencyBinds(&t.Tenant, d.tier, d.sim) {
			d.resident = append(d.resident, t.Tenant.ID)
		}
		return Move{}, false
	}
	reason := d.c.reason(t, d.tier, d.sim, best, second, fit, sameTier-fit-1) // the drained target is not counted as rejected
	dst, src := &d.sim[best.i], &d.sim[d.src]
	d.dests[dst.Target.ID] = true
	d.moved += t.Bytes
	dst.Tenants++
	dst.Bytes += t.Bytes
	dst.RPS += t.RPS
	src.Tenants--
	src.Bytes -= t.Bytes
	src.RPS -= t.RPS
	return Move{Tenant: t.Tenant.ID, From: d.target, To: dst.Target.ID, Bytes: t.Bytes, Reason: "drain " + d.target + ": " + reason}, true
}

// note summarises the plan.
func (d *drain) note(tenants, moves int, cordoned bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "drain %s (%s): %d tenant(s); %d move(s) totalling %s to %d target(s)",
		d.target, d.tier, tenants, moves, formatBytes(d.moved), len(d.dests))
	if len(d.unplaced) > 0 {
		ids := make([]string, 0, len(d.unplaced))
		for id := range d.unplaced {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		fmt.Fprintf(&b, "; not converged: %d tenant(s) fit nowhere: %s", len(ids), strings.Join(ids, ", "))
	}
	if !cordoned {
		fmt.Fprintf(&b, "; %s is not cordoned: cordon it before applying so no new tenant lands on it", d.target)
	}
	return b.String()
}
