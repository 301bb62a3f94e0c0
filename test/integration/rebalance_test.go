package integration

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/migrator"
)

// Rebalance of 3 uneven pools holding 300 tenants: the dry-run plan stays
// within bounds; applied through the API, every pool ends within the spread
// and every tenant's data is intact.
func TestRebalanceThreePools(t *testing.T) {
	s := newMoveStack(t)
	ctx := testContext(t)
	if err := s.pgPool.CreateDatabase(ctx, "pool3"); err != nil {
		t.Fatal(err)
	}
	mustSchema(t, s.pgPool.DSN("pool3"))
	if err := s.store.CreateTarget(ctx, catalog.Target{ID: "pool-3", Tier: catalog.TierShared, Service: "app-shared", DSN: s.pgPool.DSN("pool3")}); err != nil {
		t.Fatal(err)
	}
	dbName := map[string]string{"pool-1": "pool", "pool-2": "pool2", "pool-3": "pool3"}
	for id := range dbName {
		if _, err := s.store.UpdateTarget(ctx, id, func(tg *catalog.Target) error { tg.Capacity.Tenants = 300; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	var tenants []catalog.Tenant
	for i := 0; i < 300; i++ {
		pool := "pool-1"
		switch {
		case i >= 270:
			pool = "pool-3"
		case i >= 200:
			pool = "pool-2"
		}
		tenants = append(tenants, catalog.Tenant{ID: fmt.Sprintf("t%03d", i), Plan: "free", Tier: catalog.TierShared, Target: pool})
	}
	if err := s.store.BulkLoad(ctx, tenants, nil); err != nil {
		t.Fatal(err)
	}
	dbs := map[string]*sqlx.DB{}
	for target, name := range dbName {
		dbs[target] = sqlxMust(t, s.pgPool.DSN(name))
	}
	for _, tn := range tenants {
		db := dbs[tn.Target]
		if _, err := db.Exec(`INSERT INTO orders (tenant_id, item, quantity, price_cents) SELECT $1, 'o' || g, g, g FROM generate_series(1, 5) g`, tn.ID); err != nil {
			t.Fatal(err)
		}
	}
	checksum := func(id, target string) string {
		var sum string
		_ = dbs[target].Get(&sum, `SELECT count(*) || ':' || coalesce(string_agg(md5(item || quantity || price_cents), ',' ORDER BY id), '') FROM orders WHERE tenant_id = $1`, id)
		return sum
	}
	before := map[string]string{}
	for _, tn := range tenants {
		before[tn.ID] = checksum(tn.ID, tn.Target)
	}
	_, base, _ := s.startController(func(c *controller.Config) { c.MaxConcurrentMoves = 4; c.Retention = time.Millisecond })

	status, body := call(t, "POST", base+"/v1/rebalance", tokOperator, map[string]any{"dry_run": true}, nil)
	if status != 200 {
		t.Fatalf("dry run: %d %v", status, body)
	}
	plan := body["plan"].(map[string]any)
	planned := plan["moves"].([]any)
	t.Logf("dry-run plan: %d moves; before %v; after %v", len(planned), plan["before"], plan["after"])
	if len(planned) == 0 || plan["converged"] != true {
		t.Fatalf("dry run planned %d moves, converged %v", len(planned), plan["converged"])
	}
	mean := 300.0 / 900
	for pool, u := range plan["after"].(map[string]any) {
		if math.Abs(u.(float64)-mean) > 0.1+1e-9 {
			t.Fatalf("plan leaves %s at %.3f, outside %.3f ± 0.1", pool, u, mean)
		}
	}
	if m, _ := s.migrator(nil).List(ctx); len(m) != 0 {
		t.Fatal("a dry run started moves")
	}
	status, body = call(t, "POST", base+"/v1/rebalance", tokOperator, map[string]any{"dry_run": false}, nil)
	if status != 202 {
		t.Fatalf("apply: %d %v", status, body)
	}
	started := body["moves"].([]any)
	start := time.Now()
	waitFor(t, 4*time.Minute, "every move done", func() bool {
		moves, _ := s.migrator(nil).List(ctx)
		for _, m := range moves {
			if m.Status == migrator.StatusPaused {
				t.Fatalf("move %s paused: %s", m.ID, m.Error)
			}
			if m.Phase != migrator.PhaseDone {
				return false
			}
		}
		return len(moves) == len(started)
	})
	t.Logf("%d moves done in %s", len(started), time.Since(start).Round(time.Millisecond))
	all, _ := s.store.ListTenants(ctx)
	count := map[string]int{}
	for _, tn := range all {
		count[tn.Target]++
		if got := checksum(tn.ID, tn.Target); got != before[tn.ID] {
			t.Fatalf("tenant %s on %s: data %q, was %q", tn.ID, tn.Target, got, before[tn.ID])
		}
	}
	for pool := range dbName {
		if u := float64(count[pool]) / 300; math.Abs(u-mean) > 0.1+1e-9 {
			t.Fatalf("after the rebalance %s holds %d tenants (%.3f), outside the spread", pool, count[pool], u)
		}
	}
	t.Logf("tenants per pool after: %v", count)
	status, body = call(t, "POST", base+"/v1/rebalance", tokOperator, map[string]any{"dry_run": true}, nil)
	if status != 200 || len(body["plan"].(map[string]any)["moves"].([]any)) != 0 {
		t.Fatalf("a second plan is not empty: %v", body)
	}
}
