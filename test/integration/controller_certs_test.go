package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/controller"
)

// PUT /v1/certificates/{name}: an operator stores a certificate, the
// answer and the audit log never carry its key, bad input changes nothing,
// and a running router serves the certificate from its next handshake.
func TestCertificatesAPI(t *testing.T) {
	es := newEdgeStack(t)
	ms := &moveStack{stack: es.stack}
	_, base, _ := ms.startController(func(c *controller.Config) { c.Domains.BaseDomain = "saas.test" })
	e := es.edgeRouter(nil)
	certPEM, keyPEM, serial := es.ca.issue(t, time.Now().Add(90*24*time.Hour), "app.acme.example", "www.acme.example")
	good := map[string]any{"cert_pem": certPEM, "key_pem": keyPEM}
	expired, expiredKey, _ := es.ca.issue(t, time.Now().Add(-time.Minute), "old.example")
	// A custom domain's certificate that also names a tenant's subdomain:
	// only the default certificate may answer for the base domain.
	sneaky, sneakyKey, _ := es.ca.issue(t, time.Now().Add(90*24*time.Hour), "app.acme.example", "globex.saas.test")
	for _, c := range []struct {
		name, path, token string
		body              any
		status            int
		code              string
	}{
		{"billing may not", "/v1/certificates/acme", tokBilling, good, 403, ""},
		{"bad name", "/v1/certificates/Acme%20Co", tokOperator, good, 400, "invalid"},
		{"no key", "/v1/certificates/acme", tokOperator, map[string]any{"cert_pem": certPEM}, 400, "invalid"},
		{"unknown field", "/v1/certificates/acme", tokOperator, map[string]any{"cert_pem": certPEM, "key_pem": keyPEM, "x": 1}, 400, ""},
		{"key of another certificate", "/v1/certificates/acme", tokOperator, map[string]any{"cert_pem": certPEM, "key_pem": expiredKey}, 400, "bad_certificate"},
		{"expired", "/v1/certificates/acme", tokOperator, map[string]any{"cert_pem": expired, "key_pem": expiredKey}, 400, "bad_certificate"},
		{"names under the base domain", "/v1/certificates/acme", tokOperator, map[string]any{"cert_pem": sneaky, "key_pem": sneakyKey}, 400, "under_base_domain"},
		{"stored", "/v1/certificates/acme", tokOperator, good, 200, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, out := call(t, "PUT", base+c.path, c.token, c.body, nil)
			if status != c.status || (c.code != "" && out["error"] != c.code) {
				t.Fatalf("%d %v, want %d %s", status, out, c.status, c.code)
			}
			if strings.Contains(fmt.Sprint(out), "PRIVATE KEY") || out["key_pem"] != nil {
				t.Fatalf("the answer carries the key: %v", out)
			}
			if c.status != 200 {
				if pair, _, _ := es.consul.Client().KV().Get(es.store.Keys().Certificate("acme"), nil); pair != nil {
					t.Fatal("a refused certificate was stored")
				}
				return
			}
			if names := fmt.Sprint(out["dns_names"]); names != "[app.acme.example www.acme.example]" {
				t.Fatalf("dns_names %s", names)
			}
		})
	}
	waitFor(t, 10*time.Second, "the router serving the new certificate", func() bool {
		c, err := e.peerCert("www.acme.example")
		return err == nil && c.SerialNumber.Cmp(serial) == 0
	})
	pairs, _, err := es.consul.Client().KV().List(es.store.Keys().Audits(), nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range pairs {
		if strings.Contains(string(p.Value), "PRIVATE KEY") {
			t.Fatal("the audit log carries a key")
		}
		found = found || strings.Contains(string(p.Value), "certificate.put")
	}
	if !found {
		t.Fatal("no audit entry for the certificate")
	}
}
