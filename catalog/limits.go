package catalog

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Limits are what a plan lets each of its tenants do, across every router
// together. A zero field is no limit.
type Limits struct {
	// RequestsPerSecond is the token bucket's refill rate.
	RequestsPerSecond float64 `json:"requests_per_second,omitempty"`
	// Burst is the token bucket's size: requests that may arrive at once
	// after a quiet spell. At least 1 whenever RequestsPerSecond is set.
	Burst int64 `json:"burst,omitempty"`
	// ConcurrentRequests caps the tenant's requests in flight.
	ConcurrentRequests int64 `json:"concurrent_requests,omitempty"`
	// MaxBodyBytes caps one request's body (below the router's own cap).
	MaxBodyBytes int64 `json:"max_body_bytes,omitempty"`
}

// LimitsOverride is one tenant's exception to its plan's Limits: a field
// left out (nil) keeps the plan's value, a zero lifts that limit.
// RequestsPerSecond and Burst are set together or not at all.
type LimitsOverride struct {
	RequestsPerSecond  *float64 `json:"requests_per_second,omitempty"`
	Burst              *int64   `json:"burst,omitempty"`
	ConcurrentRequests *int64   `json:"concurrent_requests,omitempty"`
	MaxBodyBytes       *int64   `json:"max_body_bytes,omitempty"`
}

// The limits' names, as the API, the router's 429/413 bodies and the
// errors name them.
const (
	LimitRequestsPerSecond  = "requests_per_second"
	LimitBurst              = "burst"
	LimitConcurrentRequests = "concurrent_requests"
	LimitMaxBodyBytes       = "max_body_bytes"
)

// FieldError is an invalid value and the field it was given for. It wraps
// ErrInvalid, so callers that only tell bad input apart still can.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// Unwrap makes a FieldError an ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// maxRate bounds a requests-per-second figure (a typo guard, not a policy).
const maxRate = 1e9

// IsZero reports whether l limits nothing.
func (l Limits) IsZero() bool { return l == Limits{} }

// Validate returns a *FieldError for the first field that makes no sense.
func (l Limits) Validate() error {
	return validateLimitFields(&l.RequestsPerSecond, &l.Burst, &l.ConcurrentRequests, &l.MaxBodyBytes)
}

// Validate returns a *FieldError for the first field that makes no sense.
func (o *LimitsOverride) Validate() error {
	if o == nil {
		return nil
	}
	if (o.RequestsPerSecond == nil) != (o.Burst == nil) {
		missing := LimitBurst
		if o.RequestsPerSecond == nil {
			missing = LimitRequestsPerSecond
		}
		return &FieldError{Field: missing, Problem: "requests_per_second and burst are set together"}
	}
	return validateLimitFields(o.RequestsPerSecond, o.Burst, o.ConcurrentRequests, o.MaxBodyBytes)
}

// validateLimitFields checks the fields given (nil: not given).
func validateLimitFields(rps *float64, burst, conc, body *int64) error {
	if rps != nil && (math.IsNaN(*rps) || *rps < 0 || *rps > maxRate) {
		return &FieldError{Field: LimitRequestsPerSecond, Problem: fmt.Sprintf("must be from 0 (no limit) to %g", maxRate)}
	}
	for _, f := range []struct {
		name string
		v    *int64
	}{{LimitBurst, burst}, {LimitConcurrentRequests, conc}, {LimitMaxBodyBytes, body}} {
		if f.v != nil && *f.v < 0 {
			return &FieldError{Field: f.name, Problem: "must not be negative (0 is no limit)"}
		}
	}
	if rps != nil && burst != nil {
		if *rps > 0 && *burst < 1 {
			return &FieldError{Field: LimitBurst, Problem: "must be at least 1 when requests_per_second is set"}
		}
		if *rps == 0 && *burst != 0 {
			return &FieldError{Field: LimitBurst, Problem: "means nothing without requests_per_second"}
		}
	}
	return nil
}

// With returns l changed by o's fields (o may be nil).
func (l Limits) With(o *LimitsOverride) Limits {
	if o == nil {
		return l
	}
	if o.RequestsPerSecond != nil && o.Burst != nil {
		l.RequestsPerSecond, l.Burst = *o.RequestsPerSecond, *o.Burst
	}
	if o.ConcurrentRequests != nil {
		l.ConcurrentRequests = *o.ConcurrentRequests
	}
	if o.MaxBodyBytes != nil {
		l.MaxBodyBytes = *o.MaxBodyBytes
	}
	return l
}

// limitProblems checks the policy's limits: each names a plan the policy
// maps, and makes sense.
func (p *PlanPolicy) limitProblems() []string {
	plans := make([]string, 0, len(p.Limits))
	for plan := range p.Limits {
		plans = append(plans, plan)
	}
	sort.Strings(plans)
	var errs []string
	for _, plan := range plans {
		if _, ok := p.Tiers[plan]; !ok {
			errs = append(errs, fmt.Sprintf("limits: plan %q is not in the policy", plan))
			continue
		}
		if err := p.Limits[plan].Validate(); err != nil {
			errs = append(errs, fmt.Sprintf("limits of plan %q: %v", plan, err))
		}
	}
	return errs
}

// encodeOverride is the bucket line's limits field: the fields set, in a
// fixed order (so equal overrides encode equally and intern as one), ""
// for none.
func encodeOverride(o *LimitsOverride) string {
	if o == nil {
		return ""
	}
	var parts []string
	if o.RequestsPerSecond != nil && o.Burst != nil {
		parts = append(parts, "rps="+strconv.FormatFloat(*o.RequestsPerSecond, 'g', -1, 64), "burst="+strconv.FormatInt(*o.Burst, 10))
	}
	if o.ConcurrentRequests != nil {
		parts = append(parts, "concurrent="+strconv.FormatInt(*o.ConcurrentRequests, 10))
	}
	if o.MaxBodyBytes != nil {
		parts = append(parts, "body="+strconv.FormatInt(*o.MaxBodyBytes, 10))
	}
	return strings.Join(parts, "&")
}

// decodeOverride reads encodeOverride's form ("" is no override).
func decodeOverride(s string) (LimitsOverride, error) {
	var o LimitsOverride
	if s == "" {
		return o, nil
	}
	for _, part := range strings.Split(s, "&") {
		k, v, _ := strings.Cut(part, "=")
		if k == "rps" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return o, fmt.Errorf("limits %q: %w", s, err)
			}
			o.RequestsPerSecond = &f
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return o, fmt.Errorf("limits %q: %w", s, err)
		}
		switch k {
		case "burst":
			o.Burst = &n
		case "concurrent":
			o.ConcurrentRequests = &n
		case "body":
			o.MaxBodyBytes = &n
		default:
			return o, fmt.Errorf("limits %q: unknown field %q", s, k)
		}
	}
	return o, o.Validate()
}
