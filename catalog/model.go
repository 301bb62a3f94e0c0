// Package catalog is Switchyard's tenant catalog: which plan, tier and target
// every tenant has, and which targets exist. It lives in Consul KV; every write
// is a check-and-set, and readers keep an immutable in-memory snapshot that a
// blocking-query loop swaps atomically, so no request ever waits on Consul.
package catalog

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
)

// Tier is where a tenant's data and app backends live.
type Tier string

// The three tiers.
const (
	TierShared           Tier = "shared"            // one shared pool database, rows carry tenant_id
	TierDedicatedDB      Tier = "dedicated-db"      // the tenant's own database, shared app fleet
	TierDedicatedCluster Tier = "dedicated-cluster" // own PostgreSQL server and own app backends
)

// Tiers lists the valid tiers in a stable order.
var Tiers = []Tier{TierShared, TierDedicatedDB, TierDedicatedCluster}

// Valid reports whether t is one of the known tiers.
func (t Tier) Valid() bool {
	switch t {
	case TierShared, TierDedicatedDB, TierDedicatedCluster:
		return true
	}
	return false
}

// State is a tenant's lifecycle state as routers see it.
type State string

// Tenant states.
const (
	// StateActive: requests are forwarded to the tenant's target.
	StateActive State = "active"
	// StateFrozen: a cutover is in progress; routers hold the tenant's new
	// requests (up to a deadline) until the state changes.
	StateFrozen State = "frozen"
	// StateDisabled: the tenant exists but is not served (offboarding).
	StateDisabled State = "disabled"
)

// Valid reports whether s is a known state.
func (s State) Valid() bool {
	switch s {
	case StateActive, StateFrozen, StateDisabled:
		return true
	}
	return false
}

// Sentinel errors callers branch on.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrConflict means a check-and-set lost to a concurrent writer.
	ErrConflict = errors.New("concurrent modification")
	ErrInvalid  = errors.New("invalid")
	// ErrNotInitialized means the catalog manifest does not exist in Consul.
	ErrNotInitialized = errors.New("catalog not initialized")
)

// ValidID reports whether s can be used as a tenant, target or plan id:
// a DNS label (^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$), so a tenant id can be
// a Host subdomain and a database name suffix. Written out rather than a
// regexp: the router checks every request's tenant with it.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Tenant is one customer of the SaaS product.
type Tenant struct {
	ID     string            `json:"id"`
	Plan   string            `json:"plan"`
	Tier   Tier              `json:"tier"`
	Target string            `json:"target"`
	State  State             `json:"state"`
	Epoch  uint64            `json:"epoch"`
	Labels map[string]string `json:"labels,omitempty"`
	// Limits overrides the plan's limits for this tenant (nil: the plan's).
	Limits *LimitsOverride `json:"limits,omitempty"`
	// Residency lists the regions the tenant's data may live in (empty: any).
	Residency []string `json:"residency,omitempty"`
}

// Validate checks every field and says which one is wrong.
func (t *Tenant) Validate() error {
	var errs []string
	if !ValidID(t.ID) {
		errs = append(errs, fmt.Sprintf("id %q must be a lowercase DNS label (a-z, 0-9, '-', at most 63)", t.ID))
	}
	if !ValidID(t.Plan) {
		errs = append(errs, fmt.Sprintf("plan %q must be a lowercase identifier", t.Plan))
	}
	if !t.Tier.Valid() {
		errs = append(errs, fmt.Sprintf("tier %q must be one of shared, dedicated-db, dedicated-cluster", t.Tier))
	}
	if !ValidID(t.Target) {
		errs = append(errs, fmt.Sprintf("target %q must be a lowercase identifier", t.Target))
	}
	if !t.State.Valid() {
		errs = append(errs, fmt.Sprintf("state %q must be one of active, frozen, disabled", t.State))
	}
	errs = append(errs, validateLabels(t.Labels)...)
	if err := t.Limits.Validate(); err != nil {
		errs = append(errs, "limits: "+err.Error())
	}
	errs = append(errs, residencyProblems(t.Residency)...)
	return joinInvalid(errs)
}

// Capacity is how much a target may hold. Zero means unlimited.
type Capacity struct {
	Tenants int     `json:"tenants,omitempty"`
	Bytes   int64   `json:"bytes,omitempty"`
	RPS     float64 `json:"rps,omitempty"`
}

// Target is a place tenants live: a shared pool, a server for dedicated
// databases, or a dedicated cluster.
type Target struct {
	ID string `json:"id"`
	// Tier is the kind of tenants this target serves.
	Tier Tier `json:"tier"`
	// Service is the Consul service name of the app backends serving it.
	Service string `json:"service"`
	// DSN locates the PostgreSQL database. For a dedicated-db target it names
	// the server; each tenant's database is DatabaseFor(tenant).
	DSN      string            `json:"dsn"`
	Capacity Capacity          `json:"capacity,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Cordoned targets take no new tenants.
	Cordoned bool `json:"cordoned,omitempty"`
	// BackendProtocol is what the app backends speak: "" or "http1"
	// (HTTP/1.1), "h2c" (HTTP/2 in cleartext, e.g. gRPC), "h2" (HTTP/2
	// over TLS).
	BackendProtocol string `json:"backend_protocol,omitempty"`
}

// Backend protocols (Target.BackendProtocol).
const (
	BackendHTTP1 = "http1"
	BackendH2C   = "h2c"
	BackendH2    = "h2"
)

// HTTP2Backend reports whether the target's backends speak HTTP/2.
func (t *Target) HTTP2Backend() bool {
	return t.BackendProtocol == BackendH2C || t.BackendProtocol == BackendH2
}

// Validate checks every field and says which one is wrong.
func (t *Target) Validate() error {
	var errs []string
	if !ValidID(t.ID) {
		errs = append(errs, fmt.Sprintf("id %q must be a lowercase DNS label", t.ID))
	}
	if !t.Tier.Valid() {
		errs = append(errs, fmt.Sprintf("tier %q must be one of shared, dedicated-db, dedicated-cluster", t.Tier))
	}
	if !ValidID(t.Service) {
		errs = append(errs, fmt.Sprintf("service %q must be a Consul service name (lowercase DNS label)", t.Service))
	}
	if u, err := url.Parse(t.DSN); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		errs = append(errs, "dsn must be a postgres:// URL with a host")
	}
	if t.Capacity.Tenants < 0 || t.Capacity.Bytes < 0 || t.Capacity.RPS < 0 {
		errs = append(errs, "capacity figures must not be negative")
	}
	errs = append(errs, validateLabels(t.Labels)...)
	switch t.BackendProtocol {
	case "", BackendHTTP1, BackendH2C, BackendH2:
	default:
		errs = append(errs, fmt.Sprintf("backend_protocol %q must be http1, h2c or h2", t.BackendProtocol))
	}
	return joinInvalid(errs)
}

// DatabaseName is the name of a dedicated-db tenant's own database.
func DatabaseName(tenantID string) string {
	return "tenant_" + strings.ReplaceAll(tenantID, "-", "_")
}

// DSNFor returns the DSN a tenant's data lives at on this target.
func (t *Target) DSNFor(tenantID string) (string, error) {
	if t.Tier != TierDedicatedDB {
		return t.DSN, nil
	}
	u, err := url.Parse(t.DSN)
	if err != nil {
		return "", fmt.Errorf("target %s: %w: dsn: %w", t.ID, ErrInvalid, err)
	}
	u.Path = "/" + DatabaseName(tenantID)
	return u.String(), nil
}

// PlanPolicy maps plans to tiers, and to the limits of their tenants.
type PlanPolicy struct {
	Tiers map[string]Tier `json:"tiers"`
	// Limits are per plan; a plan without an entry has no limits.
	Limits map[string]Limits `json:"limits,omitempty"`
	// Backups are per plan; a plan without an entry is not backed up on a
	// schedule.
	Backups map[string]BackupPlan `json:"backups,omitempty"`
}

// DefaultPlanPolicy is free/starter → shared, pro → dedicated-db,
// enterprise → dedicated-cluster.
func DefaultPlanPolicy() PlanPolicy {
	return PlanPolicy{Tiers: map[string]Tier{
		"free":       TierShared,
		"starter":    TierShared,
		"pro":        TierDedicatedDB,
		"enterprise": TierDedicatedCluster,
	}}
}

// Validate checks every plan and tier.
func (p *PlanPolicy) Validate() error {
	var errs []string
	if len(p.Tiers) == 0 {
		errs = append(errs, "policy must map at least one plan")
	}
	plans := make([]string, 0, len(p.Tiers))
	for plan := range p.Tiers {
		plans = append(plans, plan)
	}
	sort.Strings(plans)
	for _, plan := range plans {
		if !ValidID(plan) {
			errs = append(errs, fmt.Sprintf("plan %q must be a lowercase identifier", plan))
		}
		if tier := p.Tiers[plan]; !tier.Valid() {
			errs = append(errs, fmt.Sprintf("plan %q: tier %q is not a tier", plan, tier))
		}
	}
	errs = append(errs, p.limitProblems()...)
	errs = append(errs, p.backupProblems()...)
	return joinInvalid(errs)
}

var labelKeyPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/-]{0,62})$`)

func validateLabels(labels map[string]string) []string {
	var errs []string
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !labelKeyPattern.MatchString(k) {
			errs = append(errs, fmt.Sprintf("label key %q must match %s", k, labelKeyPattern))
		}
		if v := labels[k]; len(v) > 253 || strings.ContainsAny(v, "\t\n\r") {
			errs = append(errs, fmt.Sprintf("label %q: value must be at most 253 characters without tabs or newlines", k))
		}
	}
	return errs
}

func joinInvalid(errs []string) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
}
