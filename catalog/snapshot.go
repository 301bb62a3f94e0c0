package catalog

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Route is what a router needs to know about a tenant.
type Route struct {
	ID     string
	Tier   Tier
	Target string
	State  State
	Epoch  uint64
}

// routeEntry is the compact form kept per tenant in a snapshot: 32 bytes,
// with the target name interned so a million tenants share a few strings.
type routeEntry struct {
	target string
	epoch  uint64
	tier   uint8
	state  uint8
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

// bucketView is one bucket as routers hold it. Keys are substrings of one
// string holding every id of the bucket, so ids cost no extra allocations.
type bucketView struct {
	version uint64
	routes  map[string]routeEntry
}

var emptyBucket = &bucketView{routes: map[string]routeEntry{}}

// decodeBucketView builds the router's compact view of a bucket. intern
// dedupes target names across buckets.
func decodeBucketView(data []byte, intern map[string]string) (*bucketView, error) {
	type line struct {
		id     [2]int
		target string
		epoch  uint64
		tier   uint8
		state  uint8
	}
	var lines []line
	var ids strings.Builder
	version, err := decodeBucketRaw(data, func(f [7]string) error {
		epoch, err := strconv.ParseUint(f[5], 10, 64)
		if err != nil {
			return fmt.Errorf("bucket: tenant %s: bad epoch: %w", f[0], err)
		}
		target, ok := intern[f[3]]
		if !ok {
			target = strings.Clone(f[3])
			intern[target] = target
		}
		start := ids.Len()
		ids.WriteString(f[0])
		lines = append(lines, line{id: [2]int{start, ids.Len()}, target: target, epoch: epoch,
			tier: tierCode(Tier(f[2])), state: stateCode(State(f[4]))})
		return nil
	})
	if err != nil {
		return nil, err
	}
	all := ids.String()
	v := &bucketView{version: version, routes: make(map[string]routeEntry, len(lines))}
	for _, l := range lines {
		v.routes[all[l.id[0]:l.id[1]]] = routeEntry{target: l.target, epoch: l.epoch, tier: l.tier, state: l.state}
	}
	return v, nil
}

// Snapshot is an immutable view of the catalog. Routers read it without
// locks; the watcher replaces it whole.
type Snapshot struct {
	catalogID string
	buckets   []*bucketView
	targets   map[string]*Target
	// ManifestIndex is the Consul index of the manifest this snapshot reflects.
	ManifestIndex uint64
	// TargetsIndex is the Consul index of the targets it reflects.
	TargetsIndex uint64
	// Built is when this snapshot was assembled.
	Built   time.Time
	changed chan struct{}
}

// Lookup finds a tenant's route. It never blocks and never allocates.
func (s *Snapshot) Lookup(id string) (Route, bool) {
	if s == nil || len(s.buckets) == 0 {
		return Route{}, false
	}
	e, ok := s.buckets[bucketOfFast(id, len(s.buckets))].routes[id]
	if !ok {
		return Route{}, false
	}
	return Route{ID: id, Tier: tierCodes[e.tier], Target: e.target, State: stateCodes[e.state], Epoch: e.epoch}, true
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
		n += len(b.routes)
	}
	return n
}

// Changed is closed once a newer snapshot has replaced this one. Waiting on
// it is how a router holds a frozen tenant's request until the catalog moves.
func (s *Snapshot) Changed() <-chan struct{} { return s.changed }
