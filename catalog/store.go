package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/internal/retry"
)

// DefaultPrefix is the Consul KV prefix of the catalog.
const DefaultPrefix = "switchyard"

// DefaultBuckets is the number of tenant buckets a new catalog gets.
const DefaultBuckets = 4096

// maxCASAttempts bounds the read-modify-CAS retry loop under contention.
const maxCASAttempts = 50

// manifest is the one key routers watch: the version of every bucket.
type manifest struct {
	// ID is random per catalog: a rebuilt or replaced catalog whose bucket
	// versions happen to match the old ones is still seen as new.
	ID       string   `json:"id"`
	Buckets  int      `json:"buckets"`
	Versions []uint64 `json:"versions"`
}

// Store reads and writes the catalog in Consul. Every write is a
// check-and-set on ModifyIndex or a Consul transaction of them.
type Store struct {
	client *api.Client
	keys   Keys
}

// NewStore returns a Store under prefix (DefaultPrefix if empty).
func NewStore(client *api.Client, prefix string) *Store {
	return &Store{client: client, keys: NewKeys(prefix)}
}

// Client returns the Consul client the store uses.
func (s *Store) Client() *api.Client { return s.client }

// Prefix returns the KV prefix the store uses.
func (s *Store) Prefix() string { return s.keys.Prefix() }

// Keys returns the store's key layout.
func (s *Store) Keys() Keys { return s.keys }

// IdempotencyPrefix is where the controller keeps its idempotency records.
func (s *Store) IdempotencyPrefix() string { return s.keys.Idempotency() }

// Init creates an empty catalog with the given number of buckets if none
// exists. It is a no-op on an existing catalog.
func (s *Store) Init(ctx context.Context, buckets int) error {
	if buckets <= 0 {
		buckets = DefaultBuckets
	}
	if buckets > 1<<16 {
		return fmt.Errorf("%w: at most 65536 buckets", ErrInvalid)
	}
	m := manifest{ID: newCatalogID(), Buckets: buckets, Versions: make([]uint64, buckets)}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	ok, _, err := s.client.KV().CAS(&api.KVPair{Key: s.keys.Manifest(), Value: data, ModifyIndex: 0}, writeOpts(ctx))
	if err != nil {
		return fmt.Errorf("catalog init: %w", err)
	}
	_ = ok // false: it exists already
	if _, _, err := s.policy(ctx); errors.Is(err, ErrNotFound) {
		if err := s.SetPolicy(ctx, DefaultPlanPolicy()); err != nil && !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return nil
}

func newCatalogID() string {
	return fmt.Sprintf("%016x", rand.Uint64())
}

func writeOpts(ctx context.Context) *api.WriteOptions {
	return (&api.WriteOptions{}).WithContext(ctx)
}

func readOpts(ctx context.Context) *api.QueryOptions {
	return (&api.QueryOptions{RequireConsistent: ctx.Value(consistentKey{}) != nil}).WithContext(ctx)
}

type consistentKey struct{}

// Consistent makes the catalog reads done with ctx consistent reads (the
// leader confirms it still leads): for decisions a stale answer would make
// wrong, such as whether a flip committed.
func Consistent(ctx context.Context) context.Context {
	return context.WithValue(ctx, consistentKey{}, true)
}

func (s *Store) readManifest(ctx context.Context) (*manifest, uint64, error) {
	pair, _, err := s.client.KV().Get(s.keys.Manifest(), readOpts(ctx))
	if err != nil {
		return nil, 0, fmt.Errorf("read manifest: %w", err)
	}
	if pair == nil {
		return nil, 0, ErrNotInitialized
	}
	m, err := parseManifest(pair.Value)
	if err != nil {
		return nil, 0, err
	}
	return m, pair.ModifyIndex, nil
}

func parseManifest(data []byte) (*manifest, error) {
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if m.Buckets <= 0 || len(m.Versions) != m.Buckets {
		return nil, fmt.Errorf("manifest: %d versions for %d buckets", len(m.Versions), m.Buckets)
	}
	return &m, nil
}

func (s *Store) readBucket(ctx context.Context, b int) (map[string]*Tenant, uint64, error) {
	pair, _, err := s.client.KV().Get(s.keys.Bucket(b), readOpts(ctx))
	if err != nil {
		return nil, 0, fmt.Errorf("read bucket %d: %w", b, err)
	}
	if pair == nil {
		return map[string]*Tenant{}, 0, nil
	}
	_, tenants, err := decodeBucket(pair.Value)
	if err != nil {
		return nil, 0, err
	}
	return tenants, pair.ModifyIndex, nil
}

// GetTenant returns one tenant, read consistently from Consul.
func (s *Store) GetTenant(ctx context.Context, id string) (Tenant, error) {
	m, _, err := s.readManifest(ctx)
	if err != nil {
		return Tenant{}, err
	}
	tenants, _, err := s.readBucket(ctx, BucketOf(id, m.Buckets))
	if err != nil {
		return Tenant{}, err
	}
	t, ok := tenants[id]
	if !ok {
		return Tenant{}, fmt.Errorf("tenant %q: %w", id, ErrNotFound)
	}
	return *t, nil
}

// ListTenants returns every tenant. It reads the whole catalog: meant for the
// control plane and operators, never the request path.
func (s *Store) ListTenants(ctx context.Context) ([]Tenant, error) {
	pairs, _, err := s.client.KV().List(s.keys.Buckets(), readOpts(ctx))
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	var out []Tenant
	for _, p := range pairs {
		_, tenants, err := decodeBucket(p.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Key, err)
		}
		for _, t := range tenants {
			out = append(out, *t)
		}
	}
	return out, nil
}

// CreateTenant adds a new tenant. It fails with ErrExists if the id is taken.
func (s *Store) CreateTenant(ctx context.Context, t Tenant) (Tenant, error) {
	if t.State == "" {
		t.State = StateActive
	}
	if t.Epoch == 0 {
		t.Epoch = 1
	}
	if err := t.Validate(); err != nil {
		return Tenant{}, err
	}
	err := s.mutateBucket(ctx, t.ID, func(tenants map[string]*Tenant) error {
		if _, ok := tenants[t.ID]; ok {
			return fmt.Errorf("tenant %q: %w", t.ID, ErrExists)
		}
		c := t
		tenants[t.ID] = &c
		return nil
	}, nil)
	return t, err
}

// UpdateTenant applies fn to the current record and writes it back with CAS,
// retrying on conflicts. The epoch goes up by one whenever the tier, target
// or state changes, so it fences every placement change. An error from fn
// aborts and is returned as is.
func (s *Store) UpdateTenant(ctx context.Context, id string, fn func(*Tenant) error) (Tenant, error) {
	return s.updateTenant(ctx, id, fn, nil)
}

// updateTenant is UpdateTenant whose transaction also carries the ops
// also makes of the record about to be written (nil: none).
func (s *Store) updateTenant(ctx context.Context, id string, fn func(*Tenant) error, also func(Tenant) (api.TxnOps, error)) (Tenant, error) {
	var out Tenant
	var extra api.TxnOps
	err := s.mutateBucket(ctx, id, func(tenants map[string]*Tenant) (err error) {
		cur, ok := tenants[id]
		if !ok {
			return fmt.Errorf("tenant %q: %w", id, ErrNotFound)
		}
		next := *cur
		next.Labels = cloneLabels(cur.Labels)
		if err := fn(&next); err != nil {
			return err
		}
		next.ID = id
		if next.Tier != cur.Tier || next.Target != cur.Target || next.State != cur.State {
			if next.Epoch <= cur.Epoch {
				next.Epoch = cur.Epoch + 1
			}
		}
		if next.Epoch < cur.Epoch {
			return fmt.Errorf("%w: epoch must not go backwards (%d < %d)", ErrInvalid, next.Epoch, cur.Epoch)
		}
		if err := next.Validate(); err != nil {
			return err
		}
		tenants[id] = &next
		out = next
		if also != nil {
			extra, err = also(next)
		}
		return err
	}, &extra)
	return out, err
}

// DeleteTenant removes a tenant from the catalog.
func (s *Store) DeleteTenant(ctx context.Context, id string) error {
	return s.mutateBucket(ctx, id, func(tenants map[string]*Tenant) error {
		if _, ok := tenants[id]; !ok {
			return fmt.Errorf("tenant %q: %w", id, ErrNotFound)
		}
		delete(tenants, id)
		return nil
	}, nil)
}

// mutateBucket is the read-modify-write loop: read manifest and bucket, let
// fn change the bucket, then commit bucket and manifest in one transaction
// that checks both ModifyIndexes. It retries when it loses a race.
//
// extra, if not nil, points at ops fn may set that commit in the same
// transaction (they must not touch the bucket or the manifest).
func (s *Store) mutateBucket(ctx context.Context, id string, fn func(map[string]*Tenant) error, extra *api.TxnOps) error {
	if !ValidID(id) {
		return fmt.Errorf("%w: tenant id %q must be a lowercase DNS label", ErrInvalid, id)
	}
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		m, mIdx, err := s.readManifest(ctx)
		if err != nil {
			return err
		}
		b := BucketOf(id, m.Buckets)
		tenants, bIdx, err := s.readBucket(ctx, b)
		if err != nil {
			return err
		}
		if err := fn(tenants); err != nil {
			return err
		}
		m.Versions[b]++
		bucket, err := encodeBucket(m.Versions[b], tenants)
		if err != nil {
			return err
		}
		mdata, err := json.Marshal(m)
		if err != nil {
			return err
		}
		ops := api.TxnOps{casOp(s.keys.Bucket(b), bucket, bIdx)[0], casOp(s.keys.Manifest(), mdata, mIdx)[0]}
		if bIdx == 0 {
			ops = append(casOp(s.keys.Bucket(b), bucket, 0), casOp(s.keys.Manifest(), mdata, mIdx)...)
		}
		if extra != nil {
			ops = append(ops, *extra...)
		}
		ok, resp, _, err := s.client.Txn().Txn(ops, readOpts(ctx))
		if err != nil {
			return fmt.Errorf("catalog write: %w", err)
		}
		if ok {
			return nil
		}
		if resp != nil && len(resp.Errors) > 0 && !isCASFailure(resp.Errors) {
			return fmt.Errorf("catalog write: %s", resp.Errors[0].What)
		}
		if err := casBackoff.Sleep(ctx, attempt+1); err != nil {
			return err
		}
	}
	return fmt.Errorf("tenant %q: %w after %d attempts", id, ErrConflict, maxCASAttempts)
}

// casOp returns the ops that write key only if its ModifyIndex is still idx
// (idx 0: only if it does not exist).
func casOp(key string, value []byte, idx uint64) api.TxnOps {
	if idx == 0 {
		return api.TxnOps{
			{KV: &api.KVTxnOp{Verb: api.KVCheckNotExists, Key: key}},
			{KV: &api.KVTxnOp{Verb: api.KVSet, Key: key, Value: value}},
		}
	}
	return api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: key, Value: value, Index: idx}}}
}

func isCASFailure(errs api.TxnErrors) bool {
	for _, e := range errs {
		w := strings.ToLower(e.What)
		if !strings.Contains(w, "index") && !strings.Contains(w, "exist") && !strings.Contains(w, "cas") {
			return false
		}
	}
	return true
}

// casBackoff spreads writers that lost a compare-and-set race.
var casBackoff = retry.Backoff{Min: time.Millisecond, Max: 64 * time.Millisecond}

func cloneLabels(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// BulkLoad writes many tenants at once, a whole bucket per write: for seeding
// and benchmarks on a catalog whose buckets hold none of these ids. Existing
// tenants in the touched buckets are kept.
func (s *Store) BulkLoad(ctx context.Context, tenants []Tenant, progress func(done, total int)) error {
	m, _, err := s.readManifest(ctx)
	if err != nil {
		return err
	}
	byBucket := make(map[int][]Tenant)
	for _, t := range tenants {
		if t.State == "" {
			t.State = StateActive
		}
		if t.Epoch == 0 {
			t.Epoch = 1
		}
		if err := t.Validate(); err != nil {
			return err
		}
		b := BucketOf(t.ID, m.Buckets)
		byBucket[b] = append(byBucket[b], t)
	}
	done := 0
	for b, batch := range byBucket {
		for attempt := 0; ; attempt++ {
			err := s.mutateBucket(ctx, batch[0].ID, func(cur map[string]*Tenant) error {
				for i := range batch {
					t := batch[i]
					cur[t.ID] = &t
				}
				return nil
			}, nil)
			if err == nil {
				break
			}
			if attempt > 5 {
				return fmt.Errorf("bulk load bucket %d: %w", b, err)
			}
		}
		done++
		if progress != nil {
			progress(done, len(byBucket))
		}
	}
	return nil
}

// CreateTarget registers a new target; ErrExists if the id is taken.
func (s *Store) CreateTarget(ctx context.Context, t Target) error {
	if err := t.Validate(); err != nil {
		return err
	}
	data, err := json.Marshal(t)
	if err != nil {
		return err
	}
	ok, _, err := s.client.KV().CAS(&api.KVPair{Key: s.keys.Target(t.ID), Value: data, ModifyIndex: 0}, writeOpts(ctx))
	if err != nil {
		return fmt.Errorf("create target: %w", err)
	}
	if !ok {
		return fmt.Errorf("target %q: %w", t.ID, ErrExists)
	}
	return nil
}

// GetTarget returns one target and its ModifyIndex.
func (s *Store) GetTarget(ctx context.Context, id string) (Target, uint64, error) {
	pair, _, err := s.client.KV().Get(s.keys.Target(id), readOpts(ctx))
	if err != nil {
		return Target{}, 0, fmt.Errorf("get target: %w", err)
	}
	if pair == nil {
		return Target{}, 0, fmt.Errorf("target %q: %w", id, ErrNotFound)
	}
	var t Target
	if err := json.Unmarshal(pair.Value, &t); err != nil {
		return Target{}, 0, fmt.Errorf("target %q: %w", id, err)
	}
	return t, pair.ModifyIndex, nil
}

// UpdateTarget applies fn to the current target and writes it back with CAS,
// retrying on conflicts.
func (s *Store) UpdateTarget(ctx context.Context, id string, fn func(*Target) error) (Target, error) {
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		cur, idx, err := s.GetTarget(ctx, id)
		if err != nil {
			return Target{}, err
		}
		next := cur
		next.Labels = cloneLabels(cur.Labels)
		if err := fn(&next); err != nil {
			return Target{}, err
		}
		next.ID = id
		if err := next.Validate(); err != nil {
			return Target{}, err
		}
		data, err := json.Marshal(next)
		if err != nil {
			return Target{}, err
		}
		ok, _, err := s.client.KV().CAS(&api.KVPair{Key: s.keys.Target(id), Value: data, ModifyIndex: idx}, writeOpts(ctx))
		if err != nil {
			return Target{}, fmt.Errorf("update target: %w", err)
		}
		if ok {
			return next, nil
		}
		if err := casBackoff.Sleep(ctx, attempt+1); err != nil {
			return Target{}, err
		}
	}
	return Target{}, fmt.Errorf("target %q: %w", id, ErrConflict)
}

// ListTargets returns every registered target.
func (s *Store) ListTargets(ctx context.Context) ([]Target, error) {
	pairs, _, err := s.client.KV().List(s.keys.Targets(), readOpts(ctx))
	if err != nil {
		return nil, fmt.Errorf("list targets: %w", err)
	}
	return decodeTargets(pairs)
}

func decodeTargets(pairs api.KVPairs) ([]Target, error) {
	out := make([]Target, 0, len(pairs))
	for _, p := range pairs {
		var t Target
		if err := json.Unmarshal(p.Value, &t); err != nil {
			return nil, fmt.Errorf("%s: %w", p.Key, err)
		}
		out = append(out, t)
	}
	return out, nil
}

func (s *Store) policy(ctx context.Context) (PlanPolicy, uint64, error) {
	pair, _, err := s.client.KV().Get(s.keys.Policy(), readOpts(ctx))
	if err != nil {
		return PlanPolicy{}, 0, fmt.Errorf("get policy: %w", err)
	}
	if pair == nil {
		return PlanPolicy{}, 0, fmt.Errorf("policy: %w", ErrNotFound)
	}
	var p PlanPolicy
	if err := json.Unmarshal(pair.Value, &p); err != nil {
		return PlanPolicy{}, 0, fmt.Errorf("policy: %w", err)
	}
	return p, pair.ModifyIndex, nil
}

// Policy returns the plan → tier policy.
func (s *Store) Policy(ctx context.Context) (PlanPolicy, error) {
	p, _, err := s.policy(ctx)
	return p, err
}

// SetPolicy replaces the plan → tier policy (CAS against the version read).
func (s *Store) SetPolicy(ctx context.Context, p PlanPolicy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	_, idx, err := s.policy(ctx)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	ok, _, err := s.client.KV().CAS(&api.KVPair{Key: s.keys.Policy(), Value: data, ModifyIndex: idx}, writeOpts(ctx))
	if err != nil {
		return fmt.Errorf("set policy: %w", err)
	}
	if !ok {
		return fmt.Errorf("policy: %w", ErrConflict)
	}
	return nil
}
