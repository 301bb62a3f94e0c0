package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/consul/api"
)

// UpdatePolicy applies fn to the current policy and writes it back with a
// check-and-set, retrying when it loses a race. An error from fn, or a
// policy that fn left invalid, aborts and changes nothing.
func (s *Store) UpdatePolicy(ctx context.Context, fn func(*PlanPolicy) error) (PlanPolicy, error) {
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		p, idx, err := s.policy(ctx)
		if errors.Is(err, ErrNotFound) {
			p, idx = DefaultPlanPolicy(), 0
		} else if err != nil {
			return PlanPolicy{}, err
		}
		if err := fn(&p); err != nil {
			return PlanPolicy{}, err
		}
		if err := p.Validate(); err != nil {
			return PlanPolicy{}, err
		}
		data, err := json.Marshal(p)
		if err != nil {
			return PlanPolicy{}, err
		}
		ok, _, err := s.client.KV().CAS(&api.KVPair{Key: s.keys.Policy(), Value: data, ModifyIndex: idx}, writeOpts(ctx))
		if err != nil {
			return PlanPolicy{}, fmt.Errorf("update policy: %w", err)
		}
		if ok {
			return p, nil
		}
		if err := casBackoff.Sleep(ctx, attempt+1); err != nil {
			return PlanPolicy{}, err
		}
	}
	return PlanPolicy{}, fmt.Errorf("policy: %w after %d attempts", ErrConflict, maxCASAttempts)
}

// SetTenantLimits sets (nil: clears) a tenant's limits override. Routers
// enforce it from their next snapshot; the epoch does not change (limits
// are not placement).
func (s *Store) SetTenantLimits(ctx context.Context, id string, o *LimitsOverride) (Tenant, error) {
	if err := o.Validate(); err != nil {
		return Tenant{}, err
	}
	return s.UpdateTenant(ctx, id, func(t *Tenant) error {
		t.Limits = o
		return nil
	})
}

// RouterLoads returns the load report of every router whose session still
// holds it, by router id: a router that is gone has none.
func (s *Store) RouterLoads(ctx context.Context) (map[string]RouterLoad, error) {
	pairs, _, err := s.client.KV().List(s.keys.RouterLoads(), readOpts(ctx))
	if err != nil {
		return nil, fmt.Errorf("list router loads: %w", err)
	}
	out := make(map[string]RouterLoad, len(pairs))
	for _, p := range pairs {
		var l RouterLoad
		if p.Session == "" || json.Unmarshal(p.Value, &l) != nil {
			continue
		}
		out[strings.TrimPrefix(p.Key, s.keys.RouterLoads())] = l
	}
	return out, nil
}
