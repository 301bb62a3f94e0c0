package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/migrator"
)

// Rebalance and drain are dry runs unless the body says "dry_run": false.
// No body, an empty one, {}, "dry_run": null and "dry_run": true answer the
// plan (200) and change nothing: no move, no target cordoned, every tenant
// where it was. "dry_run": false starts the moves, and a drain cordons its
// target first.
func TestPlanEndpointsDryRunByDefault(t *testing.T) {
	s := newMoveStack(t)
	ctx := testContext(t)
	for _, id := range []string{"pool-1", "pool-2"} {
		if _, err := s.store.UpdateTarget(ctx, id, func(tg *catalog.Target) error { tg.Capacity.Tenants = 10; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	var tenants []catalog.Tenant
	for i := 0; i < 4; i++ {
		tenants = append(tenants, catalog.Tenant{ID: fmt.Sprintf("dry-%d", i), Plan: "free", Tier: catalog.TierShared, Target: "pool-1"})
	}
	if err := s.store.BulkLoad(ctx, tenants, nil); err != nil {
		t.Fatal(err)
	}
	_, base, _ := s.startController(func(c *controller.Config) { c.Retention = time.Millisecond })
	mg := s.migrator(nil)
	unchanged := func(what string) {
		t.Helper()
		if m, err := mg.List(ctx); err != nil || len(m) != 0 {
			t.Fatalf("%s: %d moves started (%v)", what, len(m), err)
		}
		for _, id := range []string{"pool-1", "pool-2"} {
			if tg, _, err := s.store.GetTarget(ctx, id); err != nil || tg.Cordoned {
				t.Fatalf("%s: target %s cordoned=%v (%v)", what, id, tg.Cordoned, err)
			}
		}
		for _, tn := range tenants {
			if got, err := s.store.GetTenant(ctx, tn.ID); err != nil || got.Target != tn.Target {
				t.Fatalf("%s: tenant %s on %q (%v), want %s", what, tn.ID, got.Target, err, tn.Target)
			}
		}
	}
	bodies := []struct {
		name string
		body any
	}{{"no body", nil}, {"empty body", ""}, {"{}", map[string]any{}}, {"null", `{"dry_run": null}`}, {"true", map[string]any{"dry_run": true}}}
	for _, path := range []string{"/v1/rebalance", "/v1/targets/pool-1/drain"} {
		for _, b := range bodies {
			what := "POST " + path + " with " + b.name
			status, out := call(t, "POST", base+path, tokOperator, b.body, nil)
			if status != 200 || out["dry_run"] != true {
				t.Fatalf("%s: %d %v, want 200 and a dry run", what, status, out)
			}
			if planned := out["plan"].(map[string]any)["moves"].([]any); len(planned) == 0 {
				t.Fatalf("%s: an empty plan proves nothing: %v", what, out)
			}
			unchanged(what)
		}
	}

	status, out := call(t, "POST", base+"/v1/rebalance", tokOperator, map[string]any{"dry_run": false}, nil)
	if status != 202 || out["dry_run"] != false || len(out["moves"].([]any)) == 0 {
		t.Fatalf("rebalance with dry_run false: %d %v", status, out)
	}
	started := len(out["moves"].([]any))
	waitFor(t, 2*time.Minute, "the rebalance's moves switched", func() bool {
		moves, _ := mg.List(ctx)
		for _, m := range moves {
			if m.Status == migrator.StatusPaused {
				t.Fatalf("move %s paused: %s", m.ID, m.Error)
			}
			if m.Phase != migrator.PhaseRetained && m.Phase != migrator.PhaseDone {
				return false
			}
		}
		return len(moves) == started
	})

	status, out = call(t, "POST", base+"/v1/targets/pool-1/drain", tokOperator, map[string]any{"dry_run": false}, nil)
	if status != 202 || out["dry_run"] != false || len(out["moves"].([]any)) == 0 {
		t.Fatalf("drain with dry_run false: %d %v", status, out)
	}
	if tg, _, err := s.store.GetTarget(ctx, "pool-1"); err != nil || !tg.Cordoned {
		t.Fatalf("drained target not cordoned: %+v %v", tg, err)
	}
	if moves, _ := mg.List(ctx); len(moves) != started+len(out["moves"].([]any)) {
		t.Fatalf("%d moves after the drain, want %d", len(moves), started+len(out["moves"].([]any)))
	}
}
