package catalog

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Route is what a router needs to know about a tenant.
type Route struct {
	ID     string
	Tier   Tier
	Target string
	State  State
	Epoch  uint64
	// plan and limits are the slot's codes: Snapshot.Limits reads them.
	plan   uint8
	limits uint16
}

var tierCodes = []Tier{"", TierShared, TierDedicatedDB, TierDedicatedCluster}
var stateCodes = []State{"", StateActive, StateFrozen, StateDisabled}

func tierCode(t Tier) uint8 {
	for i, c := range tierCodes {
		if c == t {
			return uint8(i)
		}
	}
	return 0
}

func stateCode(s State) uint8 {
	for i, c := range stateCodes {
		if c == s {
			return uint8(i)
		}
	}
	return 0
}

// internTable interns keys as small integer codes, with a value per code.
// It only grows, so an older snapshot's prefix of the list stays valid.
// Decoders share it.
type internTable[T any] struct {
	mu    sync.RWMutex
	index map[string]uint16
	list  []T
	max   int // codes available
	what  string
}

func newInternTable[T any](what string, max int) *internTable[T] {
	return &internTable[T]{index: map[string]uint16{}, max: max, what: what}
}

// code returns key's code, interning it (with value(key)) if new.
func (n *internTable[T]) code(key string, value func(string) (T, error)) (uint16, error) {
	n.mu.RLock()
	c, ok := n.index[key]
	n.mu.RUnlock()
	if ok {
		return c, nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if c, ok := n.index[key]; ok {
		return c, nil
	}
	if len(n.list) >= n.max {
		return 0, fmt.Errorf("%w: more than %d distinct %s", errTableFull, n.max, n.what)
	}
	v, err := value(key)
	if err != nil {
		return 0, err
	}
	c = uint16(len(n.list))
	key = strings.Clone(key)
	n.list = append(n.list, v)
	n.index[key] = c
	return c, nil
}

// snapshot returns the current list of values by code.
func (n *internTable[T]) snapshot() []T {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.list
}

// errTableFull: an intern table has no code left.
var errTableFull = errors.New("intern table full")

func sameString(s string) (string, error) { return strings.Clone(s), nil }

// nameTable interns what the snapshot's slots name by code: target names,
// plans, and limits overrides (code 0: none).
type nameTable struct {
	targets *internTable[string]
	plans   *internTable[string]
	limits  *internTable[LimitsOverride]
}

func newNameTable() *nameTable {
	n := &nameTable{
		targets: newInternTable[string]("targets", 1<<16),
		plans:   newInternTable[string]("plans", 1<<8),
		limits:  newInternTable[LimitsOverride]("tenant limits overrides", 1<<16),
	}
	_, _ = n.limits.code("", decodeOverride) // code 0: no override
	return n
}

// slot is one tenant in a bucket's open-addressing table: 24 bytes, with
// the id kept in the bucket's id string, so a million tenants cost about
// 60 bytes each and a lookup touches two or three cache lines.
type slot struct {
	hash   uint32 // FNV-1a of the id
	off    uint32 // where the id starts in bucketView.ids
	epoch  uint64
	target uint16 // index into the snapshot's target names
	limits uint16 // index into the snapshot's limits overrides (0: none)
	idLen  uint8  // 0 marks an empty slot (ids are never empty)
	tier   uint8
	state  uint8
	plan   uint8 // index into the snapshot's plans
}

// bucketView is one bucket as routers hold it: a linear-probing table.
type bucketView struct {
	version uint64
	ids     string
	slots   []slot // power-of-two length, at most 3/4 full
	n       int
}

var emptyBucket = &bucketView{slots: make([]slot, 1)}

// fnv32 is the hash tenants are bucketed by (the same as BucketOf).
func fnv32(id string) uint32 {
	const offset32, prime32 = 2166136261, 16777619
	h := uint32(offset32)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= prime32
	}
	return h
}

// mix scrambles the hash for the in-bucket position, so the bits that chose
// the bucket do not also choose the slot.
func mix(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

func (v *bucketView) find(id string, h uint32) *slot {
	mask := uint32(len(v.slots) - 1)
	for i := mix(h) & mask; ; i = (i + 1) & mask {
		s := &v.slots[i]
		if s.idLen == 0 {
			return nil
		}
		if s.hash == h && int(s.idLen) == len(id) && v.ids[s.off:s.off+uint32(s.idLen)] == id {
			return s
		}
	}
}

// decodeBucketView builds the router's compact view of a bucket.
func decodeBucketView(data []byte, names *nameTable) (*bucketView, error) {
	var entries []slot
	var ids strings.Builder
	last, lastCode := "", uint16(0)
	version, err := decodeBucketRaw(data, func(f [8]string) error {
		epoch, err := strconv.ParseUint(f[5], 10, 64)
		if err != nil {
			return fmt.Errorf("bucket: tenant %s: bad epoch: %w", f[0], err)
		}
		if len(f[0]) == 0 || len(f[0]) > 255 {
			return fmt.Errorf("bucket: bad tenant id %q", f[0])
		}
		target := lastCode
		if f[3] != last || last == "" {
			var err error
			if target, err = names.targets.code(f[3], sameString); err != nil {
				return err
			}
			last, lastCode = f[3], target
		}
		plan, limits, err := names.limitCodes(f[1], f[7])
		if err != nil {
			return fmt.Errorf("bucket: tenant %s: %w", f[0], err)
		}
		entries = append(entries, slot{hash: fnv32(f[0]), off: uint32(ids.Len()), idLen: uint8(len(f[0])), epoch: epoch,
			target: target, tier: tierCode(Tier(f[2])), state: stateCode(State(f[4])), plan: plan, limits: limits})
		ids.WriteString(f[0])
		return nil
	})
	if err != nil {
		return nil, err
	}
	size := 1
	for size*3 < len(entries)*4+1 {
		size <<= 1
	}
	v := &bucketView{version: version, ids: ids.String(), slots: make([]slot, size), n: len(entries)}
	mask := uint32(size - 1)
	for _, e := range entries {
		i := mix(e.hash) & mask
		for v.slots[i].idLen != 0 {
			i = (i + 1) & mask
		}
		v.slots[i] = e
	}
	return v, nil
}

// Snapshot is an immutable view of the catalog. Routers read it without
// locks; the watcher replaces it whole.
type Snapshot struct {
	catalogID string
	buckets   []*bucketView
	names     []string // target names by code
	targets   map[string]*Target
	// ManifestIndex is the Consul index of the manifest this snapshot reflects.
	ManifestIndex uint64
	// TargetsIndex is the Consul index of the targets it reflects.
	TargetsIndex uint64
	// Built is when this snapshot was assembled.
	Built   time.Time
	changed chan struct{}
	limitTables
	// domains maps a custom domain (normalised) to its tenant (domains.go).
	domains map[string]domainEntry
}

// Lookup finds a tenant's route. It never blocks and never allocates.
func (s *Snapshot) Lookup(id string) (Route, bool) {
	if s == nil || len(s.buckets) == 0 {
		return Route{}, false
	}
	h := fnv32(id)
	e := s.buckets[h%uint32(len(s.buckets))].find(id, h)
	if e == nil {
		return Route{}, false
	}
	return Route{ID: id, Tier: tierCodes[e.tier], Target: s.names[e.target], State: stateCodes[e.state], Epoch: e.epoch,
		plan: e.plan, limits: e.limits}, true
}

// Target returns a registered target by id.
func (s *Snapshot) Target(id string) (*Target, bool) {
	if s == nil {
		return nil, false
	}
	t, ok := s.targets[id]
	return t, ok
}

// Targets returns every target (do not modify them).
func (s *Snapshot) Targets() map[string]*Target {
	if s == nil {
		return nil
	}
	return s.targets
}

// Len counts the tenants in the snapshot.
func (s *Snapshot) Len() int {
	if s == nil {
		return 0
	}
	n := 0
	for _, b := range s.buckets {
		n += b.n
	}
	return n
}

// Changed is closed once a newer snapshot has replaced this one. Waiting on
// it is how a router holds a frozen tenant's request until the catalog moves.
func (s *Snapshot) Changed() <-chan struct{} { return s.changed }

// Range calls fn for every tenant's route in the snapshot. It reads the
// whole snapshot: for the control plane, never the request path.
func (s *Snapshot) Range(fn func(r Route)) {
	if s == nil {
		return
	}
	for _, b := range s.buckets {
		for i := range b.slots {
			e := &b.slots[i]
			if e.idLen == 0 {
				continue
			}
			fn(Route{ID: b.ids[e.off : e.off+uint32(e.idLen)], Tier: tierCodes[e.tier], Target: s.names[e.target],
				State: stateCodes[e.state], Epoch: e.epoch, plan: e.plan, limits: e.limits})
		}
	}
}
