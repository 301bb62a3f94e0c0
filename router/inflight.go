package router

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/internal/retry"
)

const inflightShards = 64

// Inflight counts the requests being forwarded per tenant, so a router can
// tell a migrator that a frozen tenant has nothing in flight any more, and
// how many requests each tenant sent (for the load report).
//
// Its totals are the load report's: requests that resolved to the
// tenant's target on this router, counted under the lock the in-flight
// count takes anyway. The usage meter (Meter) is another count on
// purpose: every answered request of a known tenant by status class, with
// bytes and upstream time, per minute, for billing; it can be turned off
// (-no-usage), and placement's load report must not go with it.
type Inflight struct {
	shards [inflightShards]inflightShard
}

type inflightShard struct {
	mu sync.Mutex
	t  map[string]*tenantCount
}

// tenantCount is one tenant's requests in flight and since the last report.
// Entries idle at a report are dropped.
type tenantCount struct {
	shard           *inflightShard
	inflight, total int
}

// InflightEntry is one request counted in by Enter.
type InflightEntry = tenantCount

// NewInflight returns an empty counter.
func NewInflight() *Inflight {
	f := &Inflight{}
	for i := range f.shards {
		f.shards[i].t = map[string]*tenantCount{}
	}
	return f
}

func (f *Inflight) shard(id string) int {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return int(h % inflightShards)
}

// Enter counts one request in; call Leave on the entry when it is done.
// One map lookup per request: Leave works on the entry itself.
func (f *Inflight) Enter(id string) *InflightEntry {
	s := &f.shards[f.shard(id)]
	s.mu.Lock()
	c := s.t[id]
	if c == nil {
		c = &tenantCount{shard: s}
		s.t[strings.Clone(id)] = c // id may point into a read buffer
	}
	c.inflight++
	c.total++
	s.mu.Unlock()
	return c
}

// Leave counts the request out.
func (c *tenantCount) Leave() {
	c.shard.mu.Lock()
	c.inflight--
	c.shard.mu.Unlock()
}

// Count returns the tenant's requests in flight.
func (f *Inflight) Count(id string) int {
	s := &f.shards[f.shard(id)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.t[id]; c != nil {
		return c.inflight
	}
	return 0
}

// WaitIdle returns once the tenant has no request in flight, or ctx ends.
func (f *Inflight) WaitIdle(ctx context.Context, id string) error {
	for f.Count(id) > 0 {
		if err := retry.Sleep(ctx, time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// TakeCounts returns the requests per tenant since the previous call and
// starts counting afresh (the load report reads it off the request path);
// tenants with nothing in flight are forgotten until their next request.
func (f *Inflight) TakeCounts() map[string]int {
	out := map[string]int{}
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		for id, c := range s.t {
			if c.total > 0 {
				out[id] += c.total
				c.total = 0
			}
			if c.inflight == 0 {
				delete(s.t, id)
			}
		}
		s.mu.Unlock()
	}
	return out
}
