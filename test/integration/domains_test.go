package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/migrator"
)

// domainOwner is the tenant's side of verification: a real HTTP server
// the controller's resolver points the domains at, serving whatever token
// the test sets at /.well-known/switchyard/<token>.
type domainOwner struct {
	srv   *httptest.Server
	token atomic.Pointer[string]
}

func startDomainOwner(t testing.TB) *domainOwner {
	o := &domainOwner{}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.URL.Path, "/.well-known/switchyard/")
		if p := o.token.Load(); !ok || p == nil || *p != tok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(tok))
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *domainOwner) serve(token string) { o.token.Store(&token) }

func (o *domainOwner) addr() string { return strings.TrimPrefix(o.srv.URL, "http://") }

// domainController starts a controller that knows the routers' base
// domain and resolves the given domains to the owner's server.
func domainController(s *moveStack, owner *domainOwner, domains ...string) (string, func()) {
	resolve := map[string]string{}
	for _, d := range domains {
		resolve[d] = owner.addr()
	}
	_, base, cancel := s.startController(func(c *controller.Config) {
		c.Domains = controller.DomainsConfig{BaseDomain: "saas.test", VerifyResolve: resolve, VerifyTimeout: 2 * time.Second}
	})
	return base, cancel
}

// hostGet sends GET path to a router with the given Host; it returns the
// status, the error code of an error body and the decoded echo.
func hostGet(t testing.TB, routerURL, host, path string) (int, string, echoReply) {
	t.Helper()
	req, err := http.NewRequest("GET", routerURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := shortClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", path, host, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var body struct {
		Error string `json:"error"`
	}
	var echo echoReply
	_ = json.Unmarshal(data, &body)
	_ = json.Unmarshal(data, &echo)
	return resp.StatusCode, body.Error, echo
}

// waitHost waits until a router answers Host with status and error code.
func waitHost(t testing.TB, routerURL, host string, status int, code string) echoReply {
	t.Helper()
	var echo echoReply
	var got int
	var gotCode string
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, gotCode, echo = hostGet(t, routerURL, host, "/orders")
		if got == status && gotCode == code {
			return echo
		}
		if time.Now().After(deadline) {
			t.Fatalf("Host %s: got %d %q, want %d %q", host, got, gotCode, status, code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A custom domain's whole life on real Consul, a real router and the
// controller's API: refused names, a pending domain that answers 404
// unverified, a wrong token refused, verification against the owner's
// server, routing by any case and with a port, another tenant's claim
// refused, and removal.
func TestCustomDomainLifecycle(t *testing.T) {
	s := &moveStack{stack: newStack(t)}
	startBackend(t, s.consul.Client(), "app-shared", nil)
	startBackend(t, s.consul.Client(), "app-shared-2", nil)
	s.tenant("acme", "free", catalog.TierShared, "pool-1")
	s.tenant("bolt", "free", catalog.TierShared, "pool-2")
	rt := s.router(nil)
	owner := startDomainOwner(t)
	base, _ := domainController(s, owner, "app.acme.example")
	domains := base + "/v1/tenants/acme/domains"

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			tenant, token string
			body          any
			status        int
			code          string
		}{
			{"acme", tokOperator, map[string]any{"domain": "not a domain"}, 400, "invalid"},
			{"acme", tokOperator, map[string]any{"domain": "127.0.0.1"}, 400, "invalid"},
			{"acme", tokOperator, map[string]any{"domain": "*.acme.example"}, 400, "invalid"},
			{"acme", tokOperator, map[string]any{"domain": "shop.saas.test"}, 400, "under_base_domain"},
			{"acme", tokOperator, map[string]any{"domain": "SAAS.test."}, 400, "under_base_domain"},
			{"acme", tokOperator, map[string]any{"domain": "x.acme.example", "extra": 1}, 400, "bad_json"},
			{"nobody", tokOperator, map[string]any{"domain": "x.nobody.example"}, 404, "not_found"},
			{"acme", tokBilling, map[string]any{"domain": "x.acme.example"}, 403, "forbidden"},
			{"acme", tokViewer, map[string]any{"domain": "x.acme.example"}, 403, "forbidden"},
		} {
			status, body := call(t, "POST", base+"/v1/tenants/"+tc.tenant+"/domains", tc.token, tc.body, nil)
			if status != tc.status || body["error"] != tc.code || body["message"] == nil {
				t.Errorf("%v as %s: %d %v, want %d %s", tc.body, tc.token[:4], status, body, tc.status, tc.code)
			}
		}
		if ds, err := s.store.ListDomains(testContext(t), ""); err != nil || len(ds) != 0 {
			t.Fatalf("refused claims left domains: %v %v", ds, err)
		}
	})

	status, d := call(t, "POST", domains, tokOperator, map[string]any{"domain": "App.ACME.example"}, nil)
	token, _ := d["token"].(string)
	if status != 201 || d["domain"] != "app.acme.example" || d["state"] != "pending" || len(token) != 32 {
		t.Fatalf("add: %d %v", status, d)
	}
	waitHost(t, rt.url, "app.acme.example", 404, "domain_unverified")

	if status, body := call(t, "POST", domains, tokOperator, map[string]any{"domain": "app.acme.example"}, nil); status != 200 || body["token"] != token {
		t.Fatalf("re-adding its own domain: %d %v, want 200 with the same token", status, body)
	}
	for _, name := range []string{"app.acme.example", "APP.Acme.Example."} {
		if status, body := call(t, "POST", base+"/v1/tenants/bolt/domains", tokOperator, map[string]any{"domain": name}, nil); status != 409 || body["error"] != "domain_taken" {
			t.Fatalf("bolt claiming %s: %d %v, want 409 domain_taken", name, status, body)
		}
	}

	verify := domains + "/app.acme.example/verify"
	owner.serve("ffffffffffffffffffffffffffffffff") // the owner serves another token
	if status, body := call(t, "POST", verify, tokOperator, nil, nil); status != 422 || body["error"] != "verification_failed" {
		t.Fatalf("verify with the wrong token served: %d %v", status, body)
	}
	if status, body := call(t, "POST", base+"/v1/tenants/bolt/domains/app.acme.example/verify", tokOperator, nil, nil); status != 404 {
		t.Fatalf("bolt verifying acme's domain: %d %v", status, body)
	}
	waitHost(t, rt.url, "app.acme.example", 404, "domain_unverified")
	owner.serve(token)
	if status, body := call(t, "POST", verify, tokOperator, nil, nil); status != 200 || body["state"] != "verified" {
		t.Fatalf("verify: %d %v", status, body)
	}

	echo := waitHost(t, rt.url, "APP.Acme.EXAMPLE:8080", 200, "")
	if echo.Service != "app-shared" || echo.Headers.Get("X-Tenant-Id") != "acme" || echo.Host != "APP.Acme.EXAMPLE:8080" {
		t.Fatalf("through the domain: served by %s for tenant %q with Host %q", echo.Service, echo.Headers.Get("X-Tenant-Id"), echo.Host)
	}
	// A chunked body is not the fast path's: net/http reads the domain the same way.
	req, _ := http.NewRequest("POST", rt.url+"/orders", io.NopCloser(strings.NewReader(`{"item":"x"}`)))
	req.Host, req.TransferEncoding = "App.Acme.Example", []string{"chunked"}
	resp, err := shortClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var chunked echoReply
	_ = json.NewDecoder(resp.Body).Decode(&chunked)
	resp.Body.Close()
	if resp.StatusCode != 200 || chunked.Headers.Get("X-Tenant-Id") != "acme" {
		t.Fatalf("chunked POST through the domain: %d, tenant %q", resp.StatusCode, chunked.Headers.Get("X-Tenant-Id"))
	}
	if status, code, _ := hostGet(t, rt.url, "app.acme.example", "/t/bolt/orders"); status != 400 || code != "tenant_conflict" {
		t.Fatalf("acme's domain with bolt's path: %d %s, want 400 tenant_conflict", status, code)
	}
	if status, code, _ := hostGet(t, rt.url, "nobody.example", "/orders"); status != 404 || code != "unknown_tenant" {
		t.Fatalf("an unknown domain: %d %s", status, code)
	}
	if status, body := call(t, "GET", domains, tokViewer, nil, nil); status != 200 || len(body["domains"].([]any)) != 1 {
		t.Fatalf("list: %d %v", status, body)
	}

	if status, body := call(t, "DELETE", base+"/v1/tenants/bolt/domains/app.acme.example", tokOperator, nil, nil); status != 404 {
		t.Fatalf("bolt removing acme's domain: %d %v", status, body)
	}
	if status, body := call(t, "DELETE", domains+"/app.acme.example", tokOperator, nil, nil); status != 200 {
		t.Fatalf("remove: %d %v", status, body)
	}
	waitHost(t, rt.url, "app.acme.example", 404, "unknown_tenant")
	checkDomainAudit(t, base)
}

// checkDomainAudit checks the audit log holds each domain change.
func checkDomainAudit(t *testing.T, base string) {
	t.Helper()
	status, body := call(t, "GET", base+"/v1/audit?tenant=acme", tokViewer, nil, nil)
	if status != 200 {
		t.Fatalf("audit: %d %v", status, body)
	}
	seen := map[string]bool{}
	for _, e := range body["entries"].([]any) {
		seen[e.(map[string]any)["action"].(string)] = true
	}
	for _, a := range []string{"domain.add", "domain.verify_failed", "domain.verify", "domain.remove"} {
		if !seen[a] {
			t.Errorf("audit log has no %s entry: %v", a, seen)
		}
	}
}

// Concurrent claims of one domain by different tenants, through the API
// and straight on the store: exactly one wins, every other is refused.
func TestCustomDomainConcurrentClaims(t *testing.T) {
	s := &moveStack{stack: newStack(t)}
	const claimants = 8
	for i := range claimants {
		s.tenant(fmt.Sprintf("claimant-%d", i), "free", catalog.TierShared, "pool-1")
	}
	owner := startDomainOwner(t)
	base, _ := domainController(s, owner)
	ctx := testContext(t)
	for round, name := range []string{"contested.example", "contested-store.example"} {
		var wg sync.WaitGroup
		results := make([]int, claimants)
		start := make(chan struct{})
		for i := range claimants {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				tenant := fmt.Sprintf("claimant-%d", i)
				if round == 0 {
					status, _, _, err := callE("POST", base+"/v1/tenants/"+tenant+"/domains", tokOperator, map[string]any{"domain": name}, nil)
					if err != nil {
						status = -1
					}
					results[i] = status
					return
				}
				_, created, err := s.store.AddDomain(ctx, tenant, name, "saas.test", 0)
				switch {
				case err == nil && created:
					results[i] = 201
				case errors.Is(err, catalog.ErrDomainTaken):
					results[i] = 409
				default:
					results[i] = -1
				}
			}()
		}
		close(start)
		wg.Wait()
		won := 0
		for i, st := range results {
			switch st {
			case 201:
				won++
			case 409:
			default:
				t.Fatalf("%s: claimant %d got %d", name, i, st)
			}
		}
		ds, err := s.store.ListDomains(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if won != 1 || len(ds) != round+1 {
			t.Fatalf("%s: %d claims won, %d domains stored (%v), want exactly one", name, won, len(ds), results)
		}
	}
}

// A pending claim holds its name only until it lapses: then another
// tenant's claim replaces it (of concurrent ones exactly one), the first
// tenant can no longer verify it, and a verified domain never lapses.
func TestCustomDomainPendingClaimLapses(t *testing.T) {
	s := &moveStack{stack: newStack(t)}
	for _, id := range []string{"squatter", "owner-1", "owner-2", "owner-3"} {
		s.tenant(id, "free", catalog.TierShared, "pool-1")
	}
	ctx := testContext(t)
	const ttl = 1500 * time.Millisecond
	old, created, err := s.store.AddDomain(ctx, "squatter", "lapsing.example", "saas.test", ttl)
	if err != nil || !created || old.Expires == nil {
		t.Fatalf("first claim: %+v created=%v err=%v", old, created, err)
	}
	if _, _, err := s.store.AddDomain(ctx, "owner-1", "lapsing.example", "saas.test", ttl); !errors.Is(err, catalog.ErrDomainTaken) {
		t.Fatalf("a claim on a live pending claim: %v, want ErrDomainTaken", err)
	}
	verified, _, err := s.store.AddDomain(ctx, "squatter", "kept.example", "saas.test", ttl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.MarkDomainVerified(ctx, "squatter", "kept.example", verified.Token); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(*old.Expires) + 100*time.Millisecond)
	winners := make(chan catalog.Domain, 3)
	var wg sync.WaitGroup
	for _, id := range []string{"owner-1", "owner-2", "owner-3"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, created, err := s.store.AddDomain(ctx, id, "lapsing.example", "saas.test", ttl)
			switch {
			case err == nil && created:
				winners <- d
			case errors.Is(err, catalog.ErrDomainTaken), errors.Is(err, catalog.ErrConflict):
			default:
				t.Errorf("%s: created=%v err=%v", id, created, err)
			}
		}()
	}
	wg.Wait()
	close(winners)
	var won []catalog.Domain
	for d := range winners {
		won = append(won, d)
	}
	if len(won) != 1 {
		t.Fatalf("%d claims replaced the lapsed one, want exactly 1: %+v", len(won), won)
	}
	cur, _, err := s.store.GetDomain(ctx, "lapsing.example")
	if err != nil || cur.Tenant != won[0].Tenant || cur.Token != won[0].Token || cur.Token == old.Token || cur.Replaced != "squatter" {
		t.Fatalf("stored %+v (%v), want the winner's claim %+v with a new token", cur, err, won[0])
	}
	if _, err := s.store.MarkDomainVerified(ctx, "squatter", "lapsing.example", old.Token); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("the replaced claim verified: %v, want ErrNotFound", err)
	}
	if _, _, err := s.store.AddDomain(ctx, "owner-1", "kept.example", "saas.test", ttl); !errors.Is(err, catalog.ErrDomainTaken) {
		t.Fatalf("a verified domain was claimed after the pending lifetime: %v", err)
	}
	// Its holder claiming a lapsed claim again renews it, token kept.
	time.Sleep(time.Until(*won[0].Expires) + 100*time.Millisecond)
	renewed, created, err := s.store.AddDomain(ctx, won[0].Tenant, "lapsing.example", "saas.test", ttl)
	if err != nil || created || renewed.Token != won[0].Token || !renewed.Expires.After(*won[0].Expires) {
		t.Fatalf("renewal: %+v created=%v err=%v, want the same token with a later expiry than %v", renewed, created, err, won[0].Expires)
	}
	if _, _, err := s.store.AddDomain(ctx, "squatter", "lapsing.example", "saas.test", ttl); !errors.Is(err, catalog.ErrDomainTaken) {
		t.Fatalf("a renewed claim was taken: %v", err)
	}
	lapseThroughAPI(t, s, ttl)
}

// lapseThroughAPI: through the controller (-domain-pending-ttl), a claim
// replacing a lapsed one says whose it replaced, and the audit log says
// so on the tenant that lost it.
func lapseThroughAPI(t *testing.T, s *moveStack, ttl time.Duration) {
	_, base, cancel := s.startController(func(c *controller.Config) {
		c.Domains = controller.DomainsConfig{BaseDomain: "saas.test", PendingTTL: ttl}
	})
	defer cancel()
	claim := func(tenant string) (int, map[string]any) {
		return call(t, "POST", base+"/v1/tenants/"+tenant+"/domains", tokOperator, map[string]any{"domain": "api-lapsing.example"}, nil)
	}
	if st, body := claim("squatter"); st != 201 || body["expires"] == nil {
		t.Fatalf("first claim: %d %v", st, body)
	}
	if st, body := claim("owner-2"); st != 409 || body["error"] != "domain_taken" {
		t.Fatalf("a claim on a live pending claim: %d %v", st, body)
	}
	time.Sleep(ttl + 200*time.Millisecond)
	if st, body := claim("owner-2"); st != 201 || body["replaced"] != "squatter" {
		t.Fatalf("a claim on a lapsed one: %d %v, want 201 replacing squatter's", st, body)
	}
	status, body := call(t, "GET", base+"/v1/audit?tenant=squatter", tokViewer, nil, nil)
	found := false
	for _, e := range body["entries"].([]any) {
		found = found || e.(map[string]any)["action"] == "domain.lapsed"
	}
	if status != 200 || !found {
		t.Fatalf("squatter's audit log has no domain.lapsed entry: %d %v", status, body)
	}
}

// A verified domain names the tenant, not a target: it keeps reaching the
// tenant while the tenant moves from the shared pool to its own cluster,
// with reads and writes through the domain on both routers failing 0
// times.
func TestCustomDomainFollowsMove(t *testing.T) {
	s := newMoveStack(t)
	s.seedTenant("roamer", "free", catalog.TierShared, "pool-1", 20)
	verifiedDomain(t, s, "roamer", "shop.roamer.example")
	for _, r := range s.routers {
		waitHost(t, r.url, "shop.roamer.example", 200, "")
	}
	load := startDomainLoad(s.hc, []string{s.routers[0].url, s.routers[1].url}, "Shop.Roamer.Example")
	total, m := moveUnderDomainLoad(t, s, load, "roamer", "cl-1")
	for _, r := range s.routers {
		req, _ := http.NewRequest("GET", r.url+"/orders?limit=100", nil)
		req.Host = "shop.roamer.example"
		resp, err := s.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Orders []order `json:"orders"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(page.Orders) < 20 {
			t.Fatalf("after the move, through the domain: %d with %d orders", resp.StatusCode, len(page.Orders))
		}
	}
	t.Logf("%d requests through the domain during the move, 0 failed; pause %s", total, m.Pause)
}

// verifiedDomain claims domain for tenant through a controller's API and
// verifies it against the owner's server, then stops that controller (a
// test's move is run by the test, not by the controller's scheduler).
func verifiedDomain(t *testing.T, s *moveStack, tenant, domain string) {
	t.Helper()
	owner := startDomainOwner(t)
	base, stopController := domainController(s, owner, domain)
	defer stopController()
	status, d := call(t, "POST", base+"/v1/tenants/"+tenant+"/domains", tokOperator, map[string]any{"domain": domain}, nil)
	if status != 201 {
		t.Fatalf("add: %d %v", status, d)
	}
	owner.serve(d["token"].(string))
	if status, body := call(t, "POST", base+"/v1/tenants/"+tenant+"/domains/"+domain+"/verify", tokOperator, nil, nil); status != 200 {
		t.Fatalf("verify: %d %v", status, body)
	}
}

// moveUnderDomainLoad moves tenant to target with the migrator while load
// runs, then halts the load: the move must end done, the tenant on its new
// target and tier, and no request through the domain fail. It returns how many
// requests were made and the move.
func moveUnderDomainLoad(t *testing.T, s *moveStack, load *domainLoad, tenant, target string) (int64, *migrator.Move) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	ctx := testContext(t)
	mg := s.migrator(nil)
	m, _, err := mg.Create(ctx, migrator.Request{Tenant: tenant, To: target, Options: migrator.Options{Retention: 10 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if err := mg.Run(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if m, _ = mg.Get(ctx, m.ID); m.Phase != migrator.PhaseDone {
		t.Fatalf("move ended in %s: %s", m.Phase, m.Error)
	}
	time.Sleep(300 * time.Millisecond)
	total, failed, firstFailures := load.halt()
	if failed != 0 || total < 20 {
		t.Fatalf("%d of %d requests through the domain failed: %v", failed, total, firstFailures)
	}
	tn, err := s.store.GetTenant(ctx, tenant)
	tg, _, terr := s.store.GetTarget(ctx, target)
	if err != nil || terr != nil || tn.Target != target || tn.Tier != tg.Tier {
		t.Fatalf("after the move: %+v %v (target %+v %v)", tn, err, tg, terr)
	}
	return total, m
}

// domainLoad is a client of a tenant through its custom domain: one
// goroutine per router alternating a write (201) and a read (200), every
// other answer (or, with proto set, one over another HTTP version) a
// failure.
type domainLoad struct {
	total, failed atomic.Int64
	written       atomic.Int64 // writes acknowledged (201)
	proto         int          // the HTTP major version every answer must have; 0: any
	stop          chan struct{}
	wg            sync.WaitGroup
	mu            sync.Mutex
	failures      []string
}

func startDomainLoad(hc *http.Client, routers []string, host string) *domainLoad {
	clients := make([]*http.Client, len(routers))
	for i := range clients {
		clients[i] = hc
	}
	return startDomainLoadWith(clients, routers, host, 0)
}

// startDomainLoadWith runs the load with a client per router (clients[i]
// for routers[i]), every answer over HTTP/proto (0: any).
func startDomainLoadWith(clients []*http.Client, routers []string, host string, proto int) *domainLoad {
	l := &domainLoad{stop: make(chan struct{}), proto: proto}
	for i, u := range routers {
		hc := clients[i]
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				l.once(hc, u, host, i)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *domainLoad) once(hc *http.Client, routerURL, host string, i int) {
	method, path, want := "GET", "/orders?limit=1", 200
	var body io.Reader
	if i%2 == 0 {
		method, path, want = "POST", "/orders", 201
		b, _ := json.Marshal(map[string]any{"item": fmt.Sprintf("domain-%d", i), "quantity": 1, "price_cents": 100})
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, routerURL+path, body)
	req.Host = host
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	l.total.Add(1)
	resp, err := hc.Do(req)
	if err != nil {
		l.fail(fmt.Sprintf("%s %s: %v", method, path, err))
		return
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want || (l.proto != 0 && resp.ProtoMajor != l.proto) {
		l.fail(fmt.Sprintf("%s %s: %d over %s %s", method, path, resp.StatusCode, resp.Proto, bytes.TrimSpace(data)))
	} else if want == 201 {
		l.written.Add(1)
	}
}

func (l *domainLoad) fail(msg string) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.failures) < 5 {
		l.failures = append(l.failures, msg)
	}
	l.mu.Unlock()
}

func (l *domainLoad) halt() (total, failed int64, first []string) {
	close(l.stop)
	l.wg.Wait()
	return l.total.Load(), l.failed.Load(), l.failures
}
