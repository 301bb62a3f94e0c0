package catalog

import "testing"

func TestSnapshotPlan(t *testing.T) {
	tenants := []Tenant{
		{ID: "a", Plan: "free", Tier: TierShared, Target: "pool-1", State: StateActive, Epoch: 1},
		{ID: "b", Plan: "pro", Tier: TierDedicatedDB, Target: "db-1", State: StateActive, Epoch: 1},
		{ID: "c", Plan: "enterprise", Tier: TierDedicatedCluster, Target: "cl-1", State: StateActive, Epoch: 1},
		{ID: "d", Plan: "free", Tier: TierShared, Target: "pool-2", State: StateDisabled, Epoch: 1},
	}
	s, err := snapshotFromTenants(tenants, 4)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	s.Range(func(r Route) {
		for _, tn := range tenants {
			if tn.ID == r.ID {
				seen++
				if got := s.Plan(r); got != tn.Plan {
					t.Errorf("Plan(%s) = %q, want %q", r.ID, got, tn.Plan)
				}
			}
		}
	})
	if seen != len(tenants) {
		t.Fatalf("ranged over %d of %d tenants", seen, len(tenants))
	}
	if r, ok := s.Lookup("b"); !ok || s.Plan(r) != "pro" {
		t.Fatalf("Plan of a looked-up route: %q", s.Plan(r))
	}
	var none *Snapshot
	if none.Plan(Route{ID: "a"}) != "" {
		t.Fatal("a nil snapshot knows a plan")
	}
}
