// Package placement is Switchyard's placement logic: which tier a plan maps
// to, which target a tenant should go to, which moves rebalance the shared
// pools, and where the tenants of a target being drained should go.
//
// Everything here is a pure, deterministic function of its arguments: no
// Consul, no database, no clock, no randomness. The same inputs, in any order,
// give the same decision, and every decision carries a human-readable reason
// (why this target, why not that one), so a controller can log it, show it to
// an operator, and apply it with the catalog's check-and-set writes.
//
// The files follow the concerns: load.go (the inputs and capacity checks),
// policy.go (plan → tier, label constraints, cordons), residency.go (a
// tenant's regions against a target's region), choose.go (placing one
// tenant), rebalance.go (evening out the shared pools) and drain.go (emptying
// a target).
package placement

import "errors"

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrUnknownPlan means a plan is not in the plan policy.
	ErrUnknownPlan = errors.New("unknown plan")
	// ErrNoTarget means no target can take a tenant; the message says why
	// each candidate was rejected.
	ErrNoTarget = errors.New("no target fits")
	// ErrUnknownTarget means a target id is not among the targets given.
	ErrUnknownTarget = errors.New("unknown target")
	// ErrInvalidConfig means a Config or RebalanceConfig is out of range.
	ErrInvalidConfig = errors.New("invalid placement config")
	// ErrInvalidInput means loads, targets or tenants are inconsistent
	// (negative figures, duplicate ids, a move that does not apply).
	ErrInvalidInput = errors.New("invalid placement input")

	// ErrCordoned rejects a cordoned target: it takes no new tenants.
	ErrCordoned = errors.New("cordoned")
	// ErrConstraint rejects a target whose labels do not satisfy the
	// tenant's constrained labels.
	ErrConstraint = errors.New("label constraint not met")
	// ErrCapacity rejects a target that would exceed a capacity figure less
	// headroom, or a dedicated-cluster target that already holds a tenant.
	ErrCapacity = errors.New("over capacity")
	// ErrTier rejects a target of another tier than the one asked for.
	ErrTier = errors.New("wrong tier")
	// ErrResidency rejects a target outside the tenant's residency regions
	// (see ResidencyError). Choose's ErrNoTarget also wraps it when residency
	// alone excludes every other target of the tier, and so does a drain's
	// UnplacedError when it does so for some tenant.
	ErrResidency = errors.New("residency")
)
