package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/internal/watch"
)

// WatcherConfig configures a Watcher. Zero values take the defaults.
type WatcherConfig struct {
	// Prefix is the catalog's KV prefix (DefaultPrefix).
	Prefix string
	// WaitTime is the longest a blocking query waits (5m).
	WaitTime time.Duration
	// RetryMin and RetryMax bound the backoff after an error (50ms, 5s).
	RetryMin, RetryMax time.Duration
	// MinInterval rate-limits a loop whose index does not move (20ms).
	MinInterval time.Duration
	// FetchConcurrency is how many buckets are fetched at once (16).
	FetchConcurrency int
	Logger           *slog.Logger
}

func (c *WatcherConfig) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.WaitTime == 0 {
		c.WaitTime = 5 * time.Minute
	}
	if c.RetryMin == 0 {
		c.RetryMin = 50 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 5 * time.Second
	}
	if c.MinInterval == 0 {
		c.MinInterval = 20 * time.Millisecond
	}
	if c.FetchConcurrency == 0 {
		c.FetchConcurrency = 16
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a config that cannot work.
func (c *WatcherConfig) Validate() error {
	if c.RetryMin < 0 || c.RetryMax < c.RetryMin {
		return fmt.Errorf("%w: watcher retry bounds", ErrInvalid)
	}
	if c.FetchConcurrency < 0 || c.WaitTime < 0 || c.MinInterval < 0 {
		return fmt.Errorf("%w: watcher figures must not be negative", ErrInvalid)
	}
	return nil
}

// Watcher keeps an in-memory Snapshot of the catalog current with Consul,
// through blocking queries on the manifest and the targets. When Consul is
// unreachable it keeps serving the last good snapshot.
type Watcher struct {
	cfg   WatcherConfig
	store *Store

	snap  atomic.Pointer[Snapshot]
	mu    sync.Mutex // serialises swaps
	ready chan struct{}
	// lastSync is the unix-nano time both loops last confirmed their view
	// with Consul (a blocking query returned without error).
	lastManifestSync, lastTargetsSync atomic.Int64
	lastErr                           atomic.Pointer[string]
	gotManifest, gotTargets           atomic.Bool
	gotPolicy                         atomic.Bool   // the policy (the limits) is loaded
	gotDomains                        atomic.Bool   // the custom domains are loaded
	domainsSeen                       atomic.Uint64 // domainsVersion of the domains in the snapshot
	readyOnce                         sync.Once
	names                             *nameTable // owned by the manifest loop
	bucketsFetched                    atomic.Uint64
}

// NewWatcher returns a watcher; call Run to start it.
func NewWatcher(client *api.Client, cfg WatcherConfig) (*Watcher, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Watcher{cfg: cfg, store: NewStore(client, cfg.Prefix), ready: make(chan struct{}), names: newNameTable()}
	w.snap.Store(&Snapshot{changed: make(chan struct{}), targets: map[string]*Target{}})
	return w, nil
}

// Snapshot returns the current snapshot. It never blocks.
func (w *Watcher) Snapshot() *Snapshot { return w.snap.Load() }

// Ready is closed once the first full snapshot is loaded.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Age is how long since the snapshot was last confirmed current with Consul
// (the older of the two watches). Zero before the first load.
func (w *Watcher) Age() time.Duration {
	a, b := w.lastManifestSync.Load(), w.lastTargetsSync.Load()
	if a == 0 || b == 0 {
		return 0
	}
	return time.Since(time.Unix(0, min(a, b)))
}

// LastError is the most recent watch error, or "" after a success.
func (w *Watcher) LastError() string {
	if p := w.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

// Confirm returns once the snapshot reflects the catalog manifest as of a
// consistent read that begins now, or when ctx ends: what a router whose
// lease lapsed does before it forwards again.
func (w *Watcher) Confirm(ctx context.Context) error {
	_, meta, err := w.store.client.KV().Get(w.store.keys.Manifest(), (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("confirm catalog: %w", err)
	}
	for {
		snap := w.snap.Load()
		if snap.ManifestIndex >= meta.LastIndex {
			return nil
		}
		select {
		case <-snap.Changed():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// BucketsFetched counts bucket reads since start (for metrics and tests).
func (w *Watcher) BucketsFetched() uint64 { return w.bucketsFetched.Load() }

// Run watches until ctx is done. It returns nil on cancellation.
func (w *Watcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); w.loop("manifest", w.watchManifest).Run(ctx) }()
	go func() { defer wg.Done(); w.loop("targets", w.watchTargets).Run(ctx) }()
	go func() { defer wg.Done(); w.loop("policy", w.watchPolicy).Run(ctx) }()
	go func() { defer wg.Done(); w.loop("domains", w.watchDomains).Run(ctx) }()
	wg.Wait()
	return nil
}

// loop is the blocking-query loop of one of the watcher's two watches; it
// keeps LastError current.
func (w *Watcher) loop(name string, fetch watch.Fetch) *watch.Loop {
	return &watch.Loop{
		Name: "catalog " + name, Fetch: fetch, Logger: w.cfg.Logger,
		Backoff:     retry.Backoff{Min: w.cfg.RetryMin, Max: w.cfg.RetryMax},
		MinInterval: w.cfg.MinInterval,
		OnResult: func(err error) {
			msg := ""
			if err != nil {
				msg = fmt.Sprintf("%s watch: %v", name, err)
			}
			w.lastErr.Store(&msg)
		},
	}
}

func (w *Watcher) blockingOpts(ctx context.Context, index uint64) *api.QueryOptions {
	return (&api.QueryOptions{WaitIndex: index, WaitTime: w.cfg.WaitTime}).WithContext(ctx)
}

// watchManifest waits for the manifest to change, then fetches only the
// buckets whose version moved and swaps in a new snapshot.
func (w *Watcher) watchManifest(ctx context.Context, index uint64) (uint64, error) {
	pair, meta, err := w.store.client.KV().Get(w.store.keys.Manifest(), w.blockingOpts(ctx, index))
	if err != nil {
		return index, err
	}
	if pair == nil {
		return index, ErrNotInitialized
	}
	if meta.LastIndex == index && index != 0 {
		w.lastManifestSync.Store(time.Now().UnixNano())
		return index, nil
	}
	m, err := parseManifest(pair.Value)
	if err != nil {
		return index, err
	}
	cur := w.snap.Load()
	buckets := cur.buckets
	if len(buckets) != m.Buckets || cur.catalogID != m.ID {
		buckets = nil // first load, a new bucket count or another catalog: fetch all
	}
	var changed []int
	for b, v := range m.Versions {
		if buckets == nil || buckets[b].version != v {
			changed = append(changed, b)
		}
	}
	views, err := w.fetchBuckets(ctx, changed, m.Versions)
	if err != nil {
		return index, err
	}
	w.mu.Lock()
	cur = w.snap.Load()
	nb := make([]*bucketView, m.Buckets)
	if len(cur.buckets) == m.Buckets && cur.catalogID == m.ID {
		copy(nb, cur.buckets)
	}
	for i, b := range changed {
		nb[b] = views[i]
	}
	for i := range nb {
		if nb[i] == nil {
			nb[i] = emptyBucket
		}
	}
	w.swapLocked(cur, &Snapshot{catalogID: m.ID, buckets: nb, names: w.names.targets.snapshot(), targets: cur.targets, ManifestIndex: meta.LastIndex, TargetsIndex: cur.TargetsIndex})
	w.mu.Unlock()
	w.lastManifestSync.Store(time.Now().UnixNano())
	w.gotManifest.Store(true)
	w.markReady()
	return meta.LastIndex, nil
}

// fetchBuckets reads and decodes the given buckets, in parallel. Where many
// buckets sharing a key prefix changed (a cold start, a catalog swap) it
// lists the prefix in one request instead of one request per bucket.
func (w *Watcher) fetchBuckets(ctx context.Context, buckets []int, versions []uint64) ([]*bucketView, error) {
	views := make([]*bucketView, len(buckets))
	if len(buckets) == 0 {
		return views, nil
	}
	jobs := w.bucketJobs(buckets)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := &bucketFetch{w: w, buckets: buckets, versions: versions, views: views, cancel: cancel}
	work := make(chan bucketJob)
	var wg sync.WaitGroup
	for range min(w.cfg.FetchConcurrency, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				f.run(fctx, j)
			}
		}()
	}
	for _, j := range jobs {
		select {
		case work <- j:
		case <-fctx.Done():
		}
	}
	close(work)
	wg.Wait()
	if f.firstErr != nil {
		return nil, fmt.Errorf("fetch buckets: %w", f.firstErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return views, nil
}

// bucketJob lists a key prefix holding the buckets at indexes (into the
// buckets being fetched), or, without a prefix, gets its one bucket.
type bucketJob struct {
	prefix  string
	indexes []int
}

// bucketJobs groups buckets by the first two hex digits of their 4-digit
// key: a group with more than 16 changed buckets is listed in one request,
// the others are read one by one.
func (w *Watcher) bucketJobs(buckets []int) []bucketJob {
	groups := map[int][]int{} // group → indexes into buckets
	for i, b := range buckets {
		groups[b>>8] = append(groups[b>>8], i)
	}
	var jobs []bucketJob
	for g, idx := range groups {
		if len(idx) > 16 {
			jobs = append(jobs, bucketJob{prefix: w.store.keys.BucketGroup(g), indexes: idx})
			continue
		}
		for _, i := range idx {
			jobs = append(jobs, bucketJob{indexes: []int{i}})
		}
	}
	return jobs
}

// bucketFetch is one fetchBuckets call: its results and its first error,
// which cancels the rest.
type bucketFetch struct {
	w        *Watcher
	buckets  []int
	versions []uint64
	views    []*bucketView
	cancel   context.CancelFunc

	mu       sync.Mutex
	firstErr error
}

func (f *bucketFetch) fail(err error) {
	f.mu.Lock()
	if f.firstErr == nil {
		f.firstErr = err
		f.cancel()
	}
	f.mu.Unlock()
}

// run does one job.
func (f *bucketFetch) run(ctx context.Context, j bucketJob) {
	kv := f.w.store.client.KV()
	if j.prefix == "" {
		i := j.indexes[0]
		if f.versions[f.buckets[i]] == 0 {
			f.views[i] = emptyBucket
			return
		}
		pair, _, err := kv.Get(f.w.store.keys.Bucket(f.buckets[i]), readOpts(ctx))
		f.w.bucketsFetched.Add(1)
		if err != nil {
			f.fail(err)
			return
		}
		var data []byte
		if pair != nil {
			data = pair.Value
		}
		f.decode(i, data)
		return
	}
	pairs, _, err := kv.List(j.prefix, readOpts(ctx))
	if err != nil {
		f.fail(err)
		return
	}
	byKey := make(map[string][]byte, len(pairs))
	for _, p := range pairs {
		byKey[p.Key] = p.Value
	}
	f.w.bucketsFetched.Add(uint64(len(j.indexes)))
	for _, i := range j.indexes {
		f.decode(i, byKey[f.w.store.keys.Bucket(f.buckets[i])])
	}
}

// decode decodes the i-th bucket read (nil: absent) and checks it is at
// least as new as the manifest said.
func (f *bucketFetch) decode(i int, data []byte) {
	b := f.buckets[i]
	if data == nil {
		if f.versions[b] != 0 {
			f.fail(fmt.Errorf("bucket %d: missing but manifest says version %d", b, f.versions[b]))
			return
		}
		f.views[i] = emptyBucket
		return
	}
	v, err := decodeBucketView(data, f.w.names)
	if err != nil {
		f.fail(fmt.Errorf("bucket %d: %w", b, err))
		return
	}
	if v.version < f.versions[b] {
		f.fail(fmt.Errorf("bucket %d: read version %d older than manifest %d", b, v.version, f.versions[b]))
		return
	}
	f.views[i] = v
}

func (w *Watcher) watchTargets(ctx context.Context, index uint64) (uint64, error) {
	pairs, meta, err := w.store.client.KV().List(w.store.keys.Targets(), w.blockingOpts(ctx, index))
	if err != nil {
		return index, err
	}
	if meta.LastIndex == index && index != 0 {
		w.lastTargetsSync.Store(time.Now().UnixNano())
		return index, nil
	}
	targets := make(map[string]*Target, len(pairs))
	for _, p := range pairs {
		var t Target
		if err := json.Unmarshal(p.Value, &t); err != nil {
			w.cfg.Logger.Warn("skipping unreadable target", "key", p.Key, "err", err)
			continue
		}
		if t.ID != strings.TrimPrefix(p.Key, w.store.keys.Targets()) {
			w.cfg.Logger.Warn("skipping target whose id does not match its key", "key", p.Key, "id", t.ID)
			continue
		}
		targets[t.ID] = &t
	}
	w.mu.Lock()
	cur := w.snap.Load()
	w.swapLocked(cur, &Snapshot{catalogID: cur.catalogID, buckets: cur.buckets, names: cur.names, targets: targets, ManifestIndex: cur.ManifestIndex, TargetsIndex: meta.LastIndex})
	w.mu.Unlock()
	w.lastTargetsSync.Store(time.Now().UnixNano())
	w.gotTargets.Store(true)
	w.markReady()
	return meta.LastIndex, nil
}

func (w *Watcher) swapLocked(old, next *Snapshot) {
	w.limitsSwap(old, next)
	if next.domains == nil {
		next.domains = old.domains // only the domains watch brings new ones
	}
	next.Built = time.Now()
	next.changed = make(chan struct{})
	w.snap.Store(next)
	close(old.changed)
}

func (w *Watcher) markReady() {
	if w.gotManifest.Load() && w.gotTargets.Load() && w.gotPolicy.Load() && w.gotDomains.Load() {
		w.readyOnce.Do(func() { close(w.ready) })
	}
}
