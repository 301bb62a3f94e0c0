package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// RouterRegistration is a router's registration key as a migrator sees it.
//
// A router writes its key again after every session renewal Consul
// acknowledged, so the key's ModifyIndex moves at least once per renewal
// interval while the router runs. A router forwards only within LeaseTTL of
// *sending* a renewal whose key write then committed (router/lease.go): so
// once a migrator has seen the same ModifyIndex for longer than LeaseTTL by
// its own clock, counted from when it first saw that index, the router's
// lease has lapsed, and it forwards nothing until it has read the catalog
// afresh. The migrator may then cut over without its acknowledgement.
type RouterRegistration struct {
	ID string
	// ModifyIndex moves with every renewal.
	ModifyIndex uint64
	// LeaseTTL is the router's lease; 0 when the router does not say
	// (a router that does not write its key on renewal: never skipped).
	LeaseTTL time.Duration
}

// registration is the value of a router's key.
type registration struct {
	Registered time.Time `json:"registered"`
	LeaseTTLMS int64     `json:"lease_ttl_ms"`
	Renewal    uint64    `json:"renewal"`
}

// refresh writes the registration key again under the session, with the
// next renewal count: a write of the same value would leave the key's
// ModifyIndex where it was.
func (rs *RouterSession) refresh(ctx context.Context) error {
	rs.reg.Renewal++
	data, err := json.Marshal(rs.reg)
	if err != nil {
		return fmt.Errorf("router key %s: %w", rs.ID, err)
	}
	ok, _, err := rs.store.client.KV().Acquire(&api.KVPair{Key: rs.store.routerKey(rs.ID), Value: data, Session: rs.Session}, writeOpts(ctx))
	if err != nil {
		return fmt.Errorf("router key %s: %w", rs.ID, err)
	}
	if !ok {
		return fmt.Errorf("router key %s: held by another session", rs.ID)
	}
	return nil
}

// RouterRegistrations lists the live routers (their session holds their
// key) with their keys' ModifyIndex. Read with a Consistent ctx when a
// decision rests on an index not having moved.
func (s *Store) RouterRegistrations(ctx context.Context) ([]RouterRegistration, error) {
	pairs, _, err := s.client.KV().List(s.keys.Routers(), readOpts(ctx))
	if err != nil {
		return nil, fmt.Errorf("list routers: %w", err)
	}
	var out []RouterRegistration
	for _, p := range pairs {
		if p.Session == "" {
			continue
		}
		var reg registration
		_ = json.Unmarshal(p.Value, &reg) // an older router's timestamp: no lease declared
		out = append(out, RouterRegistration{
			ID: strings.TrimPrefix(p.Key, s.keys.Routers()), ModifyIndex: p.ModifyIndex,
			LeaseTTL: time.Duration(reg.LeaseTTLMS) * time.Millisecond,
		})
	}
	return out, nil
}
