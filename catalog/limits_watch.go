package catalog

import (
	"context"
	"encoding/json"
)

// watchPolicy keeps the snapshot's plan policy (the limits it enforces)
// current: a policy change reaches routers without a restart. A missing
// policy is an empty one (no plan limits).
func (w *Watcher) watchPolicy(ctx context.Context, index uint64) (uint64, error) {
	pair, meta, err := w.store.client.KV().Get(w.store.keys.Policy(), w.blockingOpts(ctx, index))
	if err != nil {
		return index, err
	}
	if meta.LastIndex == index && index != 0 {
		return index, nil
	}
	p := &PlanPolicy{}
	if pair != nil {
		if err := json.Unmarshal(pair.Value, p); err != nil {
			// Never a reason to stop serving: keep enforcing the policy
			// read before (none at all on a first read).
			w.cfg.Logger.Warn("unreadable plan policy; keeping the limits read before", "err", err)
			p = nil
		}
	}
	w.mu.Lock()
	cur := w.snap.Load()
	next := *cur
	next.policy = p
	if p == nil && cur.policy == nil {
		next.policy = &PlanPolicy{}
	}
	w.swapLocked(cur, &next)
	w.mu.Unlock()
	w.gotPolicy.Store(true)
	w.markReady()
	return meta.LastIndex, nil
}

// limitsSwap is the part of every snapshot swap that concerns limits: the
// policy carries over unless the new snapshot brings its own, and the
// tables are rebuilt for the plans and overrides known now.
func (w *Watcher) limitsSwap(old, next *Snapshot) {
	if next.policy == nil {
		next.policy = old.policy
	}
	next.limitTables.index(next.policy, w.names)
}
