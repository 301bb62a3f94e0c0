package integration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/test/harness"
)

// Concurrent writers on the same bucket never lose an update: every write is
// a CAS transaction and losers retry.
func TestCatalogConcurrentUpdatesAreNotLost(t *testing.T) {
	c := harness.ConsulT(t)
	store := catalog.NewStore(c.Client(), "")
	ctx := testContext(t)
	if err := store.Init(ctx, 1); err != nil { // one bucket: maximum contention
		t.Fatal(err)
	}
	const writers, each = 8, 15
	for w := 0; w < writers; w++ {
		if _, err := store.CreateTenant(ctx, catalog.Tenant{ID: fmt.Sprintf("t%d", w), Plan: "free", Tier: catalog.TierShared, Target: "pool-1"}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				_, err := store.UpdateTenant(ctx, fmt.Sprintf("t%d", w), func(t *catalog.Tenant) error {
					n := 0
					fmt.Sscanf(t.Labels["n"], "%d", &n)
					t.Labels = map[string]string{"n": fmt.Sprint(n + 1)}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for w := 0; w < writers; w++ {
		got, err := store.GetTenant(ctx, fmt.Sprintf("t%d", w))
		if err != nil {
			t.Fatal(err)
		}
		if got.Labels["n"] != fmt.Sprint(each) {
			t.Fatalf("tenant t%d: %s updates survived, want %d", w, got.Labels["n"], each)
		}
	}
}

func TestCatalogRejectsBadWritesWithoutChange(t *testing.T) {
	c := harness.ConsulT(t)
	store := catalog.NewStore(c.Client(), "")
	ctx := testContext(t)
	if err := store.Init(ctx, 16); err != nil {
		t.Fatal(err)
	}
	good := catalog.Tenant{ID: "acme", Plan: "free", Tier: catalog.TierShared, Target: "pool-1"}
	if _, err := store.CreateTenant(ctx, good); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		do   func() error
		want error
	}{
		{"duplicate", func() error { _, err := store.CreateTenant(ctx, good); return err }, catalog.ErrExists},
		{"bad tier", func() error {
			_, err := store.UpdateTenant(ctx, "acme", func(t *catalog.Tenant) error { t.Tier = "gold"; return nil })
			return err
		}, catalog.ErrInvalid},
		{"epoch backwards", func() error {
			_, err := store.UpdateTenant(ctx, "acme", func(t *catalog.Tenant) error { t.Epoch = 0; return nil })
			return err
		}, catalog.ErrInvalid},
		{"missing", func() error {
			_, err := store.UpdateTenant(ctx, "nobody", func(*catalog.Tenant) error { return nil })
			return err
		}, catalog.ErrNotFound},
		{"bad id", func() error { _, err := store.GetTenant(ctx, "../etc"); return err }, catalog.ErrNotFound},
		{"bad target", func() error {
			return store.CreateTarget(ctx, catalog.Target{ID: "x", Tier: catalog.TierShared, Service: "s", DSN: "mysql://h/db"})
		}, catalog.ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			got, err := store.GetTenant(ctx, "acme")
			if err != nil || got.Tier != good.Tier || got.Epoch != 1 {
				t.Fatalf("tenant changed: %+v %v", got, err)
			}
		})
	}
}

// A change costs a watcher one bucket fetch, not the catalog.
func TestWatcherFetchesOnlyChangedBuckets(t *testing.T) {
	c := harness.ConsulT(t)
	store := catalog.NewStore(c.Client(), "")
	ctx := testContext(t)
	if err := store.Init(ctx, 256); err != nil {
		t.Fatal(err)
	}
	var tenants []catalog.Tenant
	for i := 0; i < 2000; i++ {
		tenants = append(tenants, catalog.Tenant{ID: fmt.Sprintf("tenant-%04d", i), Plan: "free", Tier: catalog.TierShared, Target: "pool-1"})
	}
	if err := store.BulkLoad(ctx, tenants, nil); err != nil {
		t.Fatal(err)
	}
	w, err := catalog.NewWatcher(c.Client(), catalog.WatcherConfig{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go w.Run(wctx)
	select {
	case <-w.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("watcher not ready")
	}
	if n := w.Snapshot().Len(); n != 2000 {
		t.Fatalf("snapshot has %d tenants", n)
	}
	before := w.BucketsFetched()
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("tenant-%04d", i*7)
		snap := w.Snapshot()
		if _, err := store.UpdateTenant(ctx, id, func(t *catalog.Tenant) error { t.Target = "pool-2"; return nil }); err != nil {
			t.Fatal(err)
		}
		select {
		case <-snap.Changed():
		case <-time.After(5 * time.Second):
			t.Fatal("no new snapshot")
		}
		waitFor(t, 5*time.Second, "change visible", func() bool {
			rt, _ := w.Snapshot().Lookup(id)
			return rt.Target == "pool-2" && rt.Epoch == 2
		})
	}
	if got := w.BucketsFetched() - before; got != 5 {
		t.Fatalf("5 changes fetched %d buckets, want 5", got)
	}
	if n := w.Snapshot().Len(); n != 2000 {
		t.Fatalf("snapshot has %d tenants after changes", n)
	}
}

// The watcher resets when Consul's index goes backwards (a rebuilt cluster)
// and, while Consul is down, keeps its last snapshot and reports its age.
func TestWatcherSurvivesRestartAndIndexReset(t *testing.T) {
	c := harness.ConsulT(t) // dev agent: a restart comes back empty, index from 1
	store := catalog.NewStore(c.Client(), "")
	ctx := testContext(t)
	seed := func(target string) {
		if err := store.Init(ctx, 16); err != nil {
			t.Fatal(err)
		}
		if _, err := store.CreateTenant(ctx, catalog.Tenant{ID: "acme", Plan: "free", Tier: catalog.TierShared, Target: target}); err != nil {
			t.Fatal(err)
		}
	}
	seed("pool-1")
	// Pad the index so the rebuilt agent's index is lower.
	for i := 0; i < 30; i++ {
		if _, err := store.UpdateTenant(ctx, "acme", func(t *catalog.Tenant) error { t.Plan = fmt.Sprintf("p%d", i); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	w, _ := catalog.NewWatcher(c.Client(), catalog.WatcherConfig{Logger: testLogger(t), RetryMax: 200 * time.Millisecond})
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go w.Run(wctx)
	<-w.Ready()
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond)
	if rt, ok := w.Snapshot().Lookup("acme"); !ok || rt.Target != "pool-1" {
		t.Fatal("lost the snapshot while Consul was down")
	}
	if w.Age() < 400*time.Millisecond || w.LastError() == "" {
		t.Fatalf("age %s, last error %q while Consul is down", w.Age(), w.LastError())
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	seed("pool-9")
	waitFor(t, 10*time.Second, "watcher follows the rebuilt catalog", func() bool {
		rt, _ := w.Snapshot().Lookup("acme")
		return rt.Target == "pool-9"
	})
}

// A router's registration key moves on every renewal (a migrator skips a
// router whose key stood still for longer than its lease), and says the
// lease. Before the renewal count was in the value, Consul kept the index
// of the unchanged write: every router looked stalled.
func TestRouterRegistrationMovesOnRenewal(t *testing.T) {
	c := harness.ConsulT(t)
	store := catalog.NewStore(c.Client(), "")
	ctx := testContext(t)
	sess, err := store.RegisterRouter(ctx, "r1", 7*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.End(ctx)
	index := func() catalog.RouterRegistration {
		regs, err := store.RouterRegistrations(ctx)
		if err != nil || len(regs) != 1 {
			t.Fatalf("registrations: %v %v", regs, err)
		}
		return regs[0]
	}
	before := index()
	if before.ID != "r1" || before.LeaseTTL != 7*time.Second {
		t.Fatalf("registration %+v, want r1 with a 7s lease", before)
	}
	for i := range 3 {
		if err := sess.Renew(ctx); err != nil {
			t.Fatal(err)
		}
		after := index()
		if after.ModifyIndex <= before.ModifyIndex {
			t.Fatalf("renewal %d: the key's index stayed at %d", i+1, after.ModifyIndex)
		}
		before = after
	}
}
