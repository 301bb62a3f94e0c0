package router

import (
	"encoding/json"
	"hash/maphash"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/internal/ratelimit"
)

// Per-tenant limits (README "Per-tenant limits"): each engine makes one
// admission call, after resolve has counted the request in flight and
// before anything is sent to a backend — Proxy.admit on the fast path,
// Proxy.admitHTTP (which also caps a chunked body) on net/http. Both come
// down to limiter.admit. A refused request gets 429 (or 413) with the
// limit named, and never reaches a backend.

// maxRetryAfter caps the Retry-After of a rate-limited answer (seconds).
const maxRetryAfter = 60

// limiterIdle is the least time a tenant's bucket is kept unused before it
// is dropped (it is dropped only once it would be full again anyway).
const limiterIdle = time.Minute

const limiterShards = 64

var limiterSeed = maphash.MakeSeed()

// limiter holds this router's limit state: a token bucket per tenant with
// a rate limit that sent requests lately, and the share of each tenant's
// limits this router enforces (limits_shares.go).
type limiter struct {
	shards  [limiterShards]limiterShard
	shares  atomic.Pointer[shareTable]
	limited *prometheus.CounterVec // by limit, never by tenant
}

type limiterShard struct {
	mu sync.Mutex
	t  map[string]*tenantBucket
}

// tenantBucket is one tenant's bucket, with the rate and burst it was last
// used at (to tell when it is full again and can go).
type tenantBucket struct {
	b           ratelimit.Bucket
	rate, burst float64
}

func newLimiter(reg prometheus.Registerer) *limiter {
	l := &limiter{limited: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchyard_router_limited_total",
		Help: "Requests refused by a tenant limit (429 or 413), by limit.",
	}, []string{"limit"})}
	reg.MustRegister(l.limited)
	for i := range l.shards {
		l.shards[i].t = map[string]*tenantBucket{}
	}
	l.shares.Store(&shareTable{routers: 1})
	return l
}

var (
	errRateLimited        = rateLimitedErrors()
	errConcurrencyLimited = &routeError{http.StatusTooManyRequests, "concurrency_limited", "the tenant has as many requests in flight as its concurrent_requests limit allows", 1}
	errTenantBodyTooLarge = &routeError{http.StatusRequestEntityTooLarge, "body_too_large", "the request body exceeds the tenant's max_body_bytes limit", 0}
)

// rateLimitedErrors are the 429 answers by Retry-After, made once so a
// refusal allocates nothing.
func rateLimitedErrors() []*routeError {
	out := make([]*routeError, maxRetryAfter+1)
	for s := range out {
		out[s] = &routeError{http.StatusTooManyRequests, "rate_limited", "the tenant is over its requests_per_second limit", max(s, 1)}
	}
	return out
}

// limitOfCode names the limit an error code refuses by, in the JSON body.
func limitOfCode(code string) string {
	switch code {
	case "rate_limited":
		return catalog.LimitRequestsPerSecond
	case "concurrency_limited":
		return catalog.LimitConcurrentRequests
	case "body_too_large":
		return catalog.LimitMaxBodyBytes
	}
	return ""
}

// MarshalJSON adds the limit an answer names ("limit") to the router's
// error body, on both engines.
func (e apiError) MarshalJSON() ([]byte, error) {
	type plain apiError
	return json.Marshal(struct {
		plain
		Limit string `json:"limit,omitempty"`
	}{plain(e), limitOfCode(e.Error)})
}

// admit is the fast path's admission hook: nil lets the request through.
// The tenant's limits come from the current snapshot (a policy or
// override change applies from the next request).
func (p *Proxy) admit(route catalog.Route, entry *InflightEntry, contentLength int64) *routeError {
	lim := p.catalog.Snapshot().Limits(route)
	if lim.IsZero() {
		return nil
	}
	return p.limits.admit(route.ID, lim, entry, contentLength, monoNow())
}

// admitHTTP is the net/http engine's admission hook: admit, and a body of
// unknown length (chunked) capped at the tenant's limit as it is read.
func (p *Proxy) admitHTTP(w http.ResponseWriter, rec *statusRecorder, r *http.Request, route catalog.Route, entry *InflightEntry) *routeError {
	e := p.admit(route, entry, r.ContentLength)
	if e == errTenantBodyTooLarge {
		// As for the router's own limit: not worth reading.
		closeUnread(rec, r)
	}
	if e != nil {
		return e
	}
	if br, ok := r.Body.(*bodyReader); ok && r.ContentLength < 0 {
		if lim := p.catalog.Snapshot().Limits(route); lim.MaxBodyBytes > 0 {
			br.rc = http.MaxBytesReader(w, br.rc, lim.MaxBodyBytes)
		}
	}
	return nil
}

// admit checks one request of tenant against lim (not zero), in this
// order: body size, requests in flight (entry counts this one), the token
// bucket. Only an admitted request takes a token.
func (l *limiter) admit(tenant string, lim catalog.Limits, entry *InflightEntry, contentLength int64, now int64) *routeError {
	if lim.MaxBodyBytes > 0 && contentLength > lim.MaxBodyBytes {
		l.limited.WithLabelValues(catalog.LimitMaxBodyBytes).Inc()
		return errTenantBodyTooLarge
	}
	if lim.ConcurrentRequests == 0 && lim.RequestsPerSecond == 0 {
		return nil
	}
	frac := l.fraction(tenant, lim)
	if lim.ConcurrentRequests > 0 && float64(entry.inFlight()) > ratelimit.Share(float64(lim.ConcurrentRequests), frac, 1) {
		l.limited.WithLabelValues(catalog.LimitConcurrentRequests).Inc()
		return errConcurrencyLimited
	}
	if lim.RequestsPerSecond == 0 {
		return nil
	}
	rate := lim.RequestsPerSecond * frac
	burst := ratelimit.Share(float64(lim.Burst), frac, 1)
	s := &l.shards[maphash.String(limiterSeed, tenant)%limiterShards]
	s.mu.Lock()
	tb := s.t[tenant]
	if tb == nil {
		tb = &tenantBucket{}
		s.t[strings.Clone(tenant)] = tb // tenant may point into a read buffer
	}
	tb.rate, tb.burst = rate, burst
	ok, wait := tb.b.Take(now, rate, burst)
	s.mu.Unlock()
	if ok {
		return nil
	}
	l.limited.WithLabelValues(catalog.LimitRequestsPerSecond).Inc()
	return errRateLimited[int(math.Min(math.Ceil(wait), maxRetryAfter))]
}

// sweep drops the buckets of tenants idle for a while whose bucket is full
// again: the state held stays bounded by the tenants active lately.
func (l *limiter) sweep(now int64) (kept int) {
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for id, tb := range s.t {
			if tb.b.Idle(now, tb.rate, tb.burst, int64(limiterIdle)) {
				delete(s.t, id)
			}
		}
		kept += len(s.t)
		s.mu.Unlock()
	}
	return kept
}

// inFlight is the tenant's requests in flight on this router, this one
// included.
func (c *tenantCount) inFlight() int {
	c.shard.mu.Lock()
	defer c.shard.mu.Unlock()
	return c.inflight
}
