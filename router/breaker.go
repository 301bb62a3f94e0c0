package router

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Breakers at two levels (the rule is in classify.go): one per backend
// instance, shared by every tenant it serves, and one per (tenant,
// instance), made when that tenant's requests first fail there and dropped
// when they succeed again, so only failing tenants cost memory.

// Errors from backend selection; they become 503 responses.
var (
	ErrNoHealthyBackend = errors.New("no healthy backend instance")
	ErrBreakerOpen      = errors.New("circuit breaker open for every backend instance")
)

type breaker = gobreaker.TwoStepCircuitBreaker[struct{}]

// tenantBreakers are the (tenant, instance) breakers of one instance.
type tenantBreakers struct {
	m sync.Map // tenant id → *breaker
	// lastFailed is the tenant whose request last failed on the instance:
	// a failure of another tenant's request right after it counts against
	// the instance too.
	lastFailed atomic.Pointer[string]
}

// newBreaker returns a breaker with the configured thresholds.
func (u *Upstreams) newBreaker(name string, onChange func(to gobreaker.State)) *breaker {
	cfg := u.breaker
	return gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: cfg.HalfOpenRequests,
		Interval:    10 * time.Second,
		Timeout:     cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= cfg.ConsecutiveFailures
		},
		IsExcluded: func(err error) bool {
			return errors.Is(err, errNotCounted) || errors.Is(err, context.Canceled)
		},
		OnStateChange: func(name string, from, to gobreaker.State) {
			u.log.Warn("circuit breaker changed state", "breaker", name, "from", from.String(), "to", to.String())
			onChange(to)
		},
	})
}

// instanceBreaker is the breaker every tenant of an instance shares.
func (u *Upstreams) instanceBreaker(service, addr string) *breaker {
	if u.metrics != nil {
		u.metrics.breakerState.WithLabelValues(service, addr).Set(0)
	}
	return u.newBreaker(service+"/"+addr, func(to gobreaker.State) {
		if u.metrics != nil {
			u.metrics.breakerState.WithLabelValues(service, addr).Set(float64(to))
		}
	})
}

// tenantBreaker returns the tenant's breaker on up, making it if needed.
func (u *Upstreams) tenantBreaker(up *upstream, tenant string) *breaker {
	if b, ok := up.tenants.m.Load(tenant); ok {
		return b.(*breaker)
	}
	b := u.newBreaker(up.service+"/"+up.addr+"/tenant:"+tenant, func(to gobreaker.State) {
		if to == gobreaker.StateOpen && u.metrics != nil {
			u.metrics.tenantTrips.WithLabelValues(up.service).Inc()
		}
	})
	got, _ := up.tenants.m.LoadOrStore(tenant, b)
	return got.(*breaker)
}

// ticket is one request's pass through an instance's breakers; report
// ends it with the outcome.
type ticket struct {
	u      *Upstreams
	up     *upstream
	tenant string
	inst   func(error)
	tdone  func(error) // nil: the tenant has no breaker on this instance
}

// pick returns a ticket for the next instance, round-robin, whose breakers
// (the instance's and the tenant's there) let the request through,
// skipping exclude.
func (p *pool) pick(u *Upstreams, tenant string, exclude *upstream) (ticket, error) {
	if p == nil {
		return ticket{}, ErrNoHealthyBackend
	}
	list := *p.instances.Load()
	n := len(list)
	start := p.next.Add(1)
	sawCandidate := false
	for i := 0; i < n; i++ {
		up := list[(int(start)+i)%n]
		if up == exclude {
			continue
		}
		sawCandidate = true
		t := ticket{u: u, up: up, tenant: tenant}
		if b, ok := up.tenants.m.Load(tenant); ok {
			done, err := b.(*breaker).Allow()
			if err != nil {
				continue
			}
			t.tdone = done
		}
		done, err := up.breaker.Allow()
		if err != nil {
			if t.tdone != nil {
				t.tdone(errNotCounted)
			}
			continue
		}
		t.inst = done
		return t, nil
	}
	if !sawCandidate {
		return ticket{}, ErrNoHealthyBackend
	}
	return ticket{}, ErrBreakerOpen
}

// report ends the ticket: err is the exchange's failure (nil if the backend
// answered; errBackendStatus if it answered 502, 503 or 504).
func (t ticket) report(err error) {
	switch classify(err) {
	case faultNone:
		t.inst(nil)
		if t.tdone != nil {
			t.tdone(nil)
			t.dropTenantBreakerIfHealthy()
		}
	case faultClient:
		t.inst(errNotCounted)
		if t.tdone != nil {
			t.tdone(errNotCounted)
		}
	case faultInstance:
		t.inst(err)
		if t.tdone != nil {
			t.tdone(errNotCounted)
		}
	case faultTenant:
		t.tenantFailure(err)
	}
}

// tenantFailure counts a failure of the tenant's request on the instance:
// against the tenant's breaker there, and against the instance's only when
// the previous failure there was another tenant's, and never for an HTTP
// answer (the instance is up and talking).
func (t ticket) tenantFailure(err error) {
	tenant := t.tenant
	prev := t.up.tenants.lastFailed.Swap(&tenant)
	if !errors.Is(err, errBackendStatus) && prev != nil && *prev != tenant {
		t.inst(err)
	} else {
		t.inst(errNotCounted)
	}
	if t.tdone != nil {
		t.tdone(err)
		return
	}
	b := t.u.tenantBreaker(t.up, tenant)
	if done, aerr := b.Allow(); aerr == nil {
		done(err)
	}
}

// dropTenantBreakerIfHealthy forgets a tenant breaker that is closed with
// no failure pending: the tenant is well again on this instance.
func (t ticket) dropTenantBreakerIfHealthy() {
	v, ok := t.up.tenants.m.Load(t.tenant)
	if !ok {
		return
	}
	b := v.(*breaker)
	if b.State() == gobreaker.StateClosed && b.Counts().ConsecutiveFailures == 0 {
		t.up.tenants.m.CompareAndDelete(t.tenant, b)
	}
}

// breakerOpen reports whether err came from an open breaker.
func breakerOpen(err error) bool {
	return errors.Is(err, ErrBreakerOpen) || errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests)
}
