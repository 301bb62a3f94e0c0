package catalog

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

func millionTenants(n int) []Tenant {
	out := make([]Tenant, n)
	for i := range out {
		out[i] = Tenant{ID: fmt.Sprintf("tenant-%07d", i), Plan: "free", Tier: TierShared,
			Target: fmt.Sprintf("pool-%02d", i%100), State: StateActive, Epoch: 1}
	}
	return out
}

func TestSnapshotLookup(t *testing.T) {
	tenants := millionTenants(5000)
	tenants[42].State = StateFrozen
	tenants[43].Tier, tenants[43].Target = TierDedicatedCluster, "cl-1"
	s, err := snapshotFromTenants(tenants, 64)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 5000 {
		t.Fatalf("len %d", s.Len())
	}
	for _, tn := range tenants {
		r, ok := s.Lookup(tn.ID)
		if !ok || r.ID != tn.ID || r.Target != tn.Target || r.Tier != tn.Tier || r.State != tn.State || r.Epoch != tn.Epoch {
			t.Fatalf("lookup %s = %+v %v", tn.ID, r, ok)
		}
	}
	if _, ok := s.Lookup("tenant-9999999"); ok {
		t.Fatal("found a tenant that does not exist")
	}
	var nilSnap *Snapshot
	if _, ok := nilSnap.Lookup("x"); ok {
		t.Fatal("nil snapshot found a tenant")
	}
}

// BenchmarkSnapshotLookup is the router's per-request catalog cost at one
// million tenants, for requests spread over a working set of 64 (cache-warm)
// and 65536 tenants (every lookup a cache and TLB miss). It also reports the
// snapshot's heap bytes per tenant.
func BenchmarkSnapshotLookup(b *testing.B) {
	for _, working := range []int{64, 65536} {
		b.Run(fmt.Sprintf("working-set-%d", working), func(b *testing.B) { benchLookup(b, working) })
	}
}

func benchLookup(b *testing.B, working int) {
	const n = 1_000_000
	tenants := millionTenants(n)
	ids := make([]string, working)
	for i := range ids {
		ids[i] = tenants[(i*7919)%n].ID
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s, err := snapshotFromTenants(tenants, DefaultBuckets)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(tenants)
	perTenant := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
	b.ReportAllocs()
	b.ResetTimer()
	found := 0
	mask := len(ids) - 1
	for i := 0; i < b.N; i++ {
		if _, ok := s.Lookup(ids[i&mask]); ok {
			found++
		}
	}
	b.StopTimer()
	if found != b.N {
		b.Fatalf("found %d of %d", found, b.N)
	}
	b.ReportMetric(perTenant, "heap-bytes/tenant")
	runtime.KeepAlive(s)
}

func TestSnapshotRange(t *testing.T) {
	tenants := millionTenants(3000)
	s, err := snapshotFromTenants(tenants, 64)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	s.Range(func(r Route) { seen[r.ID] = r.Target })
	if len(seen) != len(tenants) {
		t.Fatalf("range saw %d tenants, want %d", len(seen), len(tenants))
	}
	for _, tn := range tenants {
		if seen[tn.ID] != tn.Target {
			t.Fatalf("%s: target %q, want %q", tn.ID, seen[tn.ID], tn.Target)
		}
	}
}

// BenchmarkMemoryLatency is the floor under a lookup that misses the
// caches: one dependent random read in 128 MiB (a pointer chase over a
// random cycle), the cost of a single cache and TLB miss on this machine. A
// lookup over a working set larger than the caches needs at least one.
func BenchmarkMemoryLatency(b *testing.B) {
	const n = 32 << 20 // uint32s: 128 MiB
	next := make([]uint32, n)
	perm := rand.New(rand.NewPCG(7, 7)).Perm(n)
	for i := 0; i < n; i++ {
		next[perm[i]] = uint32(perm[(i+1)%n])
	}
	b.ResetTimer()
	p := uint32(0)
	for i := 0; i < b.N; i++ {
		p = next[p]
	}
	runtime.KeepAlive(p)
}
