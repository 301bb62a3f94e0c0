package integration

import (
	"fmt"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"
)

// BenchmarkControlAPI: tenant creates and same-tier plan changes through the
// API by 8 concurrent clients, with Consul CAS underneath (every create and
// every plan change is a bucket+manifest transaction). Reports throughput
// and p99 of each. Run with -benchtime=1x.
func BenchmarkControlAPI(b *testing.B) {
	s := newStack(b)
	// newStack's targets point nowhere; creates on a shared pool need no database.
	ms := &moveStack{stack: s}
	_, base, _ := ms.startController(nil)
	const clients, perClient = 8, 50
	run := func(name string, do func(client, i int) int) {
		var mu sync.Mutex
		var lat []time.Duration
		failed := 0
		var wg sync.WaitGroup
		start := time.Now()
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perClient; i++ {
					t0 := time.Now()
					st := do(c, i)
					d := time.Since(t0)
					mu.Lock()
					lat = append(lat, d)
					if st >= 300 {
						failed++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		if failed > 0 {
			b.Fatalf("%s: %d requests failed", name, failed)
		}
		rate := float64(len(lat)) / el.Seconds()
		p99 := lat[len(lat)*99/100]
		b.ReportMetric(rate, name+"/s")
		b.ReportMetric(float64(p99.Microseconds())/1000, name+"-p99-ms")
		b.Logf("%s: %d requests by %d clients in %s: %.0f/s, p50 %s, p99 %s", name, len(lat), clients, el.Round(time.Millisecond), rate,
			lat[len(lat)/2].Round(100*time.Microsecond), p99.Round(100*time.Microsecond))
	}
	for n := 0; n < b.N; n++ {
		prefix := fmt.Sprintf("r%d", n)
		run("create", func(c, i int) int {
			st, _ := call(b, "POST", base+"/v1/tenants", tokBilling, map[string]any{"id": fmt.Sprintf("%s-c%d-t%d", prefix, c, i), "plan": "free"}, nil)
			return st
		})
		run("plan-change", func(c, i int) int {
			plan := []string{"starter", "free"}[i%2]
			st, _ := call(b, "PUT", base+fmt.Sprintf("/v1/tenants/%s-c%d-t%d/plan", prefix, c, i), tokBilling, map[string]any{"plan": plan}, nil)
			if st != http.StatusOK {
				return 599 // a same-tier plan change must not start a move
			}
			return st
		})
	}
}
