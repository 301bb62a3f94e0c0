package router

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
)

// mapDomains is a DomainIndex over a map (name → tenant, verified).
type mapDomains map[string]struct {
	tenant   string
	verified bool
}

func (m mapDomains) Domain(name string) (string, catalog.DomainLookup) {
	e, ok := m[strings.ToLower(name)]
	switch {
	case !ok:
		return "", catalog.DomainUnknown
	case !e.verified:
		return e.tenant, catalog.DomainUnverified
	}
	return e.tenant, catalog.DomainRoutes
}

var _ DomainIndex = mapDomains(nil)

func domainExtractor() *Extractor {
	e := testExtractor()
	idx := mapDomains{
		"app.acme.com":    {"acme", true},
		"shop.bolt.io":    {"bolt", true},
		"pending.acme.io": {"acme", false},
		// under the base domain: never consulted (only <tenant>.<base> names a tenant there)
		"x.acme.example.test": {"bolt", true},
	}
	e.domains = func() DomainIndex { return idx }
	return e
}

func TestExtractCustomDomain(t *testing.T) {
	e := domainExtractor()
	acmeTok := "Bearer " + SignToken(testSecret, "acme", time.Hour)
	cases := []struct {
		name, host, path, auth string
		tenant, strip          string
		err                    error
	}{
		{name: "verified domain", host: "app.acme.com", path: "/orders", tenant: "acme"},
		{name: "upper case and port", host: "APP.Acme.COM:8080", path: "/", tenant: "acme"},
		{name: "trailing dot", host: "app.acme.com.", path: "/", tenant: "acme"},
		{name: "another tenant's domain", host: "shop.bolt.io", path: "/", tenant: "bolt"},
		{name: "pending domain", host: "pending.acme.io", path: "/", err: ErrDomainUnverified},
		{name: "pending domain even with a path naming its tenant", host: "pending.acme.io", path: "/t/acme/x", err: ErrDomainUnverified},
		{name: "unknown domain", host: "nobody.example.org", path: "/", err: ErrUnknownDomain},
		{name: "unknown domain, tenant by path", host: "nobody.example.org", path: "/t/acme/x", tenant: "acme", strip: "/t/acme"},
		{name: "domain agrees with token", host: "app.acme.com", path: "/", auth: acmeTok, tenant: "acme"},
		{name: "domain conflicts with token", host: "shop.bolt.io", path: "/", auth: acmeTok, err: ErrTenantConflict},
		{name: "domain conflicts with path", host: "shop.bolt.io", path: "/t/acme/", err: ErrTenantConflict},
		{name: "nested name under the base domain is not looked up", host: "x.acme.example.test", path: "/", err: ErrNoTenant},
		{name: "nested name under the base domain in upper case", host: "X.ACME.Example.Test", path: "/", err: ErrNoTenant},
		{name: "base domain itself", host: "example.test", path: "/", err: ErrNoTenant},
		{name: "subdomain still works", host: "bolt.example.test", path: "/", tenant: "bolt"},
		{name: "IPv4 address", host: "127.0.0.1:8080", path: "/", err: ErrNoTenant},
		{name: "IPv6 address", host: "[::1]:8080", path: "/", err: ErrNoTenant},
		{name: "bare name", host: "localhost", path: "/", err: ErrNoTenant},
		{name: "suffix trick on a domain", host: "app.acme.com.evil.io", path: "/", err: ErrUnknownDomain},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://placeholder"+tc.path, nil)
			r.Host = tc.host
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			got, err := e.Extract(r)
			if tc.err != nil {
				if !errors.Is(err, tc.err) || got.Tenant != "" {
					t.Fatalf("got %+v, %v; want error %v", got, err, tc.err)
				}
				return
			}
			if err != nil || got.Tenant != tc.tenant || got.StripPrefix != tc.strip {
				t.Fatalf("got %+v, %v; want tenant %q strip %q", got, err, tc.tenant, tc.strip)
			}
		})
	}
}

// The router's answers to a domain that does not route.
func TestDomainExtractionErrors(t *testing.T) {
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{ErrDomainUnverified, 404, "domain_unverified"},
		{ErrUnknownDomain, 404, "unknown_tenant"},
		{ErrNoTenant, 400, "no_tenant"},
	}
	for _, tc := range cases {
		if e := extractionError(tc.err); e.status != tc.status || e.code != tc.code {
			t.Errorf("%v: %d %s, want %d %s", tc.err, e.status, e.code, tc.status, tc.code)
		}
	}
}

// BenchmarkExtractHost is extraction's cost by Host, a subdomain or a
// custom domain, over a map fake of the domain index (the snapshot's own
// cost, case folding included, is catalog's BenchmarkSnapshotDomainLookup).
func BenchmarkExtractHost(b *testing.B) {
	e := domainExtractor()
	for _, host := range []string{"acme.example.test", "app.acme.com"} {
		b.Run(host, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := e.extract(extractInput{host: host, path: "/orders"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
