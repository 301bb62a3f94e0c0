package placement

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/switchyard/switchyard/catalog"
)

// Metric is the load figure PlanRebalance evens out across shared pools.
type Metric string

// The metrics PlanRebalance balances by.
const (
	MetricBytes   Metric = "bytes"   // stored bytes over Capacity.Bytes (the default)
	MetricTenants Metric = "tenants" // tenant count over Capacity.Tenants
	MetricRPS     Metric = "rps"     // requests per second over Capacity.RPS
)

// DefaultSpread is the band PlanRebalance aims for when RebalanceConfig.Spread
// is zero: every pool within ±0.1 (ten percentage points) of the mean.
const DefaultSpread = 0.1

// RebalanceConfig is what PlanRebalance plans under.
type RebalanceConfig struct {
	// Config holds the headroom and the label constraint keys every move
	// must respect.
	Config
	// Metric is the figure balanced; empty means MetricBytes.
	Metric Metric
	// Spread is the half-width of the band around the mean utilisation, in
	// utilisation units: 0.1 with a mean of 0.5 asks for every pool in
	// [0.4, 0.6]. Zero means DefaultSpread.
	Spread float64
	// MaxMoves bounds the moves in one plan; zero means no bound other than
	// that each tenant moves at most once.
	MaxMoves int
}

// Validate checks the headroom, constraint keys, metric, spread and bound.
func (c RebalanceConfig) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	switch c.Metric {
	case "", MetricBytes, MetricTenants, MetricRPS:
	default:
		return fmt.Errorf("%w: metric %q must be bytes, tenants or rps", ErrInvalidConfig, c.Metric)
	}
	if !(c.Spread >= 0 && c.Spread < 1) {
		return fmt.Errorf("%w: spread %v must be in [0, 1)", ErrInvalidConfig, c.Spread)
	}
	if c.MaxMoves < 0 {
		return fmt.Errorf("%w: max moves %d must not be negative", ErrInvalidConfig, c.MaxMoves)
	}
	return nil
}

func (c RebalanceConfig) metric() Metric {
	if c.Metric == "" {
		return MetricBytes
	}
	return c.Metric
}

func (c RebalanceConfig) spread() float64 {
	if c.Spread == 0 {
		return DefaultSpread
	}
	return c.Spread
}

// Move is one tenant changing target.
type Move struct {
	Tenant string `json:"tenant"`
	From   string `json:"from"`
	To     string `json:"to"`
	// Bytes is the tenant's size: what the migrator will copy.
	Bytes int64 `json:"bytes"`
	// Reason says why this tenant, from here, to there.
	Reason string `json:"reason"`
}

// Plan is a set of moves and what they do.
type Plan struct {
	// Moves, to be applied in order.
	Moves []Move `json:"moves"`
	// Before and After are each considered target's utilisation before and
	// after the moves: by the balanced metric for PlanRebalance, by the
	// largest utilisation fraction (TargetLoad.Utilisation) for PlanDrain.
	Before map[string]float64 `json:"before"`
	After  map[string]float64 `json:"after"`
	// Converged reports that the plan reaches its goal: for PlanRebalance
	// every pool within the band, for PlanDrain every tenant placed.
	Converged bool `json:"converged"`
	// Note summarises the plan: the band, the moves, and when not converged
	// why not.
	Note string `json:"note"`
	// Skipped names tenants a constraint keeps where they are although the
	// plan did not reach its goal, each with the refusal (for
	// PlanRebalance: resident tenants on over-full pools kept from pools
	// outside their regions, at most 20; the Note gives the total).
	Skipped map[string]string `json:"skipped,omitempty"`
}

// PlanRebalance proposes moves between shared pools (targets of tier shared;
// other targets and their tenants are ignored) that bring every pool's
// utilisation, by cfg.Metric, within cfg.Spread of the mean utilisation.
//
// The mean is the fleet's: total load over total capacity of all shared
// pools, cordoned ones included, which moves do not change. A pool's load is its TargetLoad figure;
// its tenants are the TenantLoads whose Tenant.Target names it (tenant ids
// must be unique). When no shared pool has a capacity figure for the metric,
// pools are balanced by raw load, each pool's capacity taken as the mean
// load (so utilisation 1 is average); when only some have one, that is
// ErrInvalidInput.
//
// Moves never break constraints: the receiving pool must not be cordoned,
// must be in one of the tenant's residency regions (CheckResidency), must
// carry the tenant's constrained labels, must stay within capacity less
// headroom for tenant count, bytes and RPS, and must stay within the band;
// a giving pool stays within the band too unless it is cordoned (cordoned
// pools give but never take, and are only held to the upper bound). Each
// tenant moves at most once, and at most cfg.MaxMoves moves are planned.
//
// The planner is greedy and deterministic (inputs are ordered by id, every
// tie broken by id, so input order does not matter): it repeatedly takes the
// pool furthest outside the band and pairs it with the most suitable
// counterpart (an over-full pool with the least utilised pool that can take
// from it, an under-full pool with the most utilised pool that can give to
// it), moving the tenant whose size best closes the gap (smallest
// |size − gap|; on a tie the smaller, then the one with fewer bytes, then
// the smaller id) within what the pair can absorb. Moves only ever shed a
// pool's excess or fill its shortfall, never go past the mean's band, so
// the bytes moved stay close to the least possible. Each pool's tenants are
// sorted by size once (per constraint-label signature) and each pick is a
// binary search, so a plan costs O(n log n) in tenants plus
// O(pools × signatures × log n) per move. Every move strictly reduces the
// total distance of pools outside the band, so plans end; when they end
// converged, PlanRebalance on the state after the moves (see ApplyPlan)
// plans nothing.
func PlanRebalance(targets []TargetLoad, tenants []TenantLoad, cfg RebalanceConfig) (Plan, error) {
	if err := cfg.Validate(); err != nil {
		return Plan{}, err
	}
	rb := &rebalancer{
		metric:   cfg.metric(),
		spread:   cfg.spread(),
		maxMoves: cfg.MaxMoves,
		keys:     cfg.constraintKeys(),
		h:        cfg.Headroom,
		tenants:  tenants,
	}
	if err := rb.loadPools(targets); err != nil {
		return Plan{}, err
	}
	if len(rb.pools) == 0 {
		return Plan{Before: map[string]float64{}, After: map[string]float64{}, Converged: true,
			Note: fmt.Sprintf("no shared pools among %d target(s); nothing to balance", len(targets))}, nil
	}
	if err := rb.loadTenants(); err != nil {
		return Plan{}, err
	}
	plan := Plan{Before: rb.utilisations()}
	rb.run()
	plan.Moves = rb.moves
	plan.After = rb.utilisations()
	plan.Converged = len(rb.viol) == 0
	held, total := rb.residencyHeld()
	if len(held) > 0 {
		plan.Skipped = held
	}
	plan.Note = rb.note() + residencyNote(held, total)
	return plan, nil
}

// eps is the slack, in utilisation units, below which a pool counts as in
// the band: it absorbs float rounding so a converged state re-plans empty.
const eps = 1e-9

// scanBudget bounds how many tenants one pick examines past the best fit
// when the best fit breaks another capacity figure (RPS, bytes, count).
const scanBudget = 32

// rpool is a shared pool being balanced.
type rpool struct {
	id       string
	cordoned bool
	labels   map[string]string
	lim      limits
	n        int
	b        int64
	r        float64
	// capacity in metric units, and the band [lower, upper] in metric units
	capacity, lower, upper float64
	u                      float64 // utilisation, kept current by reorder
}

// item is a movable tenant in a pool's size-sorted list.
type item struct {
	size float64 // in metric units
	sec  float64 // secondary order: bytes for the tenants and rps metrics
	idx  int32   // index into the tenants slice
}

// group is the movable tenants of one pool with one constraint signature,
// sorted by (size, sec, id). Moved tenants are deleted with two union-find
// arrays that skip to the nearest remaining tenant either way.
type group struct {
	items []item
	right []int32 // right[i] == i if item i remains (right[len] == len)
	left  []int32 // left[i+1] == i+1 if item i remains (left[0] == 0)
}

// rightAlive is the first remaining item at or after i (len if none).
func (g *group) rightAlive(i int) int {
	if g.right == nil {
		return i
	}
	r := i
	for int(g.right[r]) != r {
		r = int(g.right[r])
	}
	for int(g.right[i]) != r {
		i, g.right[i] = int(g.right[i]), int32(r)
	}
	return r
}

// leftAlive is the last remaining item at or before i (-1 if none).
func (g *group) leftAlive(i int) int {
	if g.left == nil || i < 0 {
		return i
	}
	j := i + 1
	r := j
	for int(g.left[r]) != r {
		r = int(g.left[r])
	}
	for int(g.left[j]) != r {
		j, g.left[j] = int(g.left[j]), int32(r)
	}
	return r - 1
}

func (g *group) remove(i int) {
	if g.right == nil {
		m := len(g.items)
		g.right = make([]int32, m+1)
		g.left = make([]int32, m+1)
		for k := range g.right {
			g.right[k], g.left[k] = int32(k), int32(k)
		}
	}
	g.right[i] = int32(i + 1)
	g.left[i+1] = int32(i)
}

// lowerBound is the first item with size >= x; upperBound the first > x.
func (g *group) lowerBound(x float64) int {
	lo, hi := 0, len(g.items)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if g.items[m].size < x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

func (g *group) upperBound(x float64) int {
	lo, hi := 0, len(g.items)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if g.items[m].size <= x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

type violation struct {
	p    int
	amt  float64 // utilisation units outside the band
	over bool
}

type rebalancer struct {
	metric   Metric
	spread   float64
	maxMoves int
	keys     []string
	h        Headroom
	tenants  []TenantLoad

	pools  []rpool
	mean   float64
	raw    bool // no capacity figures: balancing raw load
	nsig   int
	compat []bool  // compat[sig*len(pools)+pool]: pool carries the signature's labels and is in its regions
	groups []group // groups[pool*nsig+sig]
	sigs   [][]string
	// sigRegions[sig] is the signature's residency (nil: any region)
	sigRegions [][]string

	ignored, unmovable int

	moves      []Move
	movedBytes int64
	viol       []violation
	order      []int // pools by utilisation, lowest first
	stopped    string
	buf        []byte
}

func (rb *rebalancer) load(p *rpool) float64 {
	switch rb.metric {
	case MetricTenants:
		return float64(p.n)
	case MetricRPS:
		return p.r
	}
	return float64(p.b)
}

// capRoom is what capacity less headroom still admits in metric units.
func (rb *rebalancer) capRoom(p *rpool) float64 {
	switch rb.metric {
	case MetricTenants:
		if p.lim.tenants == math.MaxInt {
			return math.Inf(1)
		}
		return float64(p.lim.tenants - p.n)
	case MetricRPS:
		return p.lim.rps - p.r
	}
	if p.lim.bytes == math.MaxInt64 {
		return math.Inf(1)
	}
	return float64(p.lim.bytes - p.b)
}

func (rb *rebalancer) size(t *TenantLoad) (size, sec float64) {
	switch rb.metric {
	case MetricTenants:
		return 1, float64(t.Bytes)
	case MetricRPS:
		return t.RPS, float64(t.Bytes)
	}
	return float64(t.Bytes), 0
}

func metricCapacity(m Metric, c catalog.Capacity) float64 {
	switch m {
	case MetricTenants:
		return float64(c.Tenants)
	case MetricRPS:
		return c.RPS
	}
	return float64(c.Bytes)
}

// loadPools collects the shared pools sorted by id and sets the band.
func (rb *rebalancer) loadPools(targets []TargetLoad) error {
	for i := range targets {
		tl := &targets[i]
		if tl.Target.Tier != catalog.TierShared {
			continue
		}
		if err := tl.validate(); err != nil {
			return err
		}
		rb.pools = append(rb.pools, rpool{
			id: tl.Target.ID, cordoned: tl.Target.Cordoned, labels: tl.Target.Labels,
			lim: rb.h.limits(tl.Target.Capacity), n: tl.Tenants, b: tl.Bytes, r: tl.RPS,
			capacity: metricCapacity(rb.metric, tl.Target.Capacity),
		})
	}
	slices.SortFunc(rb.pools, func(a, b rpool) int { return strings.Compare(a.id, b.id) })
	withCap := 0
	var total, capSum float64
	var totalBytes int64
	for i := range rb.pools {
		p := &rb.pools[i]
		if i > 0 && rb.pools[i-1].id == p.id {
			return fmt.Errorf("%w: duplicate target id %s", ErrInvalidInput, p.id)
		}
		if p.capacity > 0 {
			withCap++
		}
		if rb.metric == MetricBytes {
			totalBytes += p.b // exact, so the mean does not drift across plans
		} else {
			total += rb.load(p)
		}
		capSum += p.capacity
	}
	if rb.metric == MetricBytes {
		total = float64(totalBytes)
	}
	if withCap > 0 && withCap < len(rb.pools) {
		var none []string
		for i := range rb.pools {
			if rb.pools[i].capacity == 0 {
				none = append(none, rb.pools[i].id)
			}
		}
		return fmt.Errorf("%w: shared pools %s have no %s capacity while others do; utilisations cannot be compared",
			ErrInvalidInput, strings.Join(none, ", "), rb.metric)
	}
	if withCap == 0 && len(rb.pools) > 0 {
		rb.raw = true
		c := total / float64(len(rb.pools))
		if c <= 0 {
			c = 1
		}
		for i := range rb.pools {
			rb.pools[i].capacity = c
		}
		capSum = c * float64(len(rb.pools))
	}
	if capSum > 0 {
		rb.mean = total / capSum
	}
	for i := range rb.pools {
		p := &rb.pools[i]
		p.upper = (rb.mean + rb.spread) * p.capacity
		p.lower = (rb.mean - rb.spread) * p.capacity
	}
	return nil
}

// loadTenants sorts each pool's movable tenants, per constraint signature.
func (rb *rebalancer) loadTenants() error {
	where, sigOf, err := rb.placeTenants()
	if err != nil {
		return err
	}
	rb.computeCompat()
	return rb.groupTenants(where, sigOf)
}

// placeTenants finds each tenant's pool (-1: not movable, counted as
// ignored or unmovable) and constraint signature (0: none), interning the
// signatures into rb.sigs.
func (rb *rebalancer) placeTenants() (where, sigOf []int32, err error) {
	index := make(map[string]int32, len(rb.pools))
	for i := range rb.pools {
		index[rb.pools[i].id] = int32(i)
	}
	sigIndex := map[string]int32{"": 0}
	rb.sigs = [][]string{nil}
	rb.sigRegions = [][]string{nil}
	n := len(rb.tenants)
	where = make([]int32, n)
	sigOf = make([]int32, n)
	var buf []byte
	lastTarget, lastPool := "", int32(-1)
	for i := range rb.tenants {
		t := &rb.tenants[i]
		if err := t.validate(); err != nil {
			return nil, nil, err
		}
		if t.Tenant.Target != lastTarget || i == 0 {
			p, ok := index[t.Tenant.Target]
			if !ok {
				p = -1
			}
			lastTarget, lastPool = t.Tenant.Target, p
		}
		where[i] = lastPool
		if lastPool < 0 {
			rb.ignored++
			continue
		}
		if s, _ := rb.size(t); s <= 0 {
			where[i] = -1
			rb.unmovable++
			continue
		}
		if len(t.Tenant.Labels) > 0 || len(t.Tenant.Residency) > 0 {
			sigOf[i], buf = rb.signature(t, buf, sigIndex)
		}
	}
	return where, sigOf, nil
}

// signature returns the id of t's constraint signature (its values of the
// constraint keys and its residency regions), interning a new one; buf is
// scratch space, returned for reuse.
func (rb *rebalancer) signature(t *TenantLoad, buf []byte, sigIndex map[string]int32) (int32, []byte) {
	buf = buf[:0]
	for _, k := range rb.keys {
		if v, ok := t.Tenant.Labels[k]; ok {
			buf = binary.AppendUvarint(buf, uint64(len(k)))
			buf = append(buf, k...)
			buf = binary.AppendUvarint(buf, uint64(len(v)))
			buf = append(buf, v...)
		}
	}
	for _, r := range t.Tenant.Residency {
		buf = append(buf, 0) // no label key is empty: marks a region
		buf = binary.AppendUvarint(buf, uint64(len(r)))
		buf = append(buf, r...)
	}
	if len(buf) == 0 {
		return 0, buf
	}
	s, ok := sigIndex[string(buf)]
	if !ok {
		s = int32(len(rb.sigs))
		sigIndex[string(buf)] = s
		var kv []string
		for _, k := range rb.keys {
			if v, ok := t.Tenant.Labels[k]; ok {
				kv = append(kv, k, v)
			}
		}
		rb.sigs = append(rb.sigs, kv)
		rb.sigRegions = append(rb.sigRegions, t.Tenant.Residency)
	}
	return s, buf
}

// computeCompat records which pools satisfy each signature.
func (rb *rebalancer) computeCompat() {
	P, S := len(rb.pools), len(rb.sigs)
	rb.nsig = S
	rb.compat = make([]bool, S*P)
	for s, kv := range rb.sigs {
		for p := range rb.pools {
			ok := true
			for j := 0; j < len(kv); j += 2 {
				if v, has := rb.pools[p].labels[kv[j]]; !has || v != kv[j+1] {
					ok = false
					break
				}
			}
			if regions := rb.sigRegions[s]; ok && len(regions) > 0 {
				ok = (&catalog.Tenant{Residency: regions}).ResidentIn(rb.pools[p].labels[catalog.RegionLabel])
			}
			rb.compat[s*P+p] = ok
		}
	}
}

// groupTenants counting-sorts the movable tenants into one group per
// (pool, signature), then sorts each group by (size, sec, id).
func (rb *rebalancer) groupTenants(where, sigOf []int32) error {
	P, S := len(rb.pools), len(rb.sigs)
	start := make([]int, P*S+1)
	for i := range where {
		if where[i] >= 0 {
			start[int(where[i])*S+int(sigOf[i])+1]++
		}
	}
	for g := 1; g < len(start); g++ {
		start[g] += start[g-1]
	}
	items := make([]item, start[len(start)-1])
	next := append([]int(nil), start[:P*S]...)
	for i := range where {
		if where[i] < 0 {
			continue
		}
		g := int(where[i])*S + int(sigOf[i])
		size, sec := rb.size(&rb.tenants[i])
		items[next[g]] = item{size: size, sec: sec, idx: int32(i)}
		next[g]++
	}
	rb.groups = make([]group, P*S)
	var dup string
	for g := range rb.groups {
		its := items[start[g]:start[g+1]]
		slices.SortFunc(its, func(a, b item) int {
			switch {
			case a.size < b.size:
				return -1
			case a.size > b.size:
				return 1
			case a.sec < b.sec:
				return -1
			case a.sec > b.sec:
				return 1
			}
			c := strings.Compare(rb.tenants[a.idx].Tenant.ID, rb.tenants[b.idx].Tenant.ID)
			if c == 0 && a.idx != b.idx {
				dup = rb.tenants[a.idx].Tenant.ID
			}
			return c
		})
		rb.groups[g].items = its
	}
	if dup != "" {
		return fmt.Errorf("%w: duplicate tenant id %s", ErrInvalidInput, dup)
	}
	return nil
}

func (rb *rebalancer) utilisations() map[string]float64 {
	m := make(map[string]float64, len(rb.pools))
	for i := range rb.pools {
		m[rb.pools[i].id] = rb.load(&rb.pools[i]) / rb.pools[i].capacity
	}
	return m
}

// initOrder computes utilisations and sorts the pools by them.
func (rb *rebalancer) initOrder() {
	rb.order = make([]int, len(rb.pools))
	for i := range rb.pools {
		rb.pools[i].u = rb.load(&rb.pools[i]) / rb.pools[i].capacity
		rb.order[i] = i
	}
	slices.SortFunc(rb.order, rb.cmpU)
}

// cmpU orders pools by utilisation, then id.
func (rb *rebalancer) cmpU(a, b int) int {
	if c := cmp.Compare(rb.pools[a].u, rb.pools[b].u); c != 0 {
		return c
	}
	return strings.Compare(rb.pools[a].id, rb.pools[b].id)
}

// reorder refreshes pool p's utilisation and moves it to its place in order.
func (rb *rebalancer) reorder(p int) {
	rb.pools[p].u = rb.load(&rb.pools[p]) / rb.pools[p].capacity
	k := slices.Index(rb.order, p)
	rb.order = slices.Delete(rb.order, k, k+1)
	at, _ := slices.BinarySearchFunc(rb.order, p, rb.cmpU)
	rb.order = slices.Insert(rb.order, at, p)
}

// violations lists the pools outside the band, unsorted.
func (rb *rebalancer) violations() {
	rb.viol = rb.viol[:0]
	for i := range rb.pools {
		p := &rb.pools[i]
		l := rb.load(p)
		if over := l - p.upper; over > eps*p.capacity {
			rb.viol = append(rb.viol, violation{p: i, amt: over / p.capacity, over: true})
		} else if under := p.lower - l; !p.cordoned && under > eps*p.capacity {
			rb.viol = append(rb.viol, violation{p: i, amt: under / p.capacity})
		}
	}
}

// cmpViol orders violations worst first, then by pool id.
func (rb *rebalancer) cmpViol(a, b violation) int {
	if c := cmp.Compare(b.amt, a.amt); c != 0 {
		return c
	}
	return strings.Compare(rb.pools[a.p].id, rb.pools[b.p].id)
}

// pick is a candidate tenant for a move.
type pick struct {
	g    int // group index, -1 if none
	pos  int
	size float64
	sec  float64
	idx  int32
}

// better reports whether a closes gap better than b.
func (rb *rebalancer) better(a, b pick, gap float64) bool {
	if b.g < 0 {
		return true
	}
	da, db := math.Abs(a.size-gap), math.Abs(b.size-gap)
	switch {
	case da != db:
		return da < db
	case a.size != b.size:
		return a.size < b.size
	case a.sec != b.sec:
		return a.sec < b.sec
	}
	return rb.tenants[a.idx].Tenant.ID < rb.tenants[b.idx].Tenant.ID
}

// room is how much, in metric units, can move from giver to taker: within
// the taker's band and capacity and the giver's band (unless cordoned).
func (rb *rebalancer) room(gv, tk *rpool) float64 {
	lim := min(tk.upper-rb.load(tk), rb.capRoom(tk))
	if gv.cordoned {
		return min(lim, rb.load(gv))
	}
	return min(lim, rb.load(gv)-gv.lower)
}

// bestMove finds the giver's tenant that best closes gap by moving to the
// taker, or g == -1.
func (rb *rebalancer) bestMove(gi, ti int, gap float64) pick {
	best := pick{g: -1}
	gv, tk := &rb.pools[gi], &rb.pools[ti]
	if tk.n >= tk.lim.tenants {
		return best
	}
	lim := rb.room(gv, tk)
	if !(lim > 0) {
		return best
	}
	P, S := len(rb.pools), rb.nsig
	fits := func(it item) bool {
		t := &rb.tenants[it.idx]
		return tk.lim.fits(tk.n, tk.b, tk.r, t.Bytes, t.RPS)
	}
	consider := func(g, pos int) {
		it := rb.groups[g].items[pos]
		c := pick{g: g, pos: pos, size: it.size, sec: it.sec, idx: it.idx}
		if rb.better(c, best, gap) {
			best = c
		}
	}
	for s := range S {
		if !rb.compat[s*P+ti] {
			continue
		}
		gx := gi*S + s
		g := &rb.groups[gx]
		m := len(g.items)
		if first := g.rightAlive(0); first == m || g.items[first].size > lim {
			continue
		}
		// smallest tenant at least the gap
		if gap <= lim {
			i := g.rightAlive(g.lowerBound(gap))
			for k := 0; i < m && k < scanBudget && g.items[i].size <= lim; k++ {
				if fits(g.items[i]) {
					consider(gx, i)
					break
				}
				i = g.rightAlive(i + 1)
			}
		}
		// largest tenant at most the gap (the first of equal sizes)
		j := g.leftAlive(g.upperBound(min(gap, lim)) - 1)
		budget := scanBudget
	runs:
		for j >= 0 && budget > 0 {
			first := g.rightAlive(g.lowerBound(g.items[j].size))
			for i := first; i <= j && budget > 0; i = g.rightAlive(i + 1) {
				budget--
				if fits(g.items[i]) {
					consider(gx, i)
					break runs
				}
			}
			j = g.leftAlive(first - 1)
		}
	}
	return best
}

// run plans moves until converged, stuck or out of moves.
func (rb *rebalancer) run() {
	rb.initOrder()
	for {
		rb.violations()
		if len(rb.viol) == 0 {
			return
		}
		if rb.maxMoves > 0 && len(rb.moves) >= rb.maxMoves {
			rb.stopped = fmt.Sprintf("stopped at MaxMoves=%d", rb.maxMoves)
			break
		}
		if !rb.step() {
			rb.stopped = "no further move fits"
			break
		}
	}
	slices.SortFunc(rb.viol, rb.cmpViol)
}

// step makes the best move for the worst violation that has one.
func (rb *rebalancer) step() bool {
	worst := 0
	for k := 1; k < len(rb.viol); k++ {
		if rb.cmpViol(rb.viol[k], rb.viol[worst]) < 0 {
			worst = k
		}
	}
	if rb.fix(rb.viol[worst]) {
		return true
	}
	// the worst is stuck: try the others, worst first
	first := rb.viol[worst]
	slices.SortFunc(rb.viol, rb.cmpViol)
	for _, v := range rb.viol {
		if v != first && rb.fix(v) {
			return true
		}
	}
	return false
}

// fix makes one move that brings the violating pool towards the band: an
// over-full pool gives to the least utilised pool that can take a tenant, an
// under-full pool takes from the most utilised pool that can give one.
func (rb *rebalancer) fix(v violation) bool {
	p := &rb.pools[v.p]
	if v.over {
		gap := rb.load(p) - p.upper
		for _, ti := range rb.order {
			tk := &rb.pools[ti]
			if rb.load(tk) >= tk.upper {
				break // pools are in utilisation order: none after has room
			}
			if ti == v.p || tk.cordoned {
				continue
			}
			if c := rb.bestMove(v.p, ti, gap); c.g >= 0 {
				rb.apply(v, v.p, ti, gap, c)
				return true
			}
		}
		return false
	}
	gap := p.lower - rb.load(p)
	for k := len(rb.order) - 1; k >= 0; k-- {
		gi := rb.order[k]
		if gi == v.p {
			continue
		}
		if c := rb.bestMove(gi, v.p, gap); c.g >= 0 {
			rb.apply(v, gi, v.p, gap, c)
			return true
		}
	}
	return false
}

// bandSide is the pool outside the band in a move's reason: its id, its
// utilisation, the band's edge it crossed, and the words for the side.
type bandSide struct {
	id           string
	u, edge      float64
	side, op, pm string
}

// appendBand writes "<pool> over band (u > edge = mean m + s); <other>
// is the … pool that can take it (u" (or under, <, -, give).
func (rb *rebalancer) appendBand(b []byte, out bandSide, other, role string, otherU float64) []byte {
	b = append(b, out.id...)
	b = append(b, out.side...)
	b = f3(b, out.u)
	b = append(b, out.op...)
	b = f3(b, out.edge)
	b = append(b, " = mean "...)
	b = f3(b, rb.mean)
	b = append(b, out.pm...)
	b = f3(b, rb.spread)
	b = append(b, "); "...)
	b = append(b, other...)
	b = append(b, role...)
	return f3(b, otherU)
}

func (rb *rebalancer) apply(v violation, gi, ti int, gap float64, c pick) {
	rb.groups[c.g].remove(c.pos)
	t := &rb.tenants[c.idx]
	gv, tk := &rb.pools[gi], &rb.pools[ti]
	gu, tu := gv.u, tk.u
	gv.n--
	gv.b -= t.Bytes
	gv.r -= t.RPS
	tk.n++
	tk.b += t.Bytes
	tk.r += t.RPS
	rb.reorder(gi)
	rb.reorder(ti)

	// The reason, built by hand: a plan may hold many thousand moves.
	b := rb.buf[:0]
	if v.over {
		b = rb.appendBand(b, bandSide{gv.id, gu, gv.upper / gv.capacity, " over band (", " > ", " + "},
			tk.id, " is the least utilised pool that can take it (", tu)
	} else {
		b = rb.appendBand(b, bandSide{tk.id, tu, tk.lower / tk.capacity, " under band (", " < ", " - "},
			gv.id, " is the most utilised pool that can give it (", gu)
	}
	b = append(b, "); "...)
	b = append(b, t.Tenant.ID...)
	b = append(b, ' ')
	b = rb.appendAmount(b, c.size)
	b = append(b, " best fits the "...)
	b = rb.appendAmount(b, gap)
	if v.over {
		b = append(b, " excess; "...)
	} else {
		b = append(b, " shortfall; "...)
	}
	b = append(b, rb.metric...)
	b = append(b, " utilisation: "...)
	b = append(b, gv.id...)
	b = append(b, ' ')
	b = f3(b, gu)
	b = append(b, " → "...)
	b = f3(b, gv.u)
	b = append(b, ", "...)
	b = append(b, tk.id...)
	b = append(b, ' ')
	b = f3(b, tu)
	b = append(b, " → "...)
	b = f3(b, tk.u)
	rb.buf = b
	rb.moves = append(rb.moves, Move{Tenant: t.Tenant.ID, From: gv.id, To: tk.id, Bytes: t.Bytes, Reason: string(b)})
	rb.movedBytes += t.Bytes
}

// f3 appends f with three decimals.
func f3(b []byte, f float64) []byte { return strconv.AppendFloat(b, f, 'f', 3, 64) }

// appendAmount renders a metric quantity.
func (rb *rebalancer) appendAmount(b []byte, x float64) []byte {
	switch rb.metric {
	case MetricBytes:
		return appendBytes(b, int64(math.Round(x)))
	case MetricTenants:
		b = strconv.AppendFloat(b, x, 'g', 3, 64)
		return append(b, " tenant(s)"...)
	}
	b = strconv.AppendFloat(b, x, 'g', 4, 64)
	return append(b, " rps"...)
}

func (rb *rebalancer) note() string {
	var b strings.Builder
	basis := "capacity"
	if rb.raw {
		basis = "mean load (no pool has a " + string(rb.metric) + " capacity)"
	}
	fmt.Fprintf(&b, "%d shared pool(s) by %s over %s: mean utilisation %.3f, band ±%.3f; %d move(s) totalling %s",
		len(rb.pools), rb.metric, basis, rb.mean, rb.spread, len(rb.moves), formatBytes(rb.movedBytes))
	if len(rb.viol) == 0 {
		b.WriteString("; converged: every pool within the band")
	} else {
		fmt.Fprintf(&b, "; not converged (%s): %d pool(s) outside the band: ", rb.stopped, len(rb.viol))
		for k, v := range rb.viol {
			if k == 5 {
				fmt.Fprintf(&b, ", and %d more", len(rb.viol)-k)
				break
			}
			if k > 0 {
				b.WriteString(", ")
			}
			p := &rb.pools[v.p]
			if v.over {
				fmt.Fprintf(&b, "%s at %.3f > %.3f", p.id, p.u, p.upper/p.capacity)
			} else {
				fmt.Fprintf(&b, "%s at %.3f < %.3f", p.id, p.u, p.lower/p.capacity)
			}
		}
		if rb.stopped == "no further move fits" {
			b.WriteString(" (no pool that can take has room, capacity and matching labels for any tenant that would help, or the tenants are too large for the band)")
		}
	}
	if rb.ignored > 0 {
		fmt.Fprintf(&b, "; ignored %d tenant(s) not on a shared pool", rb.ignored)
	}
	if rb.unmovable > 0 {
		fmt.Fprintf(&b, "; %d tenant(s) with zero %s not considered", rb.unmovable, rb.metric)
	}
	return b.String()
}
