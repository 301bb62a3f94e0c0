// Package ratelimit is the pure arithmetic of Switchyard's per-tenant
// limits: a token bucket driven by the caller's clock, and the share of a
// tenant's limit one of N routers enforces. No I/O, no clocks, no locks:
// the router owns those.
package ratelimit

import "math"

// Bucket is a token bucket's state. The zero Bucket is full the first time
// it is used. Not safe for concurrent use.
type Bucket struct {
	tokens float64
	last   int64 // the caller's clock, nanoseconds, at the last Take
	used   bool
}

// Take refills the bucket for the time since its last use at rate tokens a
// second up to burst, then takes one token if there is one. It reports
// whether it did and, if not, how long until one is there. A rate or burst
// that changed since the last call applies from now on (a smaller burst
// cuts the tokens down to it).
func (b *Bucket) Take(now int64, rate, burst float64) (ok bool, wait float64) {
	if !b.used {
		b.tokens, b.last, b.used = burst, now, true
	}
	if el := now - b.last; el > 0 {
		b.tokens += float64(el) / 1e9 * rate
		b.last = now
	}
	if b.tokens > burst {
		b.tokens = burst
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	if rate <= 0 {
		return false, math.Inf(1)
	}
	return false, (1 - b.tokens) / rate
}

// Idle reports whether the bucket has been unused long enough to be full
// again at rate up to burst, and at least minIdle: dropping it then and
// starting afresh (full) is exactly the same as keeping it.
func (b *Bucket) Idle(now int64, rate, burst float64, minIdle int64) bool {
	if !b.used {
		return true
	}
	el := now - b.last
	if el < minIdle {
		return false
	}
	return rate > 0 && b.tokens+float64(el)/1e9*rate >= burst
}

// Demand is what the routers report of one tenant: requests a second this
// router saw (Self, admitted or not) and all live routers together (Total,
// Self included).
type Demand struct {
	Self, Total float64
}

// idleWeight is the demand an idle router is credited with, as a fraction
// of the limit spread over the routers: enough that a router where the
// tenant is quiet can still admit a request or two at once, small enough
// that a flood on one router gets nearly the whole limit.
const idleWeight = 0.05

// Fraction is the part of a tenant's limit one of routers (≥ 1) live
// routers enforces, given the demand they all published for the tenant
// and the limit (any unit of it: requests a second). The fractions of all
// routers, computed from the same published demand, add up to 1:
//
//   - no demand anywhere: 1/routers each (the static share);
//   - total demand within the limit: each router its own demand plus an
//     equal part of the headroom, so none is held below what it sees;
//   - total demand over the limit: each router in proportion to its
//     demand plus a small idle weight, so a router flooded while the others
//     are idle gets nearly the whole limit, and every router turns away
//     the same part of what it sees.
func Fraction(limit float64, d Demand, routers int) float64 {
	n := float64(max(routers, 1))
	if limit <= 0 || d.Total <= 0 || d.Self < 0 || d.Self > d.Total {
		return 1 / n
	}
	if headroom := limit - d.Total; headroom >= 0 {
		return (d.Self + headroom/n) / limit
	}
	phi := idleWeight * limit / n
	return (d.Self + phi) / (d.Total + n*phi)
}

// Share scales a limit by a router's fraction, never below min: a router's
// burst or concurrency must allow at least one request, or the tenant
// could get nothing there at all.
func Share(limit, fraction, min float64) float64 {
	return math.Max(limit*fraction, min)
}
