package integration

import (
	"context"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

func dsnOf(t *testing.T, s *moveStack, target, tenant string) string {
	t.Helper()
	tg, _, err := s.store.GetTarget(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	dsn, err := tg.DSNFor(tenant)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// Writer storm: concurrent clients insert, update and delete through two
// routers for the whole move. Afterwards: zero failed requests, every
// acknowledged write on the target, source at the fence equal to the target.
func TestMoveUnderWriterStorm(t *testing.T) {
	s := newMoveStack(t)
	s.seedTenant("stormy", "free", catalog.TierShared, "pool-1", 300)
	s.seedTenant("neighbour", "free", catalog.TierShared, "pool-1", 10)
	ctx := context.Background()
	mg := s.migrator(nil)
	storm := s.startStorm("stormy", 4, 2*time.Millisecond)
	neighbours := s.startStorm("neighbour", 1, 5*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	m, _, err := mg.Create(ctx, migrator.Request{Tenant: "stormy", To: "db-1", Reason: "plan upgrade",
		Options: migrator.Options{ChunkRows: 100, Retention: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	if err := mg.Run(ctx, m.ID); err != nil {
		t.Fatalf("move: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	storm.halt()
	neighbours.halt()
	m, _ = mg.Get(ctx, m.ID)
	if m.Phase != migrator.PhaseRetained {
		t.Fatalf("move ended in %s (%s): %s", m.Phase, m.Status, m.Error)
	}
	if f := storm.failures.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed during the move: %v", f, storm.requests.Load(), storm.failLog)
	}
	if f := neighbours.failures.Load(); f != 0 {
		t.Fatalf("neighbour tenant: %d failed requests: %v", f, neighbours.failLog)
	}
	t.Logf("%d requests, 0 failed; served by %v; switch pause %s", storm.requests.Load(), storm.servedBy, m.Pause)
	if storm.servedBy["db-1"] == 0 || storm.servedBy["pool-1"] == 0 {
		t.Fatalf("writes were not spread across the move: %v", storm.servedBy)
	}
	tenant, _ := s.store.GetTenant(ctx, "stormy")
	if tenant.Target != "db-1" || tenant.Tier != catalog.TierDedicatedDB || tenant.State != catalog.StateActive {
		t.Fatalf("catalog after move: %+v", tenant)
	}
	dst := dsnOf(t, s, "db-1", "stormy")
	storm.checkModel(t, dst)
	after := map[int64]bool{}
	for id, by := range storm.touchedOn {
		if by == "db-1" {
			after[id] = true
		}
	}
	compareAtFence(t, s.pgPool.DSN("pool"), dst, "stormy", after)
}
