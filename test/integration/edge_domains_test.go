package integration

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router"
)

// The edge and custom domains together, with real clients: curl over
// HTTP/1.1 and HTTP/2, h2load, and Go's HTTP/2 client, against a router's
// TLS listener whose certificates (the base domain's wildcard and a custom
// domain's own) are in Consul.

// curlTLS is curl's arguments for https://<host>:<port><path> sent to the
// router's TLS listener (--resolve: SNI and Host are host), the test CA
// trusted, over the given HTTP version flag, with extra arguments first.
func (e *edgeRouter) curlTLS(ca *testCA, flag, host, path string, extra ...string) []string {
	args := append([]string{flag, "--cacert", ca.pemFile, "--resolve", host + ":" + e.port + ":127.0.0.1"}, extra...)
	return append(args, "https://"+host+":"+e.port+path)
}

// errorBody is the router's JSON error body.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// The same tenant reached over TLS by its subdomain, by its verified custom
// domain (served with the domain's own certificate, put through the control
// API and picked by SNI) and by a token, with curl --http1.1 and --http2;
// before verification the domain answers 404 domain_unverified on both;
// names one label off the domain get the default certificate, never the
// domain's; and h2load through the domain gets only 2xx.
func TestEdgeCustomDomainOverTLS(t *testing.T) {
	es := newEdgeStack(t)
	owner := startDomainOwner(t)
	base, _ := domainController(&moveStack{stack: es.stack}, owner, "app.acme.example")
	e := es.edgeRouter(nil)
	def, _ := serialOf(t, es, "default")
	certPEM, keyPEM, domainSerial := es.ca.issue(t, time.Now().Add(90*24*time.Hour), "app.acme.example")
	if status, out := call(t, "PUT", base+"/v1/certificates/acme-app", tokOperator, map[string]any{"cert_pem": certPEM, "key_pem": keyPEM}, nil); status != 200 {
		t.Fatalf("put the domain's certificate: %d %v", status, out)
	}
	waitFor(t, 10*time.Second, "the router serving the domain's certificate", func() bool {
		c, err := e.peerCert("app.acme.example")
		return err == nil && c.SerialNumber.Cmp(domainSerial) == 0
	})

	status, d := call(t, "POST", base+"/v1/tenants/acme/domains", tokOperator, map[string]any{"domain": "app.acme.example"}, nil)
	if status != 201 || d["state"] != "pending" {
		t.Fatalf("add: %d %v", status, d)
	}
	t.Run("unverified", func(t *testing.T) { checkUnverifiedOverTLS(t, es, e, domainSerial) })

	owner.serve(d["token"].(string))
	if status, body := call(t, "POST", base+"/v1/tenants/acme/domains/app.acme.example/verify", tokOperator, nil, nil); status != 200 || body["state"] != "verified" {
		t.Fatalf("verify: %d %v", status, body)
	}
	h2 := e.tlsClient(es.ca, true)
	waitFor(t, 10*time.Second, "the router routing the verified domain", func() bool {
		resp, err := h2.Get("https://app.acme.example/hello")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	t.Run("same tenant three ways", func(t *testing.T) { checkSameTenantThreeWays(t, es, e, def, domainSerial) })
	t.Run("unknown SNI one label off", func(t *testing.T) { checkOneLabelOff(t, es, e, def) })
	t.Run("SNI and Host disagree through the domain", func(t *testing.T) { checkDomainMisdirected(t, es, e) })
	t.Run("h2load", func(t *testing.T) {
		before := es.backend.tenantCount("acme")
		h2loadTLS(t, e, "app.acme.example", "/h2load", 2000)
		if got := es.backend.tenantCount("acme") - before; got != 2000 {
			t.Fatalf("the backend saw %d of h2load's 2000 requests as acme's", got)
		}
	})
}

// checkUnverifiedOverTLS: a pending domain answers 404 with a body saying it
// is not verified, over HTTP/1.1 and HTTP/2 (curl), on the domain's own
// certificate, and nothing reaches the backend.
func checkUnverifiedOverTLS(t *testing.T, es *edgeStack, e *edgeRouter, domainSerial *big.Int) {
	h2 := e.tlsClient(es.ca, true)
	waitFor(t, 10*time.Second, "the router seeing the pending domain", func() bool {
		resp, err := h2.Get("https://app.acme.example/hello")
		if err != nil {
			return false
		}
		var body errorBody
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		return resp.StatusCode == 404 && resp.ProtoMajor == 2 && body.Error == "domain_unverified"
	})
	before := es.backend.seenCount()
	for _, v := range []struct{ flag, version string }{{"--http1.1", "1.1"}, {"--http2", "2"}} {
		r := curl(t, e.curlTLS(es.ca, v.flag, "app.acme.example", "/orders")...)
		var body errorBody
		_ = json.Unmarshal(r.body, &body)
		if r.status != "404" || r.version != v.version || body.Error != "domain_unverified" || !strings.Contains(body.Message, "not verified") {
			t.Errorf("%s: %s over HTTP/%s: %s, want 404 domain_unverified saying not verified", v.flag, r.status, r.version, r.body)
		}
		if r.leaf == nil || r.leaf.SerialNumber.Cmp(domainSerial) != 0 {
			t.Errorf("%s: served %v, want the domain's certificate", v.flag, describe(r.leaf))
		}
	}
	if es.backend.seenCount() != before {
		t.Fatal("a request for an unverified domain reached the backend")
	}
}

// checkSameTenantThreeWays: subdomain, custom domain and token, each over
// curl --http1.1 and --http2, reach acme on the certificate for the name;
// the backend gets the client's Host and X-Forwarded-Proto https.
func checkSameTenantThreeWays(t *testing.T, es *edgeStack, e *edgeRouter, def, domainSerial *big.Int) {
	tok := router.SignToken(jwtSecret, "acme", time.Hour)
	for _, way := range []struct {
		name, host string
		extra      []string
		serial     *big.Int
	}{
		{"subdomain", "acme.saas.test", nil, def},
		{"custom domain", "app.acme.example", nil, domainSerial},
		{"custom domain, any case", "App.ACME.example", nil, domainSerial},
		{"token", "saas.test", []string{"-H", "Authorization: Bearer " + tok}, def},
	} {
		for _, v := range []struct{ flag, version string }{{"--http1.1", "1.1"}, {"--http2", "2"}} {
			t.Run(way.name+" "+v.flag, func(t *testing.T) {
				r := curl(t, e.curlTLS(es.ca, v.flag, way.host, "/hello", way.extra...)...)
				if r.status != "200" || r.version != v.version {
					t.Fatalf("got %s over HTTP/%s, want 200 over HTTP/%s: %s", r.status, r.version, v.version, r.body)
				}
				var echo echoReply
				if err := json.Unmarshal(r.body, &echo); err != nil || echo.Headers.Get("X-Tenant-Id") != "acme" {
					t.Fatalf("the backend saw tenant %q, want acme: %s", echo.Headers.Get("X-Tenant-Id"), r.body)
				}
				if fwd := echo.Headers.Get("X-Forwarded-Proto"); fwd != "https" || !strings.EqualFold(echo.Host, way.host+":"+e.port) {
					t.Fatalf("the backend got X-Forwarded-Proto %q and Host %q, want https and %s:%s", fwd, echo.Host, way.host, e.port)
				}
				if r.leaf == nil || r.leaf.SerialNumber.Cmp(way.serial) != 0 || r.leaf.VerifyHostname(way.host) != nil {
					t.Fatalf("served %s for %s, want serial %v", describe(r.leaf), way.host, way.serial)
				}
				if way.serial == domainSerial && !slices.Equal(r.leaf.DNSNames, []string{"app.acme.example"}) {
					t.Fatalf("the domain's certificate names %v", r.leaf.DNSNames)
				}
			})
		}
	}
}

// checkOneLabelOff: a name one label off the custom domain (below it, its
// parent, a sibling, one more or one less letter) is a name no certificate
// covers: it gets the default certificate, never the domain's; and a
// request there names no tenant (404 unknown_tenant).
func checkOneLabelOff(t *testing.T, es *edgeStack, e *edgeRouter, def *big.Int) {
	for _, sni := range []string{"x.app.acme.example", "acme.example", "www.acme.example", "apps.acme.example", "app.acme.exampl"} {
		c, err := e.peerCert(sni)
		if err != nil {
			t.Errorf("SNI %s: %v", sni, err)
			continue
		}
		if c.SerialNumber.Cmp(def) != 0 || slices.Contains(c.DNSNames, "app.acme.example") {
			t.Errorf("SNI %s: served %s, want the default certificate", sni, describe(c))
		}
	}
	r := curl(t, e.curlTLS(es.ca, "--http2", "x.app.acme.example", "/hello", "--insecure")...)
	var body errorBody
	_ = json.Unmarshal(r.body, &body)
	if r.status != "404" || r.version != "2" || body.Error != "unknown_tenant" || r.leaf == nil || r.leaf.SerialNumber.Cmp(def) != 0 {
		t.Fatalf("x.app.acme.example over h2: %s HTTP/%s %s on %s, want 404 unknown_tenant on the default certificate",
			r.status, r.version, r.body, describe(r.leaf))
	}
}

// checkDomainMisdirected: a connection made for acme's custom domain
// carries no request whose Host names globex, and one made for globex
// none whose Host is acme's domain (421, never routed), over HTTP/1.1 and
// HTTP/2; acme's subdomain on acme's domain's connection is acme's.
func checkDomainMisdirected(t *testing.T, es *edgeStack, e *edgeRouter) {
	for _, h2 := range []bool{false, true} {
		hc := e.tlsClient(es.ca, h2)
		for _, c := range []struct {
			sni, host string
			status    int
		}{
			{"app.acme.example", "globex.saas.test", http.StatusMisdirectedRequest},
			{"globex.saas.test", "app.acme.example", http.StatusMisdirectedRequest},
			{"app.acme.example", "acme.saas.test", http.StatusOK},
		} {
			before := es.backend.seenCount()
			req, _ := http.NewRequest("GET", "https://"+c.sni+"/t", nil)
			req.Host = c.host
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body errorBody
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Fatalf("h2=%v SNI %s, Host %s: %d %v, want %d", h2, c.sni, c.host, resp.StatusCode, body, c.status)
			}
			if c.status == http.StatusMisdirectedRequest && (body.Error != "misdirected_request" || es.backend.seenCount() != before) {
				t.Fatalf("h2=%v SNI %s, Host %s: body %v, backend reached %v", h2, c.sni, c.host, body, es.backend.seenCount() != before)
			}
		}
	}
}

func describe(c *x509.Certificate) string {
	if c == nil {
		return "no certificate"
	}
	return fmt.Sprintf("serial %v %v", c.SerialNumber, c.DNSNames)
}

// h2loadTLS runs h2load (nghttp2-client) against the router's TLS listener
// for https://<host><path> (SNI and :authority the host): n requests, 10
// clients, 10 streams each, over h2 (checked: h2load reports the protocol
// it negotiated), within a minute. Every request must succeed with a 2xx.
func h2loadTLS(t *testing.T, e *edgeRouter, host, path string, n int) {
	t.Helper()
	if _, err := exec.LookPath("h2load"); err != nil {
		t.Fatalf("h2load is not installed (scripts/tools.sh installs nghttp2-client): %v", err)
	}
	ctx, cancel := context.WithTimeout(testContext(t), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "h2load", "-n", fmt.Sprint(n), "-c", "10", "-m", "10",
		"--connect-to=127.0.0.1:"+e.port, "https://"+host+":"+e.port+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("h2load: %v: %s %s", err, out, stderr.String())
	}
	t.Logf("h2load:\n%s", grepLines(string(out), "s:"))
	want := []string{
		"Application protocol: h2",
		fmt.Sprintf("requests: %d total, %d started, %d done, %d succeeded, 0 failed, 0 errored, 0 timeout", n, n, n, n),
		fmt.Sprintf("status codes: %d 2xx, 0 3xx, 0 4xx, 0 5xx", n),
	}
	for _, w := range want {
		if !strings.Contains(string(out), w) {
			t.Fatalf("h2load output lacks %q:\n%s", w, out)
		}
	}
}

// A verified custom domain follows its tenant through a move (shared pool
// to its own cluster) over HTTP/2: Go's HTTP/2 client on TLS, SNI the
// domain (served its own certificate, verified against the test CA),
// writes and reads on both routers, 0 failed and every answer over HTTP/2.
func TestEdgeCustomDomainFollowsMoveOverH2(t *testing.T) {
	s := newMoveStackWith(t, withTLS)
	ca := newTestCA(t)
	ca.putCert(t, s.store, "default", time.Now().Add(30*24*time.Hour), "*.saas.test", "saas.test")
	shop := ca.putCert(t, s.store, "roamer-shop", time.Now().Add(30*24*time.Hour), "shop.roamer.example")
	s.seedTenant("roamer", "free", catalog.TierShared, "pool-1", 20)
	verifiedDomain(t, s, "roamer", "shop.roamer.example")
	const url = "https://shop.roamer.example"
	var clients []*http.Client
	var urls []string
	for _, r := range s.routers {
		e := asEdge(t, r)
		hc := e.tlsClient(ca, true)
		waitFor(t, 15*time.Second, "the domain served over h2 with its certificate", func() bool {
			resp, err := hc.Get(url + "/orders?limit=1")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200 && resp.ProtoMajor == 2 && resp.TLS.PeerCertificates[0].SerialNumber.Cmp(shop) == 0
		})
		clients, urls = append(clients, hc), append(urls, url)
	}
	load := startDomainLoadWith(clients, urls, "shop.roamer.example", 2)
	total, m := moveUnderDomainLoad(t, s, load, "roamer", "cl-1")
	want := 20 + int(load.written.Load()) // the seeded orders and every acknowledged write
	for _, hc := range clients {
		if n := countOrdersH2(t, hc, url, "cl-1"); n != want {
			t.Fatalf("after the move, through the domain over h2: %d orders, want %d", n, want)
		}
	}
	t.Logf("%d requests over HTTP/2 through the domain during the move (%d writes), 0 failed; pause %s", total, want-20, m.Pause)
}

// countOrdersH2 pages through a tenant's orders at base over HTTP/2; every
// page must be served from target (the orders app's X-Served-By).
func countOrdersH2(t *testing.T, hc *http.Client, base, target string) int {
	t.Helper()
	n, after := 0, int64(0)
	for {
		resp, err := hc.Get(fmt.Sprintf("%s/orders?limit=1000&after_id=%d", base, after))
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Orders []order `json:"orders"`
			Next   *int64  `json:"next_after_id"`
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 || resp.Header.Get("X-Served-By") != target || json.Unmarshal(data, &page) != nil {
			t.Fatalf("orders after %d: %d over %s from %q: %.200s, want 200 over HTTP/2 from %s",
				after, resp.StatusCode, resp.Proto, resp.Header.Get("X-Served-By"), data, target)
		}
		n += len(page.Orders)
		if page.Next == nil {
			return n
		}
		after = *page.Next
	}
}

// tenantCount is how many requests the backend saw for tenant.
func (b *echoBackend) tenantCount(tenant string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, h := range b.seen {
		if h.Get("X-Tenant-Id") == tenant {
			n++
		}
	}
	return n
}
