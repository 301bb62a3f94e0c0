package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/internal/retry"
)

// The idempotency store: a request carrying a key (an Idempotency-Key
// header, a billing event id) runs at most once per key. Before the work,
// the key is claimed by a Consul check-and-set that creates
//
//	<prefix>/idempotency/<namespace>/<sha-256 of the key>
//	  {"state": "running", "fingerprint", "created_at", "lease_until"}
//
// so exactly one of any number of concurrent requests, on any replica, wins
// it. The winner runs, then check-and-sets the record to {"state": "done",
// "status", "headers", "body"}; or, if its answer is not final (5xx, a
// panic, what the namespace keeps), deletes it so that a retry runs again.
// A duplicate waits (a blocking query, at most the store's wait) for the
// answer and replays it; a key first used for another request (another
// fingerprint) is refused and never runs. Records are forgotten after the
// TTL: an expired record counts as absent and is overwritten, and the
// leader sweeps them away.
//
// The winner renews its claim's lease while it runs; a running record
// whose lease ran out belongs to a replica that died, and the next request
// with the same fingerprint takes it over.

var (
	// errIdemMismatch: the key was first used for another request.
	errIdemMismatch = errors.New("idempotency key used for another request")
	// errIdemInProgress: the first request with the key is still running.
	errIdemInProgress = errors.New("a request with this idempotency key is still running")
	// errIdemLostRace: a check-and-set found the record changed.
	errIdemLostRace = errors.New("idempotency record changed concurrently")
	// errIdemClaimLost: the claim was taken over (its lease ran out) before
	// the answer could be stored.
	errIdemClaimLost = errors.New("idempotency claim taken over")
)

const (
	// idemLease is how long a running claim stays valid without renewal;
	// its holder renews it every third of that.
	idemLease = 30 * time.Second
	// maxStoredBody bounds the answer kept for replays (a Consul value is
	// at most 512 KB and the body is stored base64-encoded).
	maxStoredBody = 256 << 10
	// maxIdemAttempts bounds Begin's read/claim rounds.
	maxIdemAttempts = 64
)

// idemNamespace is one family of keys with its own rule on which answers
// are final.
type idemNamespace struct {
	name string // the key's path segment
	what string // what the key is, for error messages
	// keep reports whether an answer with this status is stored and
	// replayed; any other answer releases the key, so a retry runs again.
	keep func(status int) bool
}

var (
	// nsAPI: Idempotency-Key on the control API's POSTs.
	nsAPI = idemNamespace{name: "api", what: "Idempotency-Key", keep: keepAPIAnswer}
	// nsWebhook: billing event ids.
	nsWebhook = idemNamespace{name: "webhook", what: "event id", keep: keepWebhookAnswer}
)

// keepAPIAnswer: 2xx, 3xx and 4xx answers are final and replayed, except
// 409 and 429, which describe a state that may change (a race lost, a move
// under way, try later): those, like any 5xx, release the key.
func keepAPIAnswer(status int) bool {
	return status < 500 && status != 409 && status != 429
}

// keepWebhookAnswer: only a success is final. Billing redelivers an event
// that failed, and the redelivery must run again (the tenant may exist by
// then).
func keepWebhookAnswer(status int) bool { return status >= 200 && status < 300 }

type idemState string

const (
	idemRunning idemState = "running"
	idemDone    idemState = "done"
)

// idemRecord is what a key holds in Consul.
type idemRecord struct {
	State idemState `json:"state"`
	// Fingerprint identifies the request that claimed the key.
	Fingerprint string    `json:"fingerprint"`
	CreatedAt   time.Time `json:"created_at"`
	// LeaseUntil: a running claim not renewed by then is abandoned.
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// The stored answer, once done.
	Status  int               `json:"status,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    []byte            `json:"body,omitempty"`
	// BodyOmitted: the answer's body was over maxStoredBody and not kept.
	BodyOmitted bool `json:"body_omitted,omitempty"`
}

// idemAnswer is a finished request's answer, to store.
type idemAnswer struct {
	Status  int
	Headers map[string]string
	Body    []byte
	// BodyOmitted: the body was over maxStoredBody (Body is then empty).
	BodyOmitted bool
}

// requestFingerprint identifies a request for its idempotency key: method,
// path and query, the caller (role and token id), and the SHA-256 of the
// exact body bytes (a retry sends the same bytes; re-encoded JSON counts as
// another request).
func requestFingerprint(method, uri, caller string, body []byte) string {
	h := sha256.Sum256(body)
	return method + " " + uri + " by " + caller + " sha256:" + hex.EncodeToString(h[:])
}

// idemExpired reports whether a record is past the TTL (or unreadable: no
// creation time), so that it counts as absent.
func idemExpired(rec *idemRecord, now time.Time, ttl time.Duration) bool {
	return rec.CreatedAt.IsZero() || !now.Before(rec.CreatedAt.Add(ttl))
}

type idemVerdict int

const (
	verdictClaim    idemVerdict = iota // absent, expired or abandoned: claim it
	verdictReplay                      // done, same request: replay its answer
	verdictMismatch                    // held for another request: refuse
	verdictWait                        // running, same request: wait for it
)

// decide is what a request with fingerprint fp does about the record found
// (nil: none) at now.
func decide(rec *idemRecord, fp string, now time.Time, ttl time.Duration) idemVerdict {
	switch {
	case rec == nil || idemExpired(rec, now, ttl):
		return verdictClaim
	case rec.Fingerprint != fp:
		return verdictMismatch
	case rec.State == idemDone:
		return verdictReplay
	case rec.State == idemRunning && now.Before(rec.LeaseUntil):
		return verdictWait
	default: // running past its lease: its replica died
		return verdictClaim
	}
}

// idemStore keeps idempotency records in Consul KV.
type idemStore struct {
	kv     *api.KV
	txn    *api.Txn
	prefix string        // ends in "/"
	ttl    time.Duration // how long a key is remembered
	wait   time.Duration // how long a duplicate waits for the first answer
	lease  time.Duration // a running claim's lease
	log    *slog.Logger
}

func newIdemStore(client *api.Client, prefix string, ttl, wait time.Duration, log *slog.Logger) *idemStore {
	return &idemStore{kv: client.KV(), txn: client.Txn(), prefix: prefix, ttl: ttl, wait: wait, lease: idemLease, log: log}
}

// kvKey is where key's record lives: keys are client text of any shape, so
// the path holds their hash.
func (st *idemStore) kvKey(ns idemNamespace, key string) string {
	h := sha256.Sum256([]byte(key))
	return st.prefix + ns.name + "/" + hex.EncodeToString(h[:])
}

// Begin claims key for the request with fingerprint fp. It returns a claim
// (the caller runs the work, then Finish or Release), or the first answer to
// replay, or errIdemMismatch, or errIdemInProgress when the first request
// is still running after the store's wait.
func (st *idemStore) Begin(ctx context.Context, ns idemNamespace, key, fp string) (*idemClaim, *idemRecord, error) {
	kvKey := st.kvKey(ns, key)
	deadline := time.Now().Add(st.wait)
	var (
		cur   *idemRecord // the record last read (nil: none)
		idx   uint64      // its ModifyIndex (0: none)
		seen  uint64      // the last read's X-Consul-Index, to block on
		block bool        // the next read waits for a change
	)
	for range maxIdemAttempts {
		now := time.Now()
		switch decide(cur, fp, now, st.ttl) {
		case verdictClaim:
			c, err := st.claim(ctx, kvKey, fp, idx)
			if !errors.Is(err, errIdemLostRace) {
				return c, nil, err
			}
			block = false // another request got there first: read it
		case verdictReplay:
			return nil, cur, nil
		case verdictMismatch:
			return nil, cur, errIdemMismatch
		case verdictWait:
			if !now.Before(deadline) {
				return nil, cur, errIdemInProgress
			}
			block = true
		}
		var wait time.Duration
		if block {
			wait = deadline.Sub(now)
		}
		var err error
		if cur, idx, seen, err = st.read(ctx, kvKey, seen, wait); err != nil {
			return nil, nil, err
		}
	}
	return nil, cur, errIdemInProgress
}

// read gets the record at key; with wait > 0 it first blocks until the key
// changes after index seen (or wait passes).
func (st *idemStore) read(ctx context.Context, key string, seen uint64, wait time.Duration) (*idemRecord, uint64, uint64, error) {
	q := &api.QueryOptions{}
	if wait > 0 && seen > 0 {
		// A zero WaitTime would mean Consul's default of five minutes.
		q.WaitIndex, q.WaitTime = seen, max(wait, 10*time.Millisecond)
	}
	pair, meta, err := st.kv.Get(key, q.WithContext(ctx))
	if err != nil {
		return nil, 0, seen, fmt.Errorf("read idempotency record: %w", err)
	}
	if pair == nil {
		return nil, 0, meta.LastIndex, nil
	}
	var rec idemRecord
	if json.Unmarshal(pair.Value, &rec) != nil {
		rec = idemRecord{} // unreadable: no creation time, so expired
	}
	return &rec, pair.ModifyIndex, meta.LastIndex, nil
}

// cas writes rec at key if the key is still at index idx (0: absent) and
// returns the new ModifyIndex, or errIdemLostRace.
func (st *idemStore) cas(ctx context.Context, key string, rec idemRecord, idx uint64) (uint64, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("encode idempotency record: %w", err)
	}
	ops := api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: key, Value: data, Index: idx}}}
	if idx == 0 {
		ops = api.TxnOps{
			{KV: &api.KVTxnOp{Verb: api.KVCheckNotExists, Key: key}},
			{KV: &api.KVTxnOp{Verb: api.KVSet, Key: key, Value: data}},
		}
	}
	ok, resp, _, err := st.txn.Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("write idempotency record: %w", err)
	}
	if !ok {
		return 0, errIdemLostRace
	}
	for _, r := range resp.Results {
		if r.KV != nil && r.KV.Key == key {
			return r.KV.ModifyIndex, nil
		}
	}
	return 0, errors.New("write idempotency record: the transaction returned no index")
}

// claim creates (idx 0) or takes over (idx: the expired or abandoned
// record's index) the record for a request, and renews its lease until
// the claim is finished or released.
func (st *idemStore) claim(ctx context.Context, key, fp string, idx uint64) (*idemClaim, error) {
	now := time.Now().UTC()
	rec := idemRecord{State: idemRunning, Fingerprint: fp, CreatedAt: now, LeaseUntil: now.Add(st.lease)}
	newIdx, err := st.cas(ctx, key, rec, idx)
	if err != nil {
		return nil, err
	}
	c := &idemClaim{st: st, key: key, rec: rec, index: newIdx, stop: make(chan struct{}), done: make(chan struct{})}
	go c.renew()
	return c, nil
}

// Sweep deletes expired records (run by the leader); each delete is a
// check-and-set, so a record claimed again meanwhile stays.
func (st *idemStore) Sweep(ctx context.Context) (int, error) {
	pairs, _, err := st.kv.List(st.prefix, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("list idempotency records: %w", err)
	}
	now, n := time.Now(), 0
	for _, p := range pairs {
		var rec idemRecord
		if json.Unmarshal(p.Value, &rec) == nil && !idemExpired(&rec, now, st.ttl) {
			continue
		}
		ok, _, err := st.kv.DeleteCAS(&api.KVPair{Key: p.Key, ModifyIndex: p.ModifyIndex}, (&api.WriteOptions{}).WithContext(ctx))
		if err != nil {
			return n, fmt.Errorf("delete idempotency record: %w", err)
		}
		if ok {
			n++
		}
	}
	return n, nil
}

// sweepEvery is how often the leader sweeps: often enough that records do
// not outlive the TTL by much, at most hourly.
func (st *idemStore) sweepEvery() time.Duration { return min(st.ttl, time.Hour) }

// idemClaim is a key won by this request.
type idemClaim struct {
	st   *idemStore
	key  string
	stop chan struct{} // closed to end renew
	done chan struct{} // closed when renew has ended
	once sync.Once

	// Owned by renew until it ends, then by Finish or Release.
	rec   idemRecord
	index uint64
	lost  bool
}

// renew extends the claim's lease every third of it until halted.
func (c *idemClaim) renew() {
	defer close(c.done)
	tick := time.NewTicker(c.st.lease / 3)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		rec := c.rec
		rec.LeaseUntil = time.Now().UTC().Add(c.st.lease)
		ctx, cancel := context.WithTimeout(context.Background(), c.st.lease/3)
		idx, err := c.st.cas(ctx, c.key, rec, c.index)
		cancel()
		switch {
		case err == nil:
			c.rec, c.index = rec, idx
		case errors.Is(err, errIdemLostRace):
			c.lost = true
			c.st.log.Error("idempotency claim taken over while running (its lease ran out)", "key", c.key)
			return
		default:
			c.st.log.Warn("renewing an idempotency claim", "key", c.key, "err", err)
		}
	}
}

func (c *idemClaim) halt() {
	c.once.Do(func() { close(c.stop) })
	<-c.done
}

// Finish stores the answer for replays. Transport errors are retried a
// few times: a claim left running is only taken over once its lease runs
// out, and the work would then run twice.
func (c *idemClaim) Finish(ctx context.Context, a idemAnswer) error {
	c.halt()
	if c.lost {
		return errIdemClaimLost
	}
	rec := idemRecord{State: idemDone, Fingerprint: c.rec.Fingerprint, CreatedAt: c.rec.CreatedAt, Status: a.Status, Headers: a.Headers}
	if a.BodyOmitted || len(a.Body) > maxStoredBody {
		rec.BodyOmitted = true
	} else {
		rec.Body = a.Body
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if _, err = c.st.cas(ctx, c.key, rec, c.index); err == nil {
			return nil
		}
		if errors.Is(err, errIdemLostRace) {
			return errIdemClaimLost
		}
		if idemBackoff.Sleep(ctx, attempt+1) != nil {
			break
		}
	}
	return err
}

// idemBackoff spaces the retries of a claim's final write.
var idemBackoff = retry.Backoff{Min: 100 * time.Millisecond, Max: 400 * time.Millisecond}

// Release deletes the claim (if still ours) so that a retry runs again.
func (c *idemClaim) Release(ctx context.Context) error {
	c.halt()
	if c.lost {
		return nil
	}
	if _, _, err := c.st.kv.DeleteCAS(&api.KVPair{Key: c.key, ModifyIndex: c.index}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("release idempotency claim: %w", err)
	}
	return nil
}
