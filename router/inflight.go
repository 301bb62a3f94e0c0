package router

import (
	"context"
	"sync"
	"time"
)

const inflightShards = 64

// Inflight counts the requests being forwarded per tenant, so a router can
// tell a migrator that a frozen tenant has nothing in flight any more.
type Inflight struct {
	shards [inflightShards]struct {
		mu sync.Mutex
		n  map[string]int
		// total counts requests per tenant since the last TakeCounts.
		total map[string]int
	}
}

// NewInflight returns an empty counter.
func NewInflight() *Inflight {
	f := &Inflight{}
	for i := range f.shards {
		f.shards[i].n = map[string]int{}
		f.shards[i].total = map[string]int{}
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

// Enter counts one request in; call the returned func when it is done.
func (f *Inflight) Enter(id string) func() {
	s := &f.shards[f.shard(id)]
	s.mu.Lock()
	s.n[id]++
	s.total[id]++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.n[id] <= 1 {
			delete(s.n, id)
		} else {
			s.n[id]--
		}
		s.mu.Unlock()
	}
}

// Count returns the tenant's requests in flight.
func (f *Inflight) Count(id string) int {
	s := &f.shards[f.shard(id)]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[id]
}

// WaitIdle returns once the tenant has no request in flight, or ctx ends.
func (f *Inflight) WaitIdle(ctx context.Context, id string) error {
	for f.Count(id) > 0 {
		if err := sleepCtx(ctx, time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// TakeCounts returns the requests per tenant since the previous call and
// starts counting afresh (the load report reads it off the request path).
func (f *Inflight) TakeCounts() map[string]int {
	out := map[string]int{}
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		t := s.total
		s.total = map[string]int{}
		s.mu.Unlock()
		for k, v := range t {
			out[k] += v
		}
	}
	return out
}
