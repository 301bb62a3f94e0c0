package placement

import (
	"fmt"
	"sort"
	"strings"

	"github.com/switchyard/switchyard/catalog"
)

// TierFor returns the tier the policy maps a plan to. An unmapped plan is
// ErrUnknownPlan; a plan mapped to something that is not a tier is
// ErrInvalidConfig.
func TierFor(policy catalog.PlanPolicy, plan string) (catalog.Tier, error) {
	tier, ok := policy.Tiers[plan]
	if !ok {
		known := make([]string, 0, len(policy.Tiers))
		for p := range policy.Tiers {
			known = append(known, p)
		}
		sort.Strings(known)
		return "", fmt.Errorf("%w: %q (policy maps %s)", ErrUnknownPlan, plan, listOrNone(known))
	}
	if !tier.Valid() {
		return "", fmt.Errorf("%w: plan %q maps to %q, which is not a tier", ErrInvalidConfig, plan, tier)
	}
	return tier, nil
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "no plans"
	}
	return strings.Join(s, ", ")
}

// DefaultConstraintKeys returns the label keys that constrain placement when
// Config.ConstraintKeys is nil: region, residency and compliance.
func DefaultConstraintKeys() []string {
	return []string{"region", "residency", "compliance"}
}

// Config is what every placement decision is made under.
type Config struct {
	// Headroom is the share of each capacity figure kept free.
	Headroom Headroom
	// ConstraintKeys are the label keys a tenant's labels constrain: for
	// every such key a tenant has a label for, the target must carry the
	// same label with the same value (tenant region=eu needs a target
	// labelled region=eu). Tenant labels with other keys do not constrain.
	// Nil means DefaultConstraintKeys(); an empty, non-nil slice turns label
	// constraints off.
	ConstraintKeys []string
}

// DefaultConfig is no headroom and the default constraint keys.
func DefaultConfig() Config { return Config{} }

// Validate checks the headroom and the constraint keys.
func (c Config) Validate() error {
	if err := c.Headroom.Validate(); err != nil {
		return err
	}
	for _, k := range c.ConstraintKeys {
		if k == "" {
			return fmt.Errorf("%w: empty constraint key", ErrInvalidConfig)
		}
	}
	return nil
}

// constraintKeys returns the effective keys, deduplicated, in config order.
func (c Config) constraintKeys() []string {
	if c.ConstraintKeys == nil {
		return DefaultConstraintKeys()
	}
	out := make([]string, 0, len(c.ConstraintKeys))
	for _, k := range c.ConstraintKeys {
		dup := false
		for _, o := range out {
			dup = dup || o == k
		}
		if !dup {
			out = append(out, k)
		}
	}
	return out
}

// Eligible reports whether the target may take the tenant, capacity aside:
// the target must not be cordoned (ErrCordoned), must be in one of the
// tenant's residency regions (a *ResidencyError, ErrResidency), and for
// every constraint key the tenant has a label for, the target must have the
// same label value (ErrConstraint). The error names every unmet constraint.
func Eligible(tenant catalog.Tenant, target catalog.Target, cfg Config) error {
	return eligible(&tenant, target, cfg.constraintKeys())
}

func eligible(tenant *catalog.Tenant, target catalog.Target, keys []string) error {
	if err := CheckResidency(tenant, &target); err != nil {
		return err
	}
	labels := tenant.Labels
	if target.Cordoned {
		return fmt.Errorf("%w: takes no new tenants", ErrCordoned)
	}
	if err := labelsMatch(labels, target.Labels, keys); err != "" {
		return fmt.Errorf("%w: %s", ErrConstraint, err)
	}
	return nil
}

// labelsOK reports whether every constrained tenant label is on the target.
func labelsOK(tenant, target map[string]string, keys []string) bool {
	for _, k := range keys {
		if want, ok := tenant[k]; ok {
			if have, ok := target[k]; !ok || have != want {
				return false
			}
		}
	}
	return true
}

// labelsMatch returns "" when every constrained tenant label is on the
// target, else what is missing.
func labelsMatch(tenant, target map[string]string, keys []string) string {
	if len(tenant) == 0 {
		return ""
	}
	var why []string
	for _, k := range keys {
		want, ok := tenant[k]
		if !ok {
			continue
		}
		have, ok := target[k]
		switch {
		case !ok:
			why = append(why, fmt.Sprintf("tenant requires %s=%s, target has no %s label", k, want, k))
		case have != want:
			why = append(why, fmt.Sprintf("tenant requires %s=%s, target has %s=%s", k, want, k, have))
		}
	}
	return strings.Join(why, "; ")
}
