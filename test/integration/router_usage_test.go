package integration

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/router"
)

// clientUsage is what the clients counted for one tenant.
type clientUsage struct {
	mu       sync.Mutex
	requests [5]uint64 // by status class
	in, out  uint64
}

func (u *clientUsage) add(status int, in, out int) {
	u.mu.Lock()
	u.requests[status/100-1]++
	u.in += uint64(in)
	u.out += uint64(out)
	u.mu.Unlock()
}

func (u *clientUsage) total() uint64 {
	var n uint64
	for _, v := range u.requests {
		n += v
	}
	return n
}

// usageRouter is a router slot the clients aim at; a restart swaps the
// router in it (the same router id, a new process's worth of state).
type usageRouter struct {
	id  string
	cur atomic.Pointer[runningRouter]
}

func startUsageRouter(s *stack, id string, netHTTP bool) *runningRouter {
	return s.router(func(c *router.Config) {
		c.ID = id
		c.NetHTTPOnly = netHTTP
		c.Observe.UsageFlushEvery = 300 * time.Millisecond
	})
}

// usageClient sends GETs and POSTs with bodies of random sizes for one
// tenant through one router slot until stop, counting what it got.
func usageClient(hc *http.Client, slot *usageRouter, tenant string, u *clientUsage, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	rng := rand.New(rand.NewPCG(uint64(len(tenant)), uint64(time.Now().UnixNano())))
	for {
		select {
		case <-stop:
			return
		default:
		}
		method, body := "GET", []byte(nil)
		path := "/t/" + tenant + "/orders?page=" + strconv.Itoa(rng.IntN(100))
		if rng.IntN(2) == 0 {
			method, body = "POST", bytes.Repeat([]byte("x"), rng.IntN(3000))
		}
		if rng.IntN(20) == 0 {
			path = "/t/" + tenant + "/x-missing" // still forwarded: the echo answers 200
		}
		req, _ := http.NewRequest(method, slot.cur.Load().url+path, bytes.NewReader(body))
		resp, err := hc.Do(req)
		if err != nil {
			time.Sleep(5 * time.Millisecond) // a router restarting
			continue
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			continue
		}
		u.add(resp.StatusCode, len(body), int(n))
	}
}

// Usage totals through three routers (one on the net/http engine), one of
// them restarted mid-run under the same id, match what the clients counted
// within 0.1%; the export agrees. SWITCHYARD_SOAK=1 runs 5 minutes.
func TestUsageTotalsMatchClientsAcrossRouterRestart(t *testing.T) {
	s := newStack(t)
	c := s.consul.Client()
	startBackend(t, c, "app-shared", nil)
	tenants := []string{"meter-a", "meter-b", "meter-c"}
	for _, id := range append(tenants, "meter-warm") {
		s.tenant(id, "free", catalog.TierShared, "pool-1")
	}
	start := time.Now()
	slots := []*usageRouter{{id: "usage-r1"}, {id: "usage-r2"}, {id: "usage-r3"}}
	for i, sl := range slots {
		sl.cur.Store(startUsageRouter(s, sl.id, i == 2))
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	for _, sl := range slots { // warm-ups go to a tenant not compared
		waitFor(t, 10*time.Second, "backend healthy", func() bool {
			resp, err := hc.Get(sl.cur.Load().url + "/t/meter-warm/warmup")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	}
	counted := map[string]*clientUsage{}
	for _, id := range tenants {
		counted[id] = &clientUsage{}
	}

	run := 20 * time.Second
	if os.Getenv("SWITCHYARD_SOAK") == "1" {
		run = 5 * time.Minute
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, sl := range slots {
		for _, id := range tenants {
			wg.Add(1)
			go usageClient(hc, sl, id, counted[id], stop, &wg)
		}
	}
	time.Sleep(run / 2)
	old := slots[1].cur.Load()
	old.cancel() // graceful: drains, then publishes its last counts
	if err := <-old.done; err != nil {
		t.Fatalf("router stop: %v", err)
	}
	old.done <- nil // for the cleanup's wait
	slots[1].cur.Store(startUsageRouter(s, slots[1].id, false))
	time.Sleep(run / 2)
	close(stop)
	wg.Wait()
	time.Sleep(time.Second) // three flushes

	api := httptest.NewServer(newUsageController(t, s))
	defer api.Close()
	from, to := start.Add(-time.Minute).UTC().Format(time.RFC3339), time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
	exported := exportTotals(t, api.URL+"/v1/usage/export?format=csv&from="+from+"&to="+to)
	for _, id := range tenants {
		want := counted[id]
		status, body := call(t, "GET", api.URL+"/v1/tenants/"+id+"/usage?step=1m&from="+from+"&to="+to, tokViewer, nil, nil)
		if status != 200 {
			t.Fatalf("usage %s: %d %v", id, status, body)
		}
		total := body["total"].(map[string]any)
		got := uint64(total["requests"].(float64))
		t.Logf("%s: clients counted %d requests, %d bytes in, %d out; the routers %v", id, want.total(), want.in, want.out, total)
		within(t, id+" requests", got, want.total())
		within(t, id+" 2xx", uint64(total["by_status_class"].(map[string]any)["2xx"].(float64)), want.requests[1])
		within(t, id+" bytes in", uint64(total["bytes_in"].(float64)), want.in)
		within(t, id+" bytes out", uint64(total["bytes_out"].(float64)), want.out)
		if exported[id] != got {
			t.Errorf("%s: export says %d requests, the usage query %d", id, exported[id], got)
		}
	}
	sources := usageSources(t, s, start)
	if n := sources["usage-r2"]; n != 2 {
		t.Errorf("router usage-r2 published from %d processes, want 2 (one per run): %v", n, sources)
	}
}

// within fails unless got is within 0.1% of want.
func within(t *testing.T, what string, got, want uint64) {
	t.Helper()
	diff := float64(got) - float64(want)
	if diff < 0 {
		diff = -diff
	}
	if diff > 0.001*float64(want) || want == 0 && got != 0 {
		t.Errorf("%s: routers metered %d, clients counted %d (off by %.3f%%)", what, got, want, 100*diff/max(1, float64(want)))
	}
}

// exportTotals reads the CSV export: requests per tenant.
func exportTotals(t *testing.T, url string) map[string]uint64 {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+tokBilling)
	resp, err := shortClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("export: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	records, err := csv.NewReader(resp.Body).ReadAll()
	if err != nil || len(records) < 1 || records[0][0] != "tenant" || records[0][3] != "requests" {
		t.Fatalf("export CSV: %v %v", records, err)
	}
	out := map[string]uint64{}
	for _, r := range records[1:] {
		n, _ := strconv.ParseUint(r[3], 10, 64)
		out[r[0]] += n
	}
	return out
}

// usageSources counts, per router id, the processes that published usage.
func usageSources(t *testing.T, s *stack, since time.Time) map[string]int {
	t.Helper()
	pairs, _, err := s.consul.Client().KV().List(s.store.Prefix()+"/usage/", nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	out := map[string]int{}
	for _, p := range pairs {
		src := p.Key[strings.LastIndex(p.Key, "/")+1:]
		if !seen[src] {
			seen[src] = true
			out[src[:strings.LastIndex(src, ".")]]++
		}
	}
	return out
}

func newUsageController(t *testing.T, s *stack) http.Handler {
	t.Helper()
	cfg := controllerConfig()
	cfg.Logger = testLogger(t)
	srv, err := controller.New(cfg, s.consul.Client())
	if err != nil {
		t.Fatal(err)
	}
	return srv.Handler()
}

// Bad usage queries get 400 naming the parameter, an unknown tenant 404.
func TestUsageAPIBadInput(t *testing.T) {
	s := newStack(t)
	s.tenant("known", "free", catalog.TierShared, "pool-1")
	api := httptest.NewServer(newUsageController(t, s))
	defer api.Close()
	now := time.Now().UTC()
	ts := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }
	hour := now.Truncate(time.Minute).Add(-time.Hour).Format(time.RFC3339)
	cases := []struct {
		name   string
		path   string
		token  string
		status int
		param  string
	}{
		{"from after to", "/v1/tenants/known/usage?from=" + ts(0) + "&to=" + ts(-time.Hour), tokViewer, 400, "from"},
		{"from equal to", "/v1/tenants/known/usage?from=" + ts(-time.Hour) + "&to=" + ts(-time.Hour), tokViewer, 400, "from"},
		{"from beyond the retention", "/v1/tenants/known/usage?from=" + ts(-8*24*time.Hour), tokViewer, 400, "from"},
		{"from not a time", "/v1/tenants/known/usage?from=yesterday", tokViewer, 400, "from"},
		{"to not a time", "/v1/tenants/known/usage?to=2026-13-01", tokViewer, 400, "to"},
		{"step not a duration", "/v1/tenants/known/usage?step=often", tokViewer, 400, "step"},
		{"step under a minute", "/v1/tenants/known/usage?step=30s", tokViewer, 400, "step"},
		{"step not whole minutes", "/v1/tenants/known/usage?step=90s", tokViewer, 400, "step"},
		{"step negative", "/v1/tenants/known/usage?step=-1h", tokViewer, 400, "step"},
		{"too many steps", "/v1/usage/export?step=1m&from=" + ts(-7*24*time.Hour+time.Hour), tokBilling, 400, "step"},
		{"export format", "/v1/usage/export?format=xml", tokBilling, 400, "format"},
		{"export range", "/v1/usage/export?from=" + ts(time.Hour) + "&to=" + ts(0), tokBilling, 400, "from"},
		{"unknown tenant", "/v1/tenants/nobody/usage", tokViewer, 404, ""},
		{"viewer may not export", "/v1/usage/export", tokViewer, 403, ""},
		{"good query, no usage yet", "/v1/tenants/known/usage?step=10m&from=" + hour + "&to=" + now.Truncate(time.Minute).Format(time.RFC3339), tokViewer, 200, ""},
		{"good export, JSON", "/v1/usage/export", tokBilling, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := call(t, "GET", api.URL+tc.path, tc.token, nil, nil)
			if status != tc.status {
				t.Fatalf("%s: %d %v, want %d", tc.path, status, body, tc.status)
			}
			if tc.param != "" && (body["parameter"] != tc.param || body["message"] == "" || body["error"] != "invalid_parameter") {
				t.Fatalf("%s: body %v does not name parameter %q", tc.path, body, tc.param)
			}
			if tc.status == 200 && strings.Contains(tc.path, "/usage?") {
				if pts := body["points"].([]any); len(pts) != 6 {
					t.Fatalf("an hour in 10m steps: %d points", len(pts))
				}
			}
		})
	}
}

// safeBuffer is a bytes.Buffer for a writer goroutine and a reader.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) lines() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// Both engines send X-Request-Id upstream (the client's only when trusted)
// and log one line per request with it.
func TestRequestIDAndAccessLogOnBothEngines(t *testing.T) {
	s := newStack(t)
	c := s.consul.Client()
	backend := startBackend(t, c, "app-shared", nil)
	s.tenant("logco", "free", catalog.TierShared, "pool-1")
	for _, trust := range []bool{false, true} {
		t.Run(fmt.Sprintf("trusted=%v", trust), func(t *testing.T) {
			log := &safeBuffer{}
			r := s.router(func(c *router.Config) {
				c.Observe.AccessLog, c.Observe.TrustRequestID = log, trust
			})
			hc := &http.Client{Timeout: 5 * time.Second}
			waitFor(t, 10*time.Second, "backend healthy", func() bool {
				resp, err := hc.Get(r.url + "/t/logco/warmup")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == 200
			})
			for _, engine := range []string{"fast", "net/http"} {
				var body io.Reader = strings.NewReader("abc") // Content-Length: the fast path
				if engine == "net/http" {
					body = io.MultiReader(strings.NewReader("abc")) // chunked: handed to net/http
				}
				req, _ := http.NewRequest("POST", r.url+"/t/logco/orders?secret=1", body)
				req.Header.Set("X-Request-Id", "client-id-"+engine)
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var echo echoReply
				_ = json.NewDecoder(resp.Body).Decode(&echo)
				resp.Body.Close()
				ids := echo.Headers.Values("X-Request-Id")
				if len(ids) != 1 {
					t.Fatalf("%s: backend got X-Request-Id %v, want one", engine, ids)
				}
				if trust && ids[0] != "client-id-"+engine || !trust && len(ids[0]) != 32 {
					t.Fatalf("%s trusted=%v: backend got X-Request-Id %q", engine, trust, ids[0])
				}
				var line map[string]any
				waitFor(t, 5*time.Second, "access log line", func() bool {
					for _, l := range log.lines() {
						if l["request_id"] == ids[0] {
							line = l
							return true
						}
					}
					return false
				})
				want := map[string]any{"tenant": "logco", "tier": "shared", "target": "pool-1", "method": "POST",
					"path": "/t/logco/orders", "status": 200.0, "bytes_in": 3.0, "msg": "access"}
				for k, v := range want {
					if line[k] != v {
						t.Errorf("%s: log %s = %v, want %v (line %v)", engine, k, line[k], v, line)
					}
				}
				if line["upstream"] != backend.addr || line["bytes_out"].(float64) <= 0 {
					t.Errorf("%s: log upstream %v bytes_out %v, want %s and > 0", engine, line["upstream"], line["bytes_out"], backend.addr)
				}
			}
		})
	}
}
