package catalog

import (
	"fmt"
	"sort"
	"time"
)

// BackupPlan is a plan's backup schedule: the controller's leader backs
// each of the plan's tenants up Every, and deletes its backups older than
// Keep (the newest is always kept). Durations are Go durations ("24h").
type BackupPlan struct {
	Every string `json:"every"`
	Keep  string `json:"keep"`
}

// Interval is Every parsed.
func (b BackupPlan) Interval() time.Duration { d, _ := time.ParseDuration(b.Every); return d }

// Retention is Keep parsed.
func (b BackupPlan) Retention() time.Duration { d, _ := time.ParseDuration(b.Keep); return d }

// backupProblems checks the policy's backup plans: each names a plan the
// policy maps, with positive durations, keeping at least one interval.
func (p *PlanPolicy) backupProblems() []string {
	plans := make([]string, 0, len(p.Backups))
	for plan := range p.Backups {
		plans = append(plans, plan)
	}
	sort.Strings(plans)
	var errs []string
	for _, plan := range plans {
		b := p.Backups[plan]
		if _, ok := p.Tiers[plan]; !ok {
			errs = append(errs, fmt.Sprintf("backups: plan %q is not in the policy", plan))
		}
		every, err1 := time.ParseDuration(b.Every)
		keep, err2 := time.ParseDuration(b.Keep)
		if err1 != nil || err2 != nil || every <= 0 || keep < every {
			errs = append(errs, fmt.Sprintf("backups: plan %q: every and keep must be durations (\"24h\"), every positive, keep at least every", plan))
		}
	}
	return errs
}
