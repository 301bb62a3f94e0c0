package router

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard/switchyard/catalog"
)

// selfSigned is a stored certificate (as Consul holds it) for names.
func selfSigned(t *testing.T, name string, serial int64, notAfter time.Time, names ...string) *api.KVPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, DNSNames: names}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	c := catalog.Certificate{Name: name,
		CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		KeyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))}
	data, _ := json.Marshal(c)
	return &api.KVPair{Key: catalog.NewKeys("").Certificate(name), Value: data}
}

func TestCertIndexLookup(t *testing.T) {
	later := time.Now().Add(90 * 24 * time.Hour)
	pairs := api.KVPairs{
		selfSigned(t, "default", 1, later, "*.saas.test", "saas.test"),
		selfSigned(t, "acme", 2, later, "app.acme.example"),
		selfSigned(t, "acme-new", 3, later.Add(time.Hour), "app.acme.example"), // a rotation: expires later, wins
		selfSigned(t, "expired", 4, time.Now().Add(-time.Minute), "old.example"),
		{Key: catalog.NewKeys("").Certificate("garbage"), Value: []byte("{not json")},
	}
	idx := buildCertIndex(pairs, "default", "", time.Now())
	if len(idx.all) != 3 || len(idx.skipped) != 2 || idx.def == nil {
		t.Fatalf("indexed %d, skipped %v, default %v", len(idx.all), idx.skipped, idx.def != nil)
	}
	for _, c := range []struct {
		sni  string
		want int64 // 0: none
	}{
		{"acme.saas.test", 1}, {"ACME.SAAS.TEST.", 1}, {"saas.test", 1}, {"a.b.saas.test", 0},
		{"app.acme.example", 3}, {"x.app.acme.example", 0}, {"old.example", 0}, {"", 0}, {"example", 0},
	} {
		e := idx.lookup(c.sni)
		got := int64(0)
		if e != nil {
			got = e.cert.Leaf.SerialNumber.Int64()
		}
		if got != c.want {
			t.Errorf("lookup(%q) = serial %d, want %d", c.sni, got, c.want)
		}
	}
	for _, c := range []struct {
		policy string
		sni    string
		want   int64
	}{
		{UnknownSNIDefault, "unknown.example", 1},
		{UnknownSNIRefuse, "unknown.example", 0},
		{UnknownSNIRefuse, "app.acme.example", 3},
	} {
		s := &certStore{cfg: EdgeConfig{UnknownSNI: c.policy}}
		s.unknownDefault, s.unknownRefused = prometheus.NewCounter(prometheus.CounterOpts{Name: "d"}), prometheus.NewCounter(prometheus.CounterOpts{Name: "r"})
		s.idx.Store(idx)
		cert, err := s.getCertificate(&tls.ClientHelloInfo{ServerName: c.sni})
		switch {
		case c.want == 0 && err == nil:
			t.Errorf("%s %q: served a certificate", c.policy, c.sni)
		case c.want != 0 && (err != nil || cert.Leaf.SerialNumber.Int64() != c.want):
			t.Errorf("%s %q: %v %v, want serial %d", c.policy, c.sni, cert, err, c.want)
		}
	}
}

func TestGRPCStatusTable(t *testing.T) {
	for _, c := range []struct {
		e    *routeError
		want uint32
	}{
		{errUnknownTenant, grpcNotFound},
		{errRateLimited[3], grpcResourceExhausted},
		{errConcurrencyLimited, grpcResourceExhausted},
		{errTenantBodyTooLarge, grpcResourceExhausted},
		{errNoHealthyBackend, grpcUnavailable},
		{errBreakerOpen, grpcUnavailable},
		{errTenantMoving, grpcUnavailable},
		{errLeaseLapsed, grpcUnavailable},
		{errUpstreamFailed, grpcUnavailable},
		{errUpstreamTimeout, grpcDeadlineExceeded},
		{errMisdirected, grpcPermissionDenied},
		{extractionError(ErrBadToken), grpcUnauthenticated},
		{extractionError(ErrNoTenant), grpcInvalidArgument},
		{&routeError{status: 418}, grpcInternal},
	} {
		if got := grpcStatusFor(c.e); got != c.want {
			t.Errorf("%d %s: gRPC %d, want %d", c.e.status, c.e.code, got, c.want)
		}
	}
	rec := httptest.NewRecorder()
	writeGRPCStatus(rec, grpcNotFound, "no such tenant 100%\n")
	if rec.Code != 200 || rec.Header().Get("Grpc-Status") != "5" || rec.Header().Get("Grpc-Message") != "no such tenant 100%25%0A" || rec.Body.Len() != 0 {
		t.Fatalf("trailers-only answer: %d %v %q", rec.Code, rec.Header(), rec.Body.String())
	}
}

func TestIsGRPC(t *testing.T) {
	for _, c := range []struct {
		ct    string
		major int
		want  bool
	}{
		{"application/grpc", 2, true}, {"application/grpc+proto", 2, true}, {"application/grpc;charset=x", 2, true},
		{"application/grpc", 1, false}, {"application/grpcx", 2, false}, {"application/json", 2, false}, {"", 2, false},
	} {
		r := httptest.NewRequest("POST", "/x", nil)
		r.ProtoMajor = c.major
		r.Header.Set("Content-Type", c.ct)
		if got := isGRPC(r); got != c.want {
			t.Errorf("%q over HTTP/%d: %v", c.ct, c.major, got)
		}
	}
}

func TestRedirectHandler(t *testing.T) {
	for _, c := range []struct {
		port, host, uri string
		status          int
		location        string
	}{
		{"443", "acme.saas.test", "/a?b=1%25", 308, "https://acme.saas.test/a?b=1%25"},
		{"8443", "acme.saas.test:8080", "/", 308, "https://acme.saas.test:8443/"},
		{"443", "", "/", 400, ""},
		{"443", "evil.test/x@", "/", 400, ""},
	} {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("GET", c.uri, nil)
		r.Host = c.host
		redirectHandler(c.port).ServeHTTP(rec, r)
		if rec.Code != c.status || rec.Header().Get("Location") != c.location {
			t.Errorf("%s %s: %d %q, want %d %q", c.host, c.uri, rec.Code, rec.Header().Get("Location"), c.status, c.location)
		}
	}
}

func TestEdgeConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*EdgeConfig)
		ok   bool
	}{
		{"defaults", func(*EdgeConfig) {}, true},
		{"tls", func(c *EdgeConfig) { c.Listen = "127.0.0.1:8443" }, true},
		{"bad listen", func(c *EdgeConfig) { c.Listen = "nope" }, false},
		{"bad policy", func(c *EdgeConfig) { c.UnknownSNI = "maybe" }, false},
		{"redirect without tls", func(c *EdgeConfig) { c.RedirectHTTPS = true }, false},
		{"tiny frames", func(c *EdgeConfig) { c.HTTP2.MaxReadFrameSize = 1024 }, false},
		{"conn window below stream's", func(c *EdgeConfig) { c.HTTP2.MaxReceiveBufferPerConnection = 1 }, false},
		{"negative hsts", func(c *EdgeConfig) { c.HSTSMaxAge = -time.Second }, false},
	} {
		var cfg EdgeConfig
		c.edit(&cfg)
		cfg.setDefaults()
		if err := cfg.validate(); (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// TestCertIndexBaseDomainOnlyDefault: a certificate other than the default
// one that also names the base domain, or names under it (even expiring
// later), is never served for those names — only for its own.
func TestCertIndexBaseDomainOnlyDefault(t *testing.T) {
	later := time.Now().Add(90 * 24 * time.Hour)
	pairs := api.KVPairs{
		selfSigned(t, "default", 1, later, "*.saas.test", "saas.test"),
		selfSigned(t, "sneaky", 2, later.Add(time.Hour), "app.acme.example", "*.saas.test", "globex.saas.test"),
	}
	idx := buildCertIndex(pairs, "default", "saas.test", time.Now())
	if len(idx.skipped) != 1 || !strings.Contains(idx.skipped[0], "globex.saas.test") {
		t.Fatalf("skipped %v, want the sneaky certificate's base-domain names said", idx.skipped)
	}
	for sni, want := range map[string]int64{"globex.saas.test": 1, "acme.saas.test": 1, "app.acme.example": 2} {
		if e := idx.lookup(sni); e == nil || e.cert.Leaf.SerialNumber.Int64() != want {
			t.Errorf("lookup(%q) = %v, want serial %d", sni, e, want)
		}
	}
}
