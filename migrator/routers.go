package migrator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/internal/retry"
)

// routerClock tells a router that stalled (SIGSTOP, a GC pause, a frozen
// VM) from one that is slow to acknowledge, by this migrator's own clock:
// a router writes its registration key after every session renewal, so
// its ModifyIndex moves every third of its lease while it runs. Once the
// same index has been seen for longer than the router's lease, counted
// from when this migrator first saw it, the router's lease has lapsed
// (router/lease.go): it forwards nothing until it has read the catalog
// afresh, which shows the freeze. A cutover may then go on without its
// acknowledgement. Wall clocks of other processes are never compared.
type routerClock struct {
	mu   sync.Mutex
	seen map[string]indexSeen // router id → its key's index and when first seen
}

type indexSeen struct {
	index uint64
	at    time.Time
	lease time.Duration // the router's declared lease; 0: never skipped
}

// observe records the registrations; it returns the ids of those whose
// lease has certainly lapsed (skippable) as of now.
func (c *routerClock) observe(regs []catalog.RouterRegistration, now time.Time) map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := make(map[string]indexSeen, len(regs))
	lapsed := map[string]bool{}
	for _, r := range regs {
		s, ok := c.seen[r.ID]
		if !ok || s.index != r.ModifyIndex {
			s = indexSeen{index: r.ModifyIndex, at: now}
		}
		s.lease = r.LeaseTTL
		next[r.ID] = s
		if s.lease > 0 && now.Sub(s.at) > s.lease {
			lapsed[r.ID] = true
		}
	}
	c.seen = next
	return lapsed
}

// missingAcks lists the live routers that have not acknowledged epoch,
// leaving out those whose lease has lapsed. A skip rests on a consistent
// read: a stale one could miss a renewal.
//
// With index > 0 it first waits (up to ackWait) for the acks to change
// after index; it returns the index to wait on next.
func (mg *Migrator) missingAcks(ctx context.Context, tenant string, epoch, index uint64) ([]string, uint64, error) {
	acks, next, err := mg.catalog.WatchAcks(ctx, tenant, index, ackWait)
	if err != nil {
		return nil, index, err
	}
	missing, err := mg.unacked(ctx, acks, epoch)
	return missing, next, err
}

// ackWait bounds one blocking wait for acks: router registrations (a
// router that left or lapsed) are read again at least this often.
const ackWait = 25 * time.Millisecond

// unacked lists the live routers whose ack in acks is below epoch.
func (mg *Migrator) unacked(ctx context.Context, acks map[string]uint64, epoch uint64) ([]string, error) {
	regs, err := mg.catalog.RouterRegistrations(ctx)
	if err != nil {
		return nil, err
	}
	for consistent := false; ; consistent = true {
		lapsed := mg.routers.observe(regs, time.Now())
		var missing []string
		skips := false
		for _, r := range regs {
			switch {
			case acks[r.ID] >= epoch:
			case lapsed[r.ID]:
				skips = true
			default:
				missing = append(missing, r.ID)
			}
		}
		if !skips || consistent {
			return missing, nil
		}
		if regs, err = mg.catalog.RouterRegistrations(catalog.Consistent(ctx)); err != nil {
			return nil, err
		}
	}
}

// errRoutersStalled: the acknowledgements missing at the switch's deadline
// were all from routers whose registration had not moved while this
// migrator watched; awaitStalledRouters tells whether they then lapsed.
var errRoutersStalled = errors.New("routers not renewing their registration")

// stalledRouters is the switch's failure when every router that did not
// acknowledge may have stalled.
type stalledRouters struct {
	ids []string
	err error
}

func (e *stalledRouters) Error() string {
	return fmt.Sprintf("routers %v did not acknowledge the freeze in time and may have stalled: %v", e.ids, e.err)
}

func (e *stalledRouters) Unwrap() []error { return []error{errRoutersStalled, e.err} }

// ackTimeout is waitAcks' error once its deadline passed with missing
// routers: a *stalledRouters when each declares a lease and its key has
// not moved since the wait's first poll.
func (mg *Migrator) ackTimeout(missing []string, polled time.Time, err error) error {
	mg.routers.mu.Lock()
	defer mg.routers.mu.Unlock()
	if len(missing) == 0 { // no answer before the deadline: nothing known
		return fmt.Errorf("router acknowledgements not read in time: %w", err)
	}
	for _, id := range missing {
		if s, ok := mg.routers.seen[id]; !ok || s.lease == 0 || s.at.After(polled) {
			return fmt.Errorf("routers %v did not acknowledge the freeze in time: %w", missing, err)
		}
	}
	return &stalledRouters{ids: missing, err: err}
}

// attemptCost is what a rolled-back switch attempt counts against
// MaxSwitchAttempts: 0 when awaitStalledRouters finds it failed only on
// routers whose lease then lapsed, else 1.
func (mg *Migrator) attemptCost(ctx context.Context, err error) int {
	if mg.awaitStalledRouters(ctx, err) {
		return 0
	}
	return 1
}

// awaitStalledRouters runs after a switch rolled back. When it failed only
// for routers that may have stalled, it waits until each has either renewed
// (alive: the failed attempt counts, false) or lapsed or gone (true: the
// next attempt skips it, so this one does not count against
// MaxSwitchAttempts). The wait is at most the routers' lease.
func (mg *Migrator) awaitStalledRouters(ctx context.Context, err error) bool {
	var st *stalledRouters
	if !errors.As(err, &st) {
		return false
	}
	for {
		regs, rerr := mg.catalog.RouterRegistrations(catalog.Consistent(ctx))
		if rerr == nil {
			if lapsed, ok := mg.stalledResolved(regs, st.ids); ok {
				return lapsed
			}
		}
		if retry.Sleep(ctx, 200*time.Millisecond) != nil {
			return false
		}
	}
}

// stalledResolved says whether each of ids has renewed (false, true), or
// every one has lapsed or gone (true, true); ok is false while undecided.
func (mg *Migrator) stalledResolved(regs []catalog.RouterRegistration, ids []string) (lapsedAll, ok bool) {
	mg.routers.mu.Lock()
	before := make(map[string]uint64, len(ids))
	for _, id := range ids {
		before[id] = mg.routers.seen[id].index
	}
	mg.routers.mu.Unlock()
	lapsed := mg.routers.observe(regs, time.Now())
	live := map[string]uint64{}
	for _, r := range regs {
		live[r.ID] = r.ModifyIndex
	}
	for _, id := range ids {
		idx, isLive := live[id]
		switch {
		case !isLive, lapsed[id]:
		case idx != before[id]:
			return false, true
		default:
			return false, false
		}
	}
	return true, true
}
