package placement

import (
	"fmt"
	"sort"
	"strings"

	"github.com/switchyard/switchyard/catalog"
)

// ResidencyError refuses a target outside a tenant's residency: the target's
// region (its "region" label, catalog.RegionLabel) is not one of the
// tenant's regions, or the target has no region at all (an unknown region is
// not allowed). errors.Is(err, ErrResidency) holds.
type ResidencyError struct {
	Tenant  string
	Regions []string
	Target  string
	// Region is the target's region, "" when it has none.
	Region string
}

// Error names the constraint and the target: "residency: tenant acme may
// live only in [eu]; target pool-us is in us".
func (e *ResidencyError) Error() string { return ErrResidency.Error() + ": " + e.Reason() }

// Reason is the refusal without the constraint's name: "tenant acme may
// live only in [eu]; target pool-us is in us".
func (e *ResidencyError) Reason() string {
	where := "is in " + e.Region
	if e.Region == "" {
		where = "has no " + catalog.RegionLabel + " label (an unknown region is not allowed)"
	}
	return fmt.Sprintf("tenant %s may live only in %s; target %s %s", e.Tenant, catalog.FormatRegions(e.Regions), e.Target, where)
}

// Unwrap makes errors.Is(err, ErrResidency) hold.
func (e *ResidencyError) Unwrap() error { return ErrResidency }

// CheckResidency returns nil when the target may hold the tenant's data
// (the tenant has no residency constraint, or the target's region is one of
// its regions), else a *ResidencyError. Every path that picks or accepts a
// target (Choose, PlanDrain, PlanRebalance, Eligible, and the migrator's
// preflight for manual moves) refuses with it.
func CheckResidency(t *catalog.Tenant, target *catalog.Target) error {
	region := target.Region()
	if t.ResidentIn(region) {
		return nil
	}
	return &ResidencyError{Tenant: t.ID, Regions: t.Residency, Target: target.ID, Region: region}
}

// residencyBinds reports whether residency alone leaves the tenant nowhere
// to go among the targets of tier: it is resident, there is at least one
// target of the tier other than its current one, and none of them is in
// its regions.
func residencyBinds(t *catalog.Tenant, tier catalog.Tier, targets []TargetLoad) bool {
	if len(t.Residency) == 0 {
		return false
	}
	others := 0
	for i := range targets {
		tg := &targets[i].Target
		if tg.Tier != tier || tg.ID == t.Target {
			continue
		}
		if t.ResidentIn(tg.Region()) {
			return false
		}
		others++
	}
	return others > 0
}

// maxSkipped bounds how many held tenants PlanRebalance lists in
// Plan.Skipped (the Note gives the total).
const maxSkipped = 20

// residencyHeld lists, when the plan did not converge, the resident
// tenants still on over-full pools that residency keeps from a pool that
// could take (one not cordoned and not over the band), each with the
// refusal naming the first such pool; at most maxSkipped, and the total.
func (rb *rebalancer) residencyHeld() (map[string]string, int) {
	if len(rb.viol) == 0 {
		return nil, 0
	}
	var takers []int
	for i := range rb.pools {
		p := &rb.pools[i]
		if !p.cordoned && rb.load(p) <= p.upper+eps*p.capacity {
			takers = append(takers, i)
		}
	}
	held := map[string]string{}
	S := rb.nsig
	for _, v := range rb.viol {
		if !v.over {
			continue
		}
		for s := 1; s < S; s++ {
			regions := rb.sigRegions[s]
			if len(regions) == 0 {
				continue
			}
			out := rb.outsideRegions(regions, takers)
			if out < 0 {
				continue
			}
			g := &rb.groups[v.p*S+s]
			for i := g.rightAlive(0); i < len(g.items); i = g.rightAlive(i + 1) {
				t := &rb.tenants[g.items[i].idx].Tenant
				p := &rb.pools[out]
				held[t.ID] = (&ResidencyError{Tenant: t.ID, Regions: t.Residency, Target: p.id, Region: p.labels[catalog.RegionLabel]}).Error()
			}
		}
	}
	return firstByID(held, maxSkipped), len(held)
}

// firstByID keeps the n smallest ids of m (signature order follows input
// order; ids do not).
func firstByID(m map[string]string, n int) map[string]string {
	if len(m) <= n {
		return m
	}
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids[n:] {
		delete(m, id)
	}
	return m
}

// outsideRegions is the first taker (pools are sorted by id) whose region
// is not among regions, or -1.
func (rb *rebalancer) outsideRegions(regions []string, takers []int) int {
	for _, p := range takers {
		if !(&catalog.Tenant{Residency: regions}).ResidentIn(rb.pools[p].labels[catalog.RegionLabel]) {
			return p
		}
	}
	return -1
}

// residencyNote is the Note's account of Plan.Skipped.
func residencyNote(held map[string]string, total int) string {
	if total == 0 {
		return ""
	}
	ids := make([]string, 0, len(held))
	for id := range held {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	s := fmt.Sprintf("; residency keeps %d tenant(s) on over-full pools from pools outside their regions (%s", total, strings.Join(ids, ", "))
	if total > len(ids) {
		s += fmt.Sprintf(", and %d more", total-len(ids))
	}
	return s + "; see skipped)"
}
