package router

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/internal/retry"
)

// The router's lease (README "The router's lease"): a cutover waits for the
// acknowledgement of every router whose Consul session is alive, and for no
// other. So a router may forward on its snapshot only while its session is
// certainly alive: until LeaseTTL after it *sent* its last successful
// renewal (Consul keeps a session at least its TTL — in fact twice — after
// it *received* that renewal, and the lease TTL is never longer than the
// session's). A router that stalled (a GC pause, SIGSTOP, a frozen VM) or
// lost Consul for longer forwards nothing until it has renewed or
// re-registered and then read the catalog manifest afresh (Watcher.Confirm),
// which shows any flip made without it.

// leaseBase anchors the lease's monotonic clock.
var leaseBase = time.Now()

func monoNow() int64 { return int64(time.Since(leaseBase)) }

// lease says whether this router may forward on its snapshot.
type lease struct {
	ttl   time.Duration
	until atomic.Int64 // monoNow() before which forwarding is allowed; 0: never held
}

// valid reports whether the router may forward now. A nil lease (a proxy
// without a router around it: tests, embedding) always may.
func (l *lease) valid() bool {
	return l == nil || monoNow() < l.until.Load()
}

// extend moves the lease to ttl after sentAt, the send time of a renewal
// (or registration) Consul acknowledged.
func (l *lease) extend(sentAt int64) {
	next := sentAt + int64(l.ttl)
	for {
		cur := l.until.Load()
		if next <= cur || l.until.CompareAndSwap(cur, next) {
			return
		}
	}
}

// wait waits up to max for the lease to be valid again.
func (l *lease) wait(ctx context.Context, max time.Duration) bool {
	deadline := time.Now().Add(max)
	for !l.valid() {
		if time.Now().After(deadline) || retry.Sleep(ctx, 10*time.Millisecond) != nil {
			return false
		}
	}
	return true
}

// keepAlive renews sess every third of the lease TTL, extending the lease
// after each renewal Consul acknowledged (with the registration key written
// again after it: catalog.RouterRegistration); a renewal whose answer comes
// after the lease lapsed extends it only once the snapshot is confirmed
// current. It returns when the session is gone (register again) or ctx
// ends.
//
// Validity is judged when the answer arrives, not when the renewal was
// sent: a migrator may skip this router once it has seen the key unchanged
// for the TTL, and a renewal sent before that moment but committed after it
// must not bring back, unconfirmed, a lease that lapsed meanwhile.
func (a *acknowledger) keepAlive(ctx context.Context, sess *catalog.RouterSession, registeredAt int64) error {
	l := a.r.lease
	sentAt := registeredAt
	for {
		if sentAt >= 0 && !l.valid() {
			if err := a.r.watcher.Confirm(ctx); err != nil {
				a.r.log.Warn("router lease: catalog not confirmed; not forwarding", "err", err)
				sentAt = -1 // renew again before trusting the session
			}
		}
		if sentAt >= 0 {
			l.extend(sentAt)
		}
		if retry.Sleep(ctx, l.ttl/3) != nil {
			return ctx.Err()
		}
		sentAt = monoNow()
		rctx, cancel := context.WithTimeout(ctx, l.ttl/3)
		err := sess.Renew(rctx)
		cancel()
		if errors.Is(err, catalog.ErrSessionGone) {
			return err
		}
		if err != nil {
			a.r.log.Warn("router lease: renewal failed", "err", err)
			sentAt = -1
		}
	}
}
