package router

import (
	"errors"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func testExtractor() *Extractor {
	return NewExtractor(ExtractConfig{
		BaseDomain:   "example.test",
		PathPrefix:   true,
		JWTSecret:    testSecret,
		TrustedCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
	})
}

func TestExtract(t *testing.T) {
	e := testExtractor()
	other := []byte("ffffffffffffffffffffffffffffffff")
	cases := []struct {
		name    string
		host    string
		path    string
		remote  string
		headers map[string]string
		tenant  string
		strip   string
		err     error
	}{
		{name: "host", host: "acme.example.test", path: "/orders", tenant: "acme"},
		{name: "host with port and case", host: "ACME.Example.Test:8080", path: "/", tenant: "acme"},
		{name: "host trailing dot", host: "acme.example.test.", path: "/", tenant: "acme"},
		{name: "nested subdomain ignored", host: "a.acme.example.test", path: "/", err: ErrNoTenant},
		{name: "suffix trick", host: "acme.example.test.evil.io", path: "/", err: ErrNoTenant},
		{name: "lookalike domain", host: "acmeexample.test", path: "/", err: ErrNoTenant},
		{name: "bare base domain", host: "example.test", path: "/", err: ErrNoTenant},
		{name: "path", host: "api.other", path: "/t/bolt/orders/1", tenant: "bolt", strip: "/t/bolt"},
		{name: "path only tenant", host: "api.other", path: "/t/bolt", tenant: "bolt", strip: "/t/bolt"},
		{name: "path bad id", host: "api.other", path: "/t/Bolt!/x", err: ErrBadTenantID},
		{name: "path empty id", host: "api.other", path: "/t//x", err: ErrNoTenant},
		{name: "token", host: "api.other", path: "/", headers: map[string]string{"Authorization": "Bearer " + SignToken(testSecret, "cato", time.Hour)}, tenant: "cato"},
		{name: "token lowercase scheme", host: "api.other", path: "/", headers: map[string]string{"Authorization": "bearer " + SignToken(testSecret, "cato", time.Hour)}, tenant: "cato"},
		{name: "token wrong key", host: "api.other", path: "/", headers: map[string]string{"Authorization": "Bearer " + SignToken(other, "cato", time.Hour)}, err: ErrBadToken},
		{name: "token expired", host: "api.other", path: "/", headers: map[string]string{"Authorization": "Bearer " + SignToken(testSecret, "cato", -time.Hour)}, err: ErrBadToken},
		{name: "token alg none", host: "api.other", path: "/", headers: map[string]string{"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJ0ZW5hbnQiOiJjYXRvIn0."}, err: ErrBadToken},
		{name: "token garbage", host: "api.other", path: "/", headers: map[string]string{"Authorization": "Bearer a.b.c.d"}, err: ErrBadToken},
		{name: "token and host agree", host: "cato.example.test", path: "/", headers: map[string]string{"Authorization": "Bearer " + SignToken(testSecret, "cato", time.Hour)}, tenant: "cato"},
		{name: "forged host vs token", host: "acme.example.test", path: "/", headers: map[string]string{"Authorization": "Bearer " + SignToken(testSecret, "cato", time.Hour)}, err: ErrTenantConflict},
		{name: "host vs path", host: "acme.example.test", path: "/t/bolt/", err: ErrTenantConflict},
		{name: "untrusted header ignored", host: "api.other", path: "/", remote: "192.0.2.1:1234", headers: map[string]string{"X-Tenant-ID": "acme"}, err: ErrNoTenant},
		{name: "untrusted header cannot override host", host: "bolt.example.test", path: "/", remote: "192.0.2.1:1234", headers: map[string]string{"X-Tenant-ID": "acme"}, tenant: "bolt"},
		{name: "trusted header", host: "api.other", path: "/", remote: "10.1.2.3:1234", headers: map[string]string{"X-Tenant-ID": "acme"}, tenant: "acme"},
		{name: "trusted header conflicts with host", host: "bolt.example.test", path: "/", remote: "10.1.2.3:1234", headers: map[string]string{"X-Tenant-ID": "acme"}, err: ErrTenantConflict},
		{name: "nothing", host: "api.other", path: "/", err: ErrNoTenant},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://placeholder"+tc.path, nil)
			r.Host = tc.host
			if tc.remote != "" {
				r.RemoteAddr = tc.remote
			}
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			got, err := e.Extract(r)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v (tenant %q)", err, tc.err, got.Tenant)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if got.Tenant != tc.tenant || got.StripPrefix != tc.strip {
				t.Fatalf("got %+v, want tenant %q strip %q", got, tc.tenant, tc.strip)
			}
		})
	}
}

// FuzzExtract throws arbitrary Hosts, paths, tokens and headers at the
// extractor. Whatever it returns must be a valid tenant id that one of the
// enabled sources really named, never a panic.
func FuzzExtract(f *testing.F) {
	f.Add("acme.example.test", "/t/acme/x", "Bearer "+SignToken(testSecret, "acme", time.Hour), "acme", "10.0.0.1:1")
	f.Add("bolt.example.test:80", "/orders", "", "", "192.0.2.1:1")
	f.Add("x", "/t/", "Bearer a.b.c", "Bad Id", "[::1]:1")
	f.Add("..example.test", "/t/a/b/c", "Bearer eyJhbGciOiJIUzI1NiJ9..", "", "garbage")
	e := testExtractor()
	f.Fuzz(func(t *testing.T, host, path, auth, header, remote string) {
		r := httptest.NewRequest("GET", "http://placeholder/", nil)
		r.URL.Path = path
		r.Host = host
		r.RemoteAddr = remote
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		if header != "" {
			r.Header.Set("X-Tenant-ID", header)
		}
		got, err := e.Extract(r)
		if err != nil {
			if got.Tenant != "" {
				t.Fatalf("error %v with tenant %q", err, got.Tenant)
			}
			return
		}
		if !catalog.ValidID(got.Tenant) {
			t.Fatalf("extracted invalid tenant id %q", got.Tenant)
		}
		named := strings.Contains(strings.ToLower(host), got.Tenant) || strings.Contains(path, got.Tenant) ||
			header == got.Tenant || strings.HasPrefix(strings.ToLower(auth), "bearer ")
		if !named {
			t.Fatalf("tenant %q named by no source (host %q path %q)", got.Tenant, host, path)
		}
		if got.StripPrefix != "" && !strings.HasPrefix(path, got.StripPrefix) {
			t.Fatalf("strip prefix %q not a prefix of %q", got.StripPrefix, path)
		}
	})
}

func TestRouterOwnedHeaders(t *testing.T) {
	for k, want := range map[string]bool{
		"X-Tenant-Id": true, "X-Tenant_id": true, "X_tenant-Id": true, "x-tenant-target": true,
		"X-Forwarded-For": true, "X-Forwarded_Host": true, "Forwarded": true, "forwarded": true,
		"X-Tenant": false, "Forwarded-X": false, "Authorization": false, "X-Request-Id": false, "X-Tenantx-Id": false,
	} {
		if got := routerOwned(k); got != want {
			t.Errorf("routerOwned(%q) = %v, want %v", k, got, want)
		}
	}
}
