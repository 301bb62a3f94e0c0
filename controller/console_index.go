package controller

import (
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/catalog"
)

// The console's tenant list pages through a sorted index of the catalog
// snapshot instead of the snapshot itself (which is hashed, not ordered):
// one compact row per tenant, sorted by id, so a page is a binary search
// to the cursor (or the id prefix) and a scan of rows until it is full.
// The index is rebuilt, off the request path, when the watched snapshot
// changes; until then pages answer from the previous index.

// routeSource is what the index is built from: the watcher's snapshot.
type routeSource interface {
	Range(fn func(r catalog.Route))
	Plan(r catalog.Route) string
}

var _ routeSource = (*catalog.Snapshot)(nil)

// indexRow is one tenant in the index: 32 bytes plus its id.
type indexRow struct {
	id     string
	epoch  uint64
	target uint16
	plan   uint16
	tier   uint8
	state  uint8
}

// tenantIndex is an immutable sorted view of a snapshot's tenants.
type tenantIndex struct {
	src     routeSource
	rows    []indexRow
	targets []string // by code
	plans   []string // by code
	tiers   []catalog.Tier
	states  []catalog.State
	perTier map[catalog.Tier]int
	// byTarget lists each target's rows (positions in rows, ascending):
	// a page filtered by target scans that target's tenants only.
	byTarget [][]int32
	built    time.Time
	took     time.Duration
}

// codes interns strings as small codes.
type codes struct {
	by   map[string]uint16
	list []string
}

func (c *codes) code(s string) uint16 {
	if v, ok := c.by[s]; ok {
		return v
	}
	c.by[s] = uint16(len(c.list))
	c.list = append(c.list, s)
	return c.by[s]
}

var indexTiers = []catalog.Tier{catalog.TierShared, catalog.TierDedicatedDB, catalog.TierDedicatedCluster}
var indexStates = []catalog.State{catalog.StateActive, catalog.StateFrozen, catalog.StateDisabled}

func codeOf[T comparable](list []T, v T) uint8 {
	for i, x := range list {
		if x == v {
			return uint8(i)
		}
	}
	return uint8(len(list)) // unknown: matches no filter
}

// buildIndex sorts src's tenants by id.
func buildIndex(src routeSource, sizeHint int) *tenantIndex {
	start := time.Now()
	ix := &tenantIndex{src: src, rows: make([]indexRow, 0, sizeHint), tiers: indexTiers, states: indexStates, perTier: map[catalog.Tier]int{}}
	targets := codes{by: map[string]uint16{}}
	plans := codes{by: map[string]uint16{}}
	src.Range(func(r catalog.Route) {
		ix.rows = append(ix.rows, indexRow{id: r.ID, epoch: r.Epoch, target: targets.code(r.Target), plan: plans.code(src.Plan(r)),
			tier: codeOf(indexTiers, r.Tier), state: codeOf(indexStates, r.State)})
		ix.perTier[r.Tier]++
	})
	slices.SortFunc(ix.rows, func(a, b indexRow) int { return strings.Compare(a.id, b.id) })
	ix.targets, ix.plans = targets.list, plans.list
	ix.byTarget = make([][]int32, len(ix.targets))
	for i := range ix.rows {
		t := ix.rows[i].target
		ix.byTarget[t] = append(ix.byTarget[t], int32(i))
	}
	ix.built, ix.took = time.Now(), time.Since(start)
	return ix
}

// tenantQuery is a tenants page's filter and cursor.
type tenantQuery struct {
	Prefix, Plan, Tier, Target, State, Label string
	After                                    string
	Limit                                    int
}

// tenantRow is a tenant as the list shows it.
type tenantRow struct {
	ID, Plan, Target string
	Tier             catalog.Tier
	State            catalog.State
	Epoch            uint64
}

func (ix *tenantIndex) row(r *indexRow) tenantRow {
	return tenantRow{ID: r.id, Plan: ix.plans[r.plan], Target: ix.targets[r.target], Tier: ix.tiers[r.tier], State: ix.states[r.state], Epoch: r.epoch}
}

// matcher returns a row filter for q's plan, tier, target and state; ok is
// false when a filter names a value no tenant has.
func (ix *tenantIndex) matcher(q tenantQuery) (func(*indexRow) bool, bool) {
	plan, target := -1, -1
	tier, state := -1, -1
	if q.Plan != "" {
		if plan = slices.Index(ix.plans, q.Plan); plan < 0 {
			return nil, false
		}
	}
	if q.Target != "" {
		if target = slices.Index(ix.targets, q.Target); target < 0 {
			return nil, false
		}
	}
	if q.Tier != "" {
		if tier = slices.Index(ix.tiers, catalog.Tier(q.Tier)); tier < 0 {
			return nil, false
		}
	}
	if q.State != "" {
		if state = slices.Index(ix.states, catalog.State(q.State)); state < 0 {
			return nil, false
		}
	}
	return func(r *indexRow) bool {
		return (plan < 0 || int(r.plan) == plan) && (target < 0 || int(r.target) == target) &&
			(tier < 0 || int(r.tier) == tier) && (state < 0 || int(r.state) == state)
	}, true
}

// scan calls fn for each row matching q after q.After, in id order, until
// fn returns false.
func (ix *tenantIndex) scan(q tenantQuery, fn func(r *indexRow) bool) {
	match, ok := ix.matcher(q)
	if !ok {
		return
	}
	from := q.Prefix
	if q.After >= from {
		from = q.After + "\x00" // the first id after the cursor
	}
	visit := func(r *indexRow) bool {
		if !strings.HasPrefix(r.id, q.Prefix) {
			return false // sorted: no later id has the prefix
		}
		return !match(r) || fn(r)
	}
	if q.Target != "" {
		list := ix.byTarget[slices.Index(ix.targets, q.Target)] // matcher checked it exists
		j := sort.Search(len(list), func(j int) bool { return ix.rows[list[j]].id >= from })
		for ; j < len(list) && visit(&ix.rows[list[j]]); j++ {
		}
		return
	}
	i := sort.Search(len(ix.rows), func(i int) bool { return ix.rows[i].id >= from })
	for ; i < len(ix.rows) && visit(&ix.rows[i]); i++ {
	}
}

// page returns up to q.Limit tenants matching q after q.After, and the
// cursor of the next page ("" when this is the last).
func (ix *tenantIndex) page(q tenantQuery) ([]tenantRow, string) {
	out := make([]tenantRow, 0, q.Limit)
	next := ""
	ix.scan(q, func(r *indexRow) bool {
		if len(out) == q.Limit {
			next = out[len(out)-1].ID
			return false
		}
		out = append(out, ix.row(r))
		return true
	})
	return out, next
}

// indexRebuildEvery bounds how often the index is rebuilt: at a million
// tenants a build is seconds of CPU, and a busy catalog changes many times
// a second.
const indexRebuildEvery = 5 * time.Second

// indexCache keeps the index of the latest snapshot, rebuilding it in the
// background when the snapshot changes (at most every indexRebuildEvery).
type indexCache struct {
	mu       sync.Mutex
	cur      *tenantIndex
	building bool
	every    time.Duration // 0: indexRebuildEvery
}

// get returns an index of src, or of an earlier snapshot while one of src
// is being built or the last build is recent; it builds in the caller only
// when there is none yet.
func (c *indexCache) get(src routeSource, size int) *tenantIndex {
	c.mu.Lock()
	cur := c.cur
	every := c.every
	if every == 0 {
		every = indexRebuildEvery
	}
	if cur != nil && (cur.src == src || c.building || time.Since(cur.built) < every) {
		c.mu.Unlock()
		return cur
	}
	c.building = true
	c.mu.Unlock()
	build := func() *tenantIndex {
		ix := buildIndex(src, size)
		c.mu.Lock()
		c.cur, c.building = ix, false
		c.mu.Unlock()
		return ix
	}
	if cur == nil {
		return build()
	}
	go build()
	return cur
}
