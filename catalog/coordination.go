package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// Cutover coordination between a migrator and every live router:
//
//	<prefix>/routers/<router id>           held by the router's Consul session
//	<prefix>/freezes/<tenant>              {"epoch", "move"}: a cutover in progress
//	<prefix>/acks/<tenant>/<router id>     epoch, held by the router's session
//
// A router acknowledges a freeze once its snapshot shows the tenant frozen
// at that epoch and none of the tenant's requests are in flight. Keys held
// by a session vanish with it, so a dead router never blocks a cutover.

// Freeze announces a cutover to routers.
type Freeze struct {
	Tenant string `json:"tenant"`
	Epoch  uint64 `json:"epoch"`
	Move   string `json:"move"`
}

func (s *Store) routerKey(id string) string     { return s.keys.Router(id) }
func (s *Store) freezeKey(tenant string) string { return s.keys.Freeze(tenant) }
func (s *Store) ackPrefix(tenant string) string { return s.keys.Acks(tenant) }

// FreezesPrefix is the KV prefix routers watch for cutovers.
func (s *Store) FreezesPrefix() string { return s.keys.Freezes() }

// RouterSession is a router's presence in Consul.
type RouterSession struct {
	store *Store
	ID    string
	// Session is the Consul session id holding the router's keys.
	Session string
	// reg is the registration key's value; Renewal counts the writes, so
	// each moves the key's ModifyIndex (Consul keeps the index of a write
	// that changes nothing).
	reg registration
}

// ErrSessionGone: Consul no longer has the router's session (it expired or
// was destroyed); the router must register again.
var ErrSessionGone = errors.New("router session no longer exists")

// RegisterRouter creates a session (TTL ttl, at least Consul's 10 s; keys
// deleted on expiry) and holds the router's key with it; the key says
// that the router's lease is ttl. The caller keeps
// it alive with Renew, and Ends it on the way out.
func (s *Store) RegisterRouter(ctx context.Context, id string, ttl time.Duration) (*RouterSession, error) {
	reg := registration{Registered: time.Now().UTC(), LeaseTTLMS: ttl.Milliseconds()}
	ttl = max(ttl, 10*time.Second)
	se, _, err := s.client.Session().Create(&api.SessionEntry{
		Name: "switchyard-router-" + id, TTL: ttl.String(), Behavior: api.SessionBehaviorDelete, LockDelay: time.Millisecond,
	}, writeOpts(ctx))
	if err != nil {
		return nil, fmt.Errorf("router session: %w", err)
	}
	rs := &RouterSession{store: s, ID: id, Session: se, reg: reg}
	if err := rs.refresh(ctx); err != nil {
		_, _ = s.client.Session().Destroy(se, nil)
		return nil, err
	}
	return rs, nil
}

// Renew extends the session's TTL, then writes the registration key again
// (its ModifyIndex moves: see RouterRegistration); ErrSessionGone if
// Consul no longer has the session.
func (rs *RouterSession) Renew(ctx context.Context) error {
	e, _, err := rs.store.client.Session().Renew(rs.Session, writeOpts(ctx))
	if err != nil {
		return fmt.Errorf("renew router session: %w", err)
	}
	if e == nil {
		return ErrSessionGone
	}
	return rs.refresh(ctx)
}

// End destroys the session: the router's key and acks go with it, so no
// cutover waits for it.
func (rs *RouterSession) End(ctx context.Context) {
	_, _ = rs.store.client.Session().Destroy(rs.Session, writeOpts(ctx))
}

// Ack records that this router holds the tenant at epoch.
func (rs *RouterSession) Ack(ctx context.Context, tenant string, epoch uint64) error {
	ok, _, err := rs.store.client.KV().Acquire(&api.KVPair{
		Key: rs.store.ackPrefix(tenant) + rs.ID, Value: []byte(strconv.FormatUint(epoch, 10)), Session: rs.Session,
	}, writeOpts(ctx))
	if err != nil {
		return fmt.Errorf("ack %s@%d: %w", tenant, epoch, err)
	}
	if !ok {
		return fmt.Errorf("ack %s@%d: session %s not valid", tenant, epoch, rs.Session)
	}
	return nil
}

// LiveRouters lists the routers whose session holds their key.
func (s *Store) LiveRouters(ctx context.Context) ([]string, error) {
	regs, err := s.RouterRegistrations(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(regs))
	for i, r := range regs {
		out[i] = r.ID
	}
	return out, nil
}

// FreezeTenant changes the tenant as fn says (UpdateTenant's rules; fn
// makes it frozen) and announces the freeze at the new epoch in the same
// transaction: one Raft write, not two, and routers see the frozen state
// and the announcement at one index.
func (s *Store) FreezeTenant(ctx context.Context, id, move string, fn func(*Tenant) error) (Tenant, error) {
	return s.updateTenant(ctx, id, fn, func(next Tenant) (api.TxnOps, error) {
		data, err := json.Marshal(Freeze{Tenant: id, Epoch: next.Epoch, Move: move})
		if err != nil {
			return nil, err
		}
		return api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVSet, Key: s.freezeKey(id), Value: data}}}, nil
	})
}

// ClearFreeze removes the announcement and every ack of the tenant.
func (s *Store) ClearFreeze(ctx context.Context, tenant string) error {
	ops := api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: s.freezeKey(tenant)}},
		{KV: &api.KVTxnOp{Verb: api.KVDeleteTree, Key: s.ackPrefix(tenant)}},
	}
	ok, resp, _, err := s.client.Txn().Txn(ops, readOpts(ctx))
	if err != nil {
		return fmt.Errorf("clear freeze: %w", err)
	}
	if !ok && resp != nil && len(resp.Errors) > 0 {
		return fmt.Errorf("clear freeze: %s", resp.Errors[0].What)
	}
	return nil
}

// Acks returns router id → acknowledged epoch for the tenant.
func (s *Store) Acks(ctx context.Context, tenant string) (map[string]uint64, error) {
	acks, _, err := s.WatchAcks(ctx, tenant, 0, 0)
	return acks, err
}

// WatchAcks is Acks as a blocking query: it returns once the tenant's acks
// changed after index, or wait passed (index 0: at once), with the index to
// wait on next.
func (s *Store) WatchAcks(ctx context.Context, tenant string, index uint64, wait time.Duration) (map[string]uint64, uint64, error) {
	opts := readOpts(ctx)
	opts.WaitIndex, opts.WaitTime = index, wait
	pairs, meta, err := s.client.KV().List(s.ackPrefix(tenant), opts)
	if err != nil {
		return nil, index, fmt.Errorf("list acks: %w", err)
	}
	out := map[string]uint64{}
	for _, p := range pairs {
		if p.Session == "" {
			continue
		}
		e, err := strconv.ParseUint(string(p.Value), 10, 64)
		if err != nil {
			continue
		}
		out[strings.TrimPrefix(p.Key, s.ackPrefix(tenant))] = e
	}
	return out, meta.LastIndex, nil
}

// WatchFreezes blocks until the freezes change after index (or wait passes)
// and returns them with the new index.
func (s *Store) WatchFreezes(ctx context.Context, index uint64, wait time.Duration) ([]Freeze, uint64, error) {
	pairs, meta, err := s.client.KV().List(s.FreezesPrefix(), (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx))
	if err != nil {
		return nil, index, err
	}
	var out []Freeze
	for _, p := range pairs {
		var f Freeze
		if json.Unmarshal(p.Value, &f) == nil && f.Tenant != "" {
			out = append(out, f)
		}
	}
	return out, meta.LastIndex, nil
}

// RouterLoad is one router's request rates per tenant over a window, kept
// under <prefix>/load/routers/<router id>.
type RouterLoad struct {
	At      time.Time          `json:"at"`
	WindowS float64            `json:"window_s"`
	RPS     map[string]float64 `json:"rps"`
}

// PutLoad publishes the router's load report, held by its session.
func (rs *RouterSession) PutLoad(ctx context.Context, l RouterLoad) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	_, _, err = rs.store.client.KV().Acquire(&api.KVPair{Key: rs.store.keys.RouterLoad(rs.ID), Value: data, Session: rs.Session}, writeOpts(ctx))
	return err
}
