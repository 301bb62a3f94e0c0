package router

import (
	"math/bits"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/catalog"
)

// Usage metering (README "Usage metering"). The request path finds its
// tenant's record in a lock-free open-addressing table (a hash and a probe,
// no allocation, no lock) and adds to the counters of the current minute's
// slot with atomic adds. Everything else — harvesting the slots, summing
// per minute, publishing to Consul, forgetting idle tenants — runs in the
// publisher's goroutine (usage_publish.go).

// usageSlots is the ring of minute slots per tenant: a count is attributed
// to the minute the request ended in, as long as the harvester sees the
// slot within usageSlots-1 minutes (it looks every few seconds).
const usageSlots = 4

// Counter indexes within a slot.
const (
	uBytesIn = catalog.StatusClasses + iota
	uBytesOut
	uUpstreamMicros
	uCounters
)

type usageSlot struct{ n [uCounters]atomic.Uint64 }

// usageRecord is one tenant's counters. Only the harvester reads them.
type usageRecord struct {
	tenant string
	slots  [usageSlots]usageSlot
	// lastMinute is the last minute the harvester found counts in
	// (the harvester's own field).
	lastMinute int64
}

// usageTable is an immutable-size open-addressing table; slots are only
// ever filled (under Meter.mu), never emptied: eviction builds a new table.
type usageTable struct {
	slots []atomic.Pointer[usageRecord]
	mask  uint64
	used  int // under Meter.mu
}

// Meter counts usage per tenant and minute.
type Meter struct {
	table atomic.Pointer[usageTable]
	mu    sync.Mutex // inserts, growth and eviction
	// retired are records of tables replaced by an eviction: harvested a
	// while longer, for adds that found them just before the swap.
	retired []*usageRecord
}

// NewMeter returns an empty meter.
func NewMeter() *Meter {
	m := &Meter{}
	m.table.Store(newUsageTable(1024))
	return m
}

func newUsageTable(n int) *usageTable {
	n = 1 << bits.Len(uint(n-1))
	return &usageTable{slots: make([]atomic.Pointer[usageRecord], n), mask: uint64(n - 1)}
}

func usageHash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// find returns the tenant's record in t, or nil.
func (t *usageTable) find(tenant string, h uint64) *usageRecord {
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		r := t.slots[i].Load()
		if r == nil || r.tenant == tenant {
			return r
		}
	}
}

// record returns the tenant's record, making it on its first request.
func (m *Meter) record(tenant string) *usageRecord {
	h := usageHash(tenant)
	if r := m.table.Load().find(tenant, h); r != nil {
		return r
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.table.Load()
	if r := t.find(tenant, h); r != nil {
		return r
	}
	if (t.used+1)*2 > len(t.slots) {
		t = m.rebuild(t, len(t.slots)*2, func(*usageRecord) bool { return true })
	}
	// The id may point into a request's buffers: the record keeps a copy.
	r := &usageRecord{tenant: strings.Clone(tenant), lastMinute: time.Now().Unix() / 60}
	t.insert(r, h)
	return r
}

// insert puts r into its first empty slot (under Meter.mu).
func (t *usageTable) insert(r *usageRecord, h uint64) {
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		if t.slots[i].Load() == nil {
			t.slots[i].Store(r)
			t.used++
			return
		}
	}
}

// rebuild publishes a table of size n with the records keep keeps (under
// Meter.mu); the others are retired.
func (m *Meter) rebuild(old *usageTable, n int, keep func(*usageRecord) bool) *usageTable {
	t := newUsageTable(n)
	for i := range old.slots {
		r := old.slots[i].Load()
		if r == nil {
			continue
		}
		if keep(r) {
			t.insert(r, usageHash(r.tenant))
		} else {
			m.retired = append(m.retired, r)
		}
	}
	m.table.Store(t)
	return t
}

// statusClass is the index of a status code's class: 499 (the client went
// away) is a 4xx, 0 (nothing written) a 2xx as in the request metric.
func statusClass(status int) int {
	switch {
	case status == 0:
		return 1
	case status < 100:
		return 4
	case status >= 600:
		return 4
	}
	return status/100 - 1
}

// Add counts one request that ended at end.
func (m *Meter) Add(tenant string, end time.Time, status int, bytesIn, bytesOut int64, upstream time.Duration) {
	r := m.record(tenant)
	s := &r.slots[uint64(end.Unix()/60)%usageSlots]
	s.n[statusClass(status)].Add(1)
	if bytesIn > 0 {
		s.n[uBytesIn].Add(uint64(bytesIn))
	}
	if bytesOut > 0 {
		s.n[uBytesOut].Add(uint64(bytesOut))
	}
	if upstream > 0 {
		s.n[uUpstreamMicros].Add(uint64(upstream / time.Microsecond))
	}
}

// take empties the record's slots into acc (minute → tenant → counts),
// each slot read as the latest minute up to now that maps to it.
func (r *usageRecord) take(now int64, acc map[int64]map[string]catalog.UsageCounts) {
	for i := range r.slots {
		s := &r.slots[i]
		var c catalog.UsageCounts
		for k := 0; k < catalog.StatusClasses; k++ {
			c.Requests[k] = s.n[k].Swap(0)
		}
		c.BytesIn = s.n[uBytesIn].Swap(0)
		c.BytesOut = s.n[uBytesOut].Swap(0)
		c.UpstreamMicros = s.n[uUpstreamMicros].Swap(0)
		if c.IsZero() {
			continue
		}
		minute := now - (now-int64(i))%usageSlots
		if acc[minute] == nil {
			acc[minute] = map[string]catalog.UsageCounts{}
		}
		sum := acc[minute][r.tenant]
		sum.Add(c)
		acc[minute][r.tenant] = sum
		r.lastMinute = max(r.lastMinute, minute)
	}
}

// usageIdleMinutes: a tenant without requests for this long loses its
// record at the next eviction (it gets a new one on its next request).
const usageIdleMinutes = 10

// harvest empties every record into acc, as of now (a Unix minute). It
// also forgets idle tenants once the table holds many, and drops records
// retired at the previous harvest. One harvester at a time.
func (m *Meter) harvest(now int64, acc map[int64]map[string]catalog.UsageCounts) {
	m.mu.Lock()
	retired := m.retired
	m.retired = nil
	m.mu.Unlock()
	for _, r := range retired {
		r.take(now, acc) // late adds to records evicted a harvest ago
	}
	t := m.table.Load()
	for i := range t.slots {
		if r := t.slots[i].Load(); r != nil {
			r.take(now, acc)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t = m.table.Load()
	if t.used >= 4096 {
		idle := 0
		for i := range t.slots {
			if r := t.slots[i].Load(); r != nil && now-r.lastMinute > usageIdleMinutes {
				idle++
			}
		}
		if idle*4 >= t.used {
			m.rebuild(t, max(1024, 2*(t.used-idle)), func(r *usageRecord) bool { return now-r.lastMinute <= usageIdleMinutes })
		}
	}
}

// Tenants is the number of tenants the meter holds records for.
func (m *Meter) Tenants() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.table.Load().used
}
