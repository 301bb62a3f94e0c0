package integration

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router"
)

// edgeStack is a stack with the echo backend, tenants acme and globex, a
// test CA and the default certificate (*.saas.test) in Consul.
type edgeStack struct {
	*stack
	ca      *testCA
	backend *echoBackend
}

func newEdgeStack(t *testing.T) *edgeStack {
	t.Helper()
	testContext(t)
	s := newStack(t)
	b := startBackend(t, s.consul.Client(), "app-shared", nil)
	s.tenant("acme", "free", catalog.TierShared, "pool-1")
	s.tenant("globex", "free", catalog.TierShared, "pool-1")
	ca := newTestCA(t)
	ca.putCert(t, s.store, "default", time.Now().Add(30*24*time.Hour), "*.saas.test", "saas.test")
	return &edgeStack{stack: s, ca: ca, backend: b}
}

// curlResult is what curl got: status, HTTP version, body and, over TLS,
// the leaf certificate the server presented on curl's own connection.
type curlResult struct {
	status, version string
	body            []byte
	leaf            *x509.Certificate // nil in plaintext
}

// curl runs the real curl with args plus what the answer needs.
func curl(t *testing.T, args ...string) curlResult {
	t.Helper()
	out := filepath.Join(t.TempDir(), "body")
	cmd := exec.Command("curl", append([]string{"-sS", "--max-time", "20", "-o", out, "-w", "%{http_code} %{http_version}\n%{certs}"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	w, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl %v: %v: %s", args, err, stderr.String())
	}
	head, certs, _ := strings.Cut(string(w), "\n")
	status, version, _ := strings.Cut(head, " ")
	body, _ := os.ReadFile(out)
	r := curlResult{status: status, version: version, body: body}
	// %{certs} (curl ≥ 7.88) is the chain, the leaf first, each with its PEM.
	if blk, _ := pem.Decode([]byte(certs)); blk != nil {
		if r.leaf, err = x509.ParseCertificate(blk.Bytes); err != nil {
			t.Fatalf("curl %v: the served certificate: %v", args, err)
		}
	}
	return r
}

// tenantSeen is the tenant the backend was told (the echo's X-Tenant-Id).
func tenantSeen(t *testing.T, body []byte) string {
	t.Helper()
	var e echoReply
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("not an echo: %s", body)
	}
	return e.Headers.Get("X-Tenant-Id")
}

// curl --http1.1 and --http2 against the TLS listener reach the same
// tenant by subdomain, by token and by path; h2c with prior knowledge on
// the plaintext listener too.
func TestRouterTLSAndH2CWithCurl(t *testing.T) {
	es := newEdgeStack(t)
	e := es.edgeRouter(nil)
	plain := strings.TrimPrefix(e.url, "http://")
	tok := router.SignToken(jwtSecret, "acme", time.Hour)
	resolve := func(host string) []string {
		return []string{"--cacert", es.ca.pemFile, "--resolve", host + ":" + e.port + ":127.0.0.1"}
	}
	type tc struct {
		name    string
		args    []string
		version string
	}
	var cases []tc
	for _, v := range []struct{ flag, version string }{{"--http1.1", "1.1"}, {"--http2", "2"}} {
		cases = append(cases,
			tc{"subdomain " + v.flag, append(append([]string{v.flag}, resolve("acme.saas.test")...), "https://acme.saas.test:"+e.port+"/hello"), v.version},
			tc{"token " + v.flag, append(append([]string{v.flag, "-H", "Authorization: Bearer " + tok}, resolve("saas.test")...), "https://saas.test:"+e.port+"/hello"), v.version},
			tc{"path " + v.flag, append(append([]string{v.flag}, resolve("saas.test")...), "https://saas.test:"+e.port+"/t/acme/hello"), v.version},
		)
	}
	cases = append(cases,
		tc{"h2c prior knowledge by subdomain", []string{"--http2-prior-knowledge", "-H", "Host: acme.saas.test", "http://" + plain + "/hello"}, "2"},
		tc{"h2c prior knowledge by token", []string{"--http2-prior-knowledge", "-H", "Authorization: Bearer " + tok, "http://" + plain + "/hello"}, "2"},
		tc{"plaintext HTTP/1.1 (the fast path) still", []string{"--http1.1", "http://" + plain + "/t/acme/hello"}, "1.1"},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := curl(t, c.args...)
			if r.status != "200" || r.version != c.version {
				t.Fatalf("got %s over HTTP/%s, want 200 over HTTP/%s: %s", r.status, r.version, c.version, r.body)
			}
			if got := tenantSeen(t, r.body); got != "acme" {
				t.Fatalf("backend saw tenant %q, want acme", got)
			}
		})
	}
	// The same router errors over HTTP/2: JSON, as on HTTP/1.1.
	r := curl(t, append(append([]string{"--http2"}, resolve("nosuch.saas.test")...), "https://nosuch.saas.test:"+e.port+"/")...)
	if r.status != "404" || r.version != "2" || !bytes.Contains(r.body, []byte(`"unknown_tenant"`)) {
		t.Fatalf("unknown tenant over h2: %s HTTP/%s %s", r.status, r.version, r.body)
	}
}

// SNI picks the certificate: a name's own, the wildcard, or the default
// for unknown names (never another's); with the refuse policy an unknown
// name fails the handshake. Expiring certificates show in /readyz and
// /metrics, keys nowhere.
func TestRouterTLSCertificateBySNI(t *testing.T) {
	es := newEdgeStack(t)
	def, _ := serialOf(t, es, "default")
	acme := es.ca.putCert(t, es.store, "acme-domain", time.Now().Add(60*24*time.Hour), "app.acme.example")
	soon := es.ca.putCert(t, es.store, "soon", time.Now().Add(48*time.Hour), "soon.example")
	e := es.edgeRouter(nil)
	refusing := es.edgeRouter(func(c *router.Config) { c.TLS.UnknownSNI = router.UnknownSNIRefuse })
	for _, c := range []struct {
		sni        string
		refuse     bool
		wantSerial int64 // 0: handshake refused
	}{
		{"acme.saas.test", false, def.Int64()},
		{"ACME.saas.test", false, def.Int64()},
		{"app.acme.example", false, acme.Int64()},
		{"APP.ACME.EXAMPLE.", false, acme.Int64()},
		{"soon.example", false, soon.Int64()},
		{"other.acme.example", false, def.Int64()},
		{"unknown.example", false, def.Int64()},
		{"", false, def.Int64()},
		{"app.acme.example", true, acme.Int64()},
		{"acme.saas.test", true, def.Int64()},
		{"unknown.example", true, 0},
		{"x.app.acme.example", true, 0},
	} {
		rt := e
		if c.refuse {
			rt = refusing
		}
		got, err := rt.peerCert(c.sni)
		if c.wantSerial == 0 {
			if err == nil {
				t.Errorf("SNI %q (refuse): handshake succeeded with serial %v", c.sni, got.SerialNumber)
			}
			continue
		}
		if err != nil {
			t.Errorf("SNI %q: %v", c.sni, err)
			continue
		}
		if got.SerialNumber.Int64() != c.wantSerial {
			t.Errorf("SNI %q (refuse=%v): served serial %v %v, want %d", c.sni, c.refuse, got.SerialNumber, got.DNSNames, c.wantSerial)
		}
	}
	resp, err := shortClient.Get(e.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"name":"soon"`)) || bytes.Contains(body, []byte(`"name":"acme-domain"`)) {
		t.Fatalf("readyz should list soon (and only soon) as expiring: %d %s", resp.StatusCode, body)
	}
	metrics := scrape(t, e.admin)
	if !strings.Contains(metrics, `switchyard_router_tls_cert_expiry_seconds{cert="soon"}`) ||
		!strings.Contains(metrics, `switchyard_router_tls_cert_expiry_seconds{cert="default"}`) ||
		strings.Contains(metrics, `cert="acme-domain"`) || !strings.Contains(metrics, "switchyard_router_tls_certs 3") {
		t.Fatalf("metrics: %s", grepLines(metrics, "switchyard_router_tls"))
	}
	for _, b := range []string{string(body), metrics} {
		if strings.Contains(b, "PRIVATE KEY") {
			t.Fatal("a private key leaked")
		}
	}
}

// A certificate rotated while clients make new TLS connections (HTTP/1.1
// without keep-alive: a handshake per request) and reuse HTTP/2 ones:
// no request fails, and new handshakes get the new certificate.
func TestRouterTLSCertRotationUnderTraffic(t *testing.T) {
	es := newEdgeStack(t)
	e := es.edgeRouter(nil)
	h1 := e.tlsClient(es.ca, false)
	h1.Transport.(*http.Transport).DisableKeepAlives = true
	h2 := e.tlsClient(es.ca, true)
	var total, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, hc := range []*http.Client{h1, h1, h2, h2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := hc.Get([]string{"https://acme.saas.test/r", "https://globex.saas.test/r"}[i%2])
				total.Add(1)
				if err != nil {
					failed.Add(1)
					t.Logf("request failed: %v", err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	var last int64
	for i := 0; i < 5; i++ {
		time.Sleep(300 * time.Millisecond)
		last = es.ca.putCert(t, es.store, "default", time.Now().Add(30*24*time.Hour), "*.saas.test", "saas.test").Int64()
	}
	waitFor(t, 10*time.Second, "the last certificate served", func() bool {
		c, err := e.peerCert("acme.saas.test")
		return err == nil && c.SerialNumber.Int64() == last
	})
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d requests during 5 rotations, %d failed", total.Load(), failed.Load())
	if failed.Load() != 0 || total.Load() < 20 {
		t.Fatalf("%d of %d requests failed", failed.Load(), total.Load())
	}
}

// SNI naming one tenant with Host naming another: 421 with a JSON body,
// never routed, on HTTP/1.1 and HTTP/2.
func TestRouterTLSSNIHostMismatch(t *testing.T) {
	es := newEdgeStack(t)
	e := es.edgeRouter(nil)
	for _, h2 := range []bool{false, true} {
		hc := e.tlsClient(es.ca, h2)
		for _, c := range []struct {
			host   string
			status int
		}{{"globex.saas.test", http.StatusMisdirectedRequest}, {"acme.saas.test", 200}, {"saas.test", http.StatusBadRequest}} {
			before := es.backend.seenCount()
			req, _ := http.NewRequest("GET", "https://acme.saas.test/t", nil) // SNI acme
			req.Host = c.host
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Fatalf("h2=%v SNI acme, Host %s: %d %s, want %d", h2, c.host, resp.StatusCode, body, c.status)
			}
			if c.status == http.StatusMisdirectedRequest {
				var e struct{ Error string }
				if json.Unmarshal(body, &e) != nil || e.Error != "misdirected_request" {
					t.Fatalf("421 body: %s", body)
				}
				if es.backend.seenCount() != before {
					t.Fatal("a misdirected request reached the backend")
				}
			}
		}
	}
}

// Redirect and HSTS are off by default and per listener when on.
func TestRouterRedirectAndHSTS(t *testing.T) {
	es := newEdgeStack(t)
	plainRouter := es.edgeRouter(nil)
	strict := es.edgeRouter(func(c *router.Config) {
		c.TLS.RedirectHTTPS = true
		c.TLS.HSTSMaxAge = time.Hour
	})
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, c := range []struct {
		r        *edgeRouter
		status   int
		location string
		hsts     string
	}{
		{plainRouter, 200, "", ""},
		{strict, http.StatusPermanentRedirect, "https://acme.saas.test:" + strict.port + "/t/acme/x?q=1%25", "max-age=3600"},
	} {
		req, _ := http.NewRequest("GET", c.r.url+"/t/acme/x?q=1%25", nil)
		req.Host = "acme.saas.test"
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status || resp.Header.Get("Location") != c.location {
			t.Fatalf("plaintext: %d %q, want %d %q", resp.StatusCode, resp.Header.Get("Location"), c.status, c.location)
		}
		resp, err = c.r.tlsClient(es.ca, true).Get("https://acme.saas.test/x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Strict-Transport-Security") != c.hsts {
			t.Fatalf("TLS: %d HSTS %q, want 200 %q", resp.StatusCode, resp.Header.Get("Strict-Transport-Security"), c.hsts)
		}
	}
}

func serialOf(t *testing.T, es *edgeStack, name string) (*big.Int, error) {
	t.Helper()
	pair, _, err := es.consul.Client().KV().Get(es.store.Keys().Certificate(name), nil)
	if err != nil || pair == nil {
		t.Fatalf("certificate %s: %v", name, err)
	}
	c, err := catalog.DecodeCertificate(pair.Value)
	if err != nil {
		t.Fatal(err)
	}
	tc, _, err := c.Parse(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tc.Leaf.SerialNumber, nil
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A frozen tenant's HTTP/2 requests are held like HTTP/1.1 ones (the same
// code): streams on one TLS connection and on an h2c one wait for the
// cutover, then reach the new target; another tenant's stream on the same
// connection is not held.
func TestRouterH2HoldsDuringCutover(t *testing.T) {
	es := newEdgeStack(t)
	startBackend(t, es.consul.Client(), "app-cl-1", nil)
	es.tenant("mover", "free", catalog.TierShared, "pool-1")
	e := es.edgeRouter(func(c *router.Config) { c.HoldMax = 5 * time.Second })
	h2 := e.tlsClient(es.ca, true)
	h2c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Protocols: h2cOnly()}}
	ctx := testContext(t)
	if _, err := es.store.UpdateTenant(ctx, "mover", func(t *catalog.Tenant) error { t.State = catalog.StateFrozen; return nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "router sees freeze", func() bool {
		rt, _ := e.Watcher().Snapshot().Lookup("mover")
		return rt.State == catalog.StateFrozen
	})
	type result struct {
		status  int
		proto   int
		service string
		held    time.Duration
	}
	results := make(chan result, 6)
	for i := 0; i < 6; i++ {
		hc, url := h2, "https://saas.test/t/mover/orders"
		if i%2 == 1 {
			hc, url = h2c, e.url+"/t/mover/orders"
		}
		go func() {
			start := time.Now()
			resp, err := hc.Get(url)
			if err != nil {
				results <- result{status: -1}
				return
			}
			resp.Body.Close()
			results <- result{resp.StatusCode, resp.ProtoMajor, resp.Header.Get("X-Served-By"), time.Since(start)}
		}()
	}
	time.Sleep(100 * time.Millisecond) // the streams are open and held
	start := time.Now()
	resp, err := h2.Get("https://saas.test/t/acme/") // the same connection as the held streams
	if err != nil || resp.StatusCode != 200 || resp.ProtoMajor != 2 || time.Since(start) > time.Second {
		t.Fatalf("bystander over h2: %v %v after %s", resp, err, time.Since(start))
	}
	resp.Body.Close()
	time.Sleep(200 * time.Millisecond)
	if _, err := es.store.UpdateTenant(ctx, "mover", func(t *catalog.Tenant) error {
		t.State, t.Tier, t.Target = catalog.StateActive, catalog.TierDedicatedCluster, "cl-1"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		r := <-results
		if r.status != 200 || r.proto != 2 || r.service != "app-cl-1" || r.held < 250*time.Millisecond {
			t.Fatalf("held request: %+v (want 200 over HTTP/2 from app-cl-1 after the flip)", r)
		}
	}
}

func h2cOnly() *http.Protocols {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return p
}
