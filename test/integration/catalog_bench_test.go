package integration

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/test/harness"
)

// BenchmarkCatalogMillion loads 1,000,000 tenants into a real Consul and
// measures what a router pays: cold start to a full snapshot, heap bytes
// per tenant, and the time from a placement write to the router's snapshot
// obeying it (p50/p99 over 200 writes). Run with -benchtime=1x.
func BenchmarkCatalogMillion(b *testing.B) {
	const n = 1_000_000
	c := harness.ConsulT(b)
	store := catalog.NewStore(c.Client(), "")
	ctx := context.Background()
	if err := store.Init(ctx, catalog.DefaultBuckets); err != nil {
		b.Fatal(err)
	}
	tenants := make([]catalog.Tenant, n)
	for i := range tenants {
		tenants[i] = catalog.Tenant{ID: fmt.Sprintf("tenant-%07d", i), Plan: "free", Tier: catalog.TierShared, Target: fmt.Sprintf("pool-%02d", i%100)}
	}
	start := time.Now()
	if err := store.BulkLoad(ctx, tenants, func(done, total int) {
		if done%1024 == 0 {
			b.Logf("bulk load: %d/%d buckets (%s)", done, total, time.Since(start).Round(time.Second))
		}
	}); err != nil {
		b.Fatal(err)
	}
	b.Logf("bulk load of %d tenants: %s", n, time.Since(start).Round(time.Millisecond))
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		w, err := catalog.NewWatcher(c.Client(), catalog.WatcherConfig{Logger: testLogger(b)})
		if err != nil {
			b.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		start := time.Now()
		go w.Run(wctx)
		<-w.Ready()
		cold := time.Since(start)
		if got := w.Snapshot().Len(); got != n {
			b.Fatalf("snapshot holds %d tenants", got)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perTenant := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n

		var lat, afterCommit []time.Duration
		for j := 0; j < 200; j++ {
			id := fmt.Sprintf("tenant-%07d", (j*4999)%n)
			target := fmt.Sprintf("moved-%d", j)
			t0 := time.Now()
			if _, err := store.UpdateTenant(ctx, id, func(t *catalog.Tenant) error { t.Target = target; return nil }); err != nil {
				b.Fatal(err)
			}
			committed := time.Now()
			for {
				snap := w.Snapshot()
				if rt, _ := snap.Lookup(id); rt.Target == target {
					break
				}
				select {
				case <-snap.Changed():
				case <-time.After(5 * time.Second):
					b.Fatalf("change to %s not obeyed", id)
				}
			}
			lat = append(lat, time.Since(t0))
			afterCommit = append(afterCommit, time.Since(committed))
		}
		cancel()
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		sort.Slice(afterCommit, func(i, j int) bool { return afterCommit[i] < afterCommit[j] })
		b.ReportMetric(float64(afterCommit[len(afterCommit)*99/100].Microseconds())/1000, "commit-to-obeyed-p99-ms")
		b.ReportMetric(cold.Seconds(), "cold-start-s")
		b.ReportMetric(perTenant, "heap-bytes/tenant")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "change-p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "change-p99-ms")
		b.Logf("cold start %s, %.0f heap bytes/tenant, write start→obeyed p50 %s p99 %s; write commit→obeyed p50 %s p99 %s",
			cold.Round(time.Millisecond), perTenant, lat[len(lat)/2], lat[len(lat)*99/100],
			afterCommit[len(afterCommit)/2], afterCommit[len(afterCommit)*99/100])
	}
}
