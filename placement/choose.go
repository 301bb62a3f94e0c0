package placement

import (
	"fmt"
	"sort"
	"strings"

	"github.com/switchyard/switchyard/catalog"
)

// Decision is where Choose puts a tenant and why.
type Decision struct {
	// Target is the chosen target's id; empty when none fits.
	Target string
	// Reason explains the choice: the winner's utilisation after placement,
	// the runner-up and how many candidates were rejected.
	Reason string
	// Rejected says, for every target of the tier that was not eligible,
	// why not (cordoned, label constraint, capacity, current target).
	// Targets of other tiers are not listed.
	Rejected map[string]string
}

// Choose picks the target of the given tier that should take the tenant:
// among targets of that tier that are not cordoned, are in one of the
// tenant's residency regions (see CheckResidency), satisfy the tenant's
// constrained labels (see Config.ConstraintKeys) and fit its load within
// capacity less headroom (see Fits; a dedicated-cluster target holds at most
// one tenant), the one least loaded after placement, by the largest of its
// utilisation fractions. Ties go to the target with fewer tenants, then fewer
// bytes, then the smaller id, so the choice does not depend on the order of
// targets and targets without capacity figures fill evenly.
//
// The tenant's current target (Tenant.Target), if among the targets, is not
// a candidate: Choose answers "where should this tenant go", and t's load is
// added to the candidate, never counted twice.
//
// When no target fits, the error wraps ErrNoTarget and lists why each
// candidate was rejected; the Decision still carries Rejected. When
// residency alone excludes every other target of the tier, the error also
// wraps ErrResidency.
func Choose(t TenantLoad, tier catalog.Tier, targets []TargetLoad, cfg Config) (Decision, error) {
	if err := cfg.Validate(); err != nil {
		return Decision{}, err
	}
	if !tier.Valid() {
		return Decision{}, fmt.Errorf("%w: %q is not a tier", ErrInvalidInput, tier)
	}
	if err := t.validate(); err != nil {
		return Decision{}, err
	}
	if err := validateTargets(targets); err != nil {
		return Decision{}, err
	}
	c := chooser{keys: cfg.constraintKeys(), h: cfg.Headroom}
	return c.decide(&t, tier, targets)
}

// validateTargets checks loads and that ids are unique.
func validateTargets(targets []TargetLoad) error {
	seen := make(map[string]struct{}, len(targets))
	for i := range targets {
		if err := targets[i].validate(); err != nil {
			return err
		}
		if _, dup := seen[targets[i].Target.ID]; dup {
			return fmt.Errorf("%w: duplicate target id %s", ErrInvalidInput, targets[i].Target.ID)
		}
		seen[targets[i].Target.ID] = struct{}{}
	}
	return nil
}

type chooser struct {
	keys []string
	h    Headroom
}

// candidate is a target that fits, with its score after placement.
type candidate struct {
	i     int
	u     float64
	n     int
	bytes int64
}

func (a candidate) less(b candidate, targets []TargetLoad) bool {
	switch {
	case a.u != b.u:
		return a.u < b.u
	case a.n != b.n:
		return a.n < b.n
	case a.bytes != b.bytes:
		return a.bytes < b.bytes
	}
	return targets[a.i].Target.ID < targets[b.i].Target.ID
}

// pick returns the best and second-best fitting targets (index -1 if none),
// how many fit and how many targets have the tier. It allocates nothing.
func (c *chooser) pick(t *TenantLoad, tier catalog.Tier, targets []TargetLoad) (best, second candidate, fit, sameTier int) {
	best.i, second.i = -1, -1
	for i := range targets {
		tg := &targets[i]
		if tg.Target.Tier != tier {
			continue
		}
		sameTier++
		if !c.admits(t, tg) {
			continue
		}
		fit++
		cand := candidate{i: i, n: tg.Tenants + 1, bytes: tg.Bytes + t.Bytes}
		cand.u = utilisation(tg.Target.Capacity, cand.n, cand.bytes, tg.RPS+t.RPS)
		switch {
		case best.i < 0 || cand.less(best, targets):
			second, best = best, cand
		case second.i < 0 || cand.less(second, targets):
			second = cand
		}
	}
	return best, second, fit, sameTier
}

// admits reports whether the target can take the tenant; it is reject
// without the words.
func (c *chooser) admits(t *TenantLoad, tg *TargetLoad) bool {
	if tg.Target.ID == t.Tenant.Target || tg.Target.Cordoned || !t.Tenant.ResidentIn(tg.Target.Region()) {
		return false
	}
	if len(t.Tenant.Labels) > 0 && !labelsOK(t.Tenant.Labels, tg.Target.Labels, c.keys) {
		return false
	}
	if tg.Target.Tier == catalog.TierDedicatedCluster && tg.Tenants >= 1 {
		return false
	}
	return c.h.limits(tg.Target.Capacity).fits(tg.Tenants, tg.Bytes, tg.RPS, t.Bytes, t.RPS)
}

// reject says why the target cannot take the tenant, or "" if it can.
func (c *chooser) reject(t *TenantLoad, tg *TargetLoad) string {
	if tg.Target.ID == t.Tenant.Target {
		return "is the tenant's current target"
	}
	if err := CheckResidency(&t.Tenant, &tg.Target); err != nil {
		return err.Error()
	}
	if tg.Target.Cordoned {
		return ErrCordoned.Error() + ": takes no new tenants"
	}
	if len(t.Tenant.Labels) > 0 {
		if err := labelsMatch(t.Tenant.Labels, tg.Target.Labels, c.keys); err != "" {
			return ErrConstraint.Error() + ": " + err
		}
	}
	lim := c.h.limits(tg.Target.Capacity)
	if tg.Target.Tier == catalog.TierDedicatedCluster && tg.Tenants >= 1 || !lim.fits(tg.Tenants, tg.Bytes, tg.RPS, t.Bytes, t.RPS) {
		return Fits(*t, *tg, c.h).Error()
	}
	return ""
}

// decide is Choose after validation.
func (c *chooser) decide(t *TenantLoad, tier catalog.Tier, targets []TargetLoad) (Decision, error) {
	best, second, fit, sameTier := c.pick(t, tier, targets)
	d := Decision{Rejected: map[string]string{}}
	for i := range targets {
		if targets[i].Target.Tier == tier {
			if why := c.reject(t, &targets[i]); why != "" {
				d.Rejected[targets[i].Target.ID] = why
			}
		}
	}
	if best.i < 0 {
		return d, c.noTarget(t, tier, targets, d.Rejected, sameTier)
	}
	d.Target = targets[best.i].Target.ID
	d.Reason = c.reason(t, tier, targets, best, second, fit, sameTier-fit)
	return d, nil
}

func (c *chooser) reason(t *TenantLoad, tier catalog.Tier, targets []TargetLoad, best, second candidate, fit, rejected int) string {
	tg := &targets[best.i]
	var b strings.Builder
	fmt.Fprintf(&b, "%s → %s: least utilised of %d eligible %s target(s) after placement, %.3f (%s)",
		t.Tenant.ID, tg.Target.ID, fit, tier, best.u,
		utilisationDetail(tg.Target.Capacity, best.n, best.bytes, tg.RPS+t.RPS))
	if second.i >= 0 {
		st := &targets[second.i]
		fmt.Fprintf(&b, "; next %s at %.3f", st.Target.ID, second.u)
		if second.u == best.u {
			switch {
			case second.n != best.n:
				b.WriteString(", tie broken by fewer tenants")
			case second.bytes != best.bytes:
				b.WriteString(", tie broken by fewer bytes")
			default:
				b.WriteString(", tie broken by id")
			}
		}
	}
	if rejected > 0 {
		fmt.Fprintf(&b, "; %d rejected", rejected)
	}
	return b.String()
}

func (c *chooser) noTarget(t *TenantLoad, tier catalog.Tier, targets []TargetLoad, rejected map[string]string, sameTier int) error {
	if sameTier == 0 {
		return fmt.Errorf("%w: tenant %s: no %s targets among %d target(s)", ErrNoTarget, t.Tenant.ID, tier, len(targets))
	}
	if residencyBinds(&t.Tenant, tier, targets) {
		return fmt.Errorf("%w: %w: tenant %s may live only in %s and no other %s target is there: %s",
			ErrNoTarget, ErrResidency, t.Tenant.ID, catalog.FormatRegions(t.Tenant.Residency), tier, joinReasons(rejected))
	}
	return fmt.Errorf("%w: tenant %s (%s, %s rps) fits none of %d %s target(s): %s",
		ErrNoTarget, t.Tenant.ID, formatBytes(t.Bytes), formatRPS(t.RPS), sameTier, tier, joinReasons(rejected))
}

// joinReasons renders "id: why; id: why" sorted by id.
func joinReasons(m map[string]string) string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(id)
		b.WriteString(": ")
		b.WriteString(m[id])
	}
	return b.String()
}
