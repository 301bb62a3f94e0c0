package migrator

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
)

// TestRouterClock: a router is skipped only once this migrator has seen the
// same registration index for longer than the router's lease, counted from
// the first sighting; a renewal (new index) starts the count again, and a
// router that declares no lease is never skipped.
func TestRouterClock(t *testing.T) {
	t0 := time.Unix(1000, 0)
	reg := func(id string, idx uint64, ttl time.Duration) catalog.RouterRegistration {
		return catalog.RouterRegistration{ID: id, ModifyIndex: idx, LeaseTTL: ttl}
	}
	for _, tc := range []struct {
		name  string
		steps [][]catalog.RouterRegistration // one observation per second
		want  map[string]bool                // lapsed at the last step
	}{
		{"first sighting is never lapsed", [][]catalog.RouterRegistration{{reg("a", 5, time.Second)}}, map[string]bool{}},
		{"unchanged for the lease: not yet", [][]catalog.RouterRegistration{{reg("a", 5, 2*time.Second)}, {reg("a", 5, 2*time.Second)}, {reg("a", 5, 2*time.Second)}}, map[string]bool{}},
		{"unchanged past the lease: lapsed", [][]catalog.RouterRegistration{{reg("a", 5, time.Second)}, {reg("a", 5, time.Second)}, {reg("a", 5, time.Second)}}, map[string]bool{"a": true}},
		{"a renewal restarts the count", [][]catalog.RouterRegistration{{reg("a", 5, time.Second)}, {reg("a", 5, time.Second)}, {reg("a", 9, time.Second)}}, map[string]bool{}},
		{"no lease declared: never", [][]catalog.RouterRegistration{{reg("a", 5, 0)}, {reg("a", 5, 0)}, {reg("a", 5, 0)}}, map[string]bool{}},
		{"gone and back: counted afresh", [][]catalog.RouterRegistration{{reg("a", 5, time.Second)}, {}, {reg("a", 5, time.Second)}}, map[string]bool{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c routerClock
			var got map[string]bool
			for i, regs := range tc.steps {
				got = c.observe(regs, t0.Add(time.Duration(i)*time.Second))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("lapsed %v, want %v", got, tc.want)
			}
			for id := range tc.want {
				if !got[id] {
					t.Fatalf("lapsed %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// TestStalledResolved: after a switch failed on routers that may have
// stalled, a renewal by any of them makes the attempt count; all of them
// lapsed or gone makes it not count; otherwise undecided.
func TestStalledResolved(t *testing.T) {
	reg := func(id string, idx uint64) catalog.RouterRegistration {
		return catalog.RouterRegistration{ID: id, ModifyIndex: idx, LeaseTTL: time.Hour}
	}
	mg := &Migrator{}
	mg.routers.observe([]catalog.RouterRegistration{reg("a", 5), reg("b", 7)}, time.Now())
	if lapsed, ok := mg.stalledResolved([]catalog.RouterRegistration{reg("a", 5), reg("b", 7)}, []string{"a", "b"}); ok {
		t.Fatalf("undecided expected, got lapsed=%v", lapsed)
	}
	if lapsed, ok := mg.stalledResolved([]catalog.RouterRegistration{reg("b", 7)}, []string{"a"}); !ok || !lapsed {
		t.Fatalf("a gone: want lapsed, got %v %v", lapsed, ok)
	}
	if lapsed, ok := mg.stalledResolved([]catalog.RouterRegistration{reg("b", 8)}, []string{"b"}); !ok || lapsed {
		t.Fatalf("b renewed: want counted, got %v %v", lapsed, ok)
	}
	mg.routers.seen["c"] = indexSeen{index: 1, at: time.Now().Add(-2 * time.Hour)}
	if lapsed, ok := mg.stalledResolved([]catalog.RouterRegistration{reg("c", 1)}, []string{"c"}); !ok || !lapsed {
		t.Fatalf("c past its lease: want lapsed, got %v %v", lapsed, ok)
	}
}

// TestAckTimeout: a switch that timed out waiting for acknowledgements
// blames stalled routers (no failed attempt) only when every missing router
// declares a lease and its key did not move since the wait's first poll.
func TestAckTimeout(t *testing.T) {
	reg := func(id string, idx uint64, ttl time.Duration) catalog.RouterRegistration {
		return catalog.RouterRegistration{ID: id, ModifyIndex: idx, LeaseTTL: ttl}
	}
	mg := &Migrator{}
	start := time.Now()
	mg.routers.observe([]catalog.RouterRegistration{reg("a", 5, time.Hour), reg("b", 7, 0), reg("c", 9, time.Hour)}, start)
	polled := start.Add(time.Millisecond)
	mg.routers.observe([]catalog.RouterRegistration{reg("a", 5, time.Hour), reg("b", 7, 0), reg("c", 10, time.Hour)}, start.Add(time.Second))
	for _, tc := range []struct {
		missing []string
		stalled bool
	}{
		{[]string{"a"}, true},
		{[]string{"b"}, false},      // declares no lease
		{[]string{"c"}, false},      // renewed during the wait
		{[]string{"a", "c"}, false}, // one of them alive
		{[]string{"x"}, false},      // never seen
		{nil, false},                // no answer read before the deadline
	} {
		err := mg.ackTimeout(tc.missing, polled, context.DeadlineExceeded)
		if got := errors.Is(err, errRoutersStalled); got != tc.stalled {
			t.Errorf("%v: stalled %v, want %v (%v)", tc.missing, got, tc.stalled, err)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%v: %v does not wrap the deadline", tc.missing, err)
		}
	}
}
