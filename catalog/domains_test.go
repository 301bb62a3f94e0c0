package catalog

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestNormalizeDomain(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"app.acme.com", "app.acme.com", true},
		{"App.ACME.Com", "app.acme.com", true},
		{"app.acme.com.", "app.acme.com", true},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", true},
		{"a-b.c1.io", "a-b.c1.io", true},
		{"", "", false},
		{".", "", false},
		{"localhost", "", false},
		{"app..acme.com", "", false},
		{".acme.com", "", false},
		{"app.acme.com:443", "", false},
		{"*.acme.com", "", false},
		{"-app.acme.com", "", false},
		{"app-.acme.com", "", false},
		{"app_1.acme.com", "", false},
		{"127.0.0.1", "", false},
		{"[::1]", "", false},
		{"app acme.com", "", false},
		{"bücher.example", "", false},
		{fmt.Sprintf("%064d.com", 0), "", false},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := NormalizeDomain(tc.in)
			if tc.ok != (err == nil) {
				t.Fatalf("NormalizeDomain(%q) = %q, %v; want ok=%v", tc.in, got, err, tc.ok)
			}
			if err != nil {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != DomainField || !errors.Is(err, ErrInvalid) {
					t.Fatalf("error %v is not an invalid field error on %q", err, DomainField)
				}
				return
			}
			if got != tc.want {
				t.Fatalf("NormalizeDomain(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestUnderDomain(t *testing.T) {
	cases := []struct {
		name, base string
		under      bool
	}{
		{"acme.saas.test", "saas.test", true},
		{"a.b.saas.test", "saas.test", true},
		{"saas.test", "saas.test", true},
		{"evilsaas.test", "saas.test", false},
		{"saas.test.evil.io", "saas.test", false},
		{"app.acme.com", "saas.test", false},
		{"app.acme.com", "", false},
	}
	for _, tc := range cases {
		if got := UnderDomain(tc.name, tc.base); got != tc.under {
			t.Errorf("UnderDomain(%q, %q) = %v, want %v", tc.name, tc.base, got, tc.under)
		}
	}
}

// The routers' domain map: a verified domain routes to its tenant, a
// pending one is known but does not route, and a record that does not
// match its key or names no valid tenant is skipped.
func TestDecodeDomainsAndLookup(t *testing.T) {
	const prefix = "switchyard/domains/"
	pairs := api.KVPairs{
		{Key: prefix + "app.acme.com", Value: []byte(`{"domain":"app.acme.com","tenant":"acme","state":"verified","token":"t"}`)},
		{Key: prefix + "new.bolt.io", Value: []byte(`{"domain":"new.bolt.io","tenant":"bolt","state":"pending","token":"t"}`)},
		{Key: prefix + "mismatch.io", Value: []byte(`{"domain":"other.io","tenant":"acme","state":"verified"}`)},
		{Key: prefix + "bad-tenant.io", Value: []byte(`{"domain":"bad-tenant.io","tenant":"Not Valid","state":"verified"}`)},
		{Key: prefix + "garbage.io", Value: []byte(`{`)},
	}
	skipped := 0
	s := &Snapshot{domains: decodeDomains(pairs, prefix, func(string, ...any) { skipped++ })}
	cases := []struct {
		name, tenant string
		st           DomainLookup
	}{
		{"app.acme.com", "acme", DomainRoutes},
		{"new.bolt.io", "bolt", DomainUnverified},
		{"mismatch.io", "", DomainUnknown},
		{"other.io", "", DomainUnknown},
		{"bad-tenant.io", "", DomainUnknown},
		{"garbage.io", "", DomainUnknown},
		{"APP.acme.COM", "acme", DomainRoutes}, // case folded
		{"New.Bolt.IO", "bolt", DomainUnverified},
	}
	for _, tc := range cases {
		if tenant, st := s.Domain(tc.name); tenant != tc.tenant || st != tc.st {
			t.Errorf("Domain(%q) = %q, %v; want %q, %v", tc.name, tenant, st, tc.tenant, tc.st)
		}
	}
	if skipped != 3 {
		t.Fatalf("skipped %d records, want 3", skipped)
	}
	var nilSnap *Snapshot
	if _, st := nilSnap.Domain("app.acme.com"); st != DomainUnknown {
		t.Fatal("nil snapshot knows a domain")
	}
}

// BenchmarkSnapshotDomainLookup is what a request through a custom
// domain costs the router at one million tenants and 100,000 verified
// domains: the domain map lookup, then the tenant's (the same lookup a
// subdomain request makes, measured alone as "subdomain"), over a
// working set of 65536 (cache and TLB misses).
func BenchmarkSnapshotDomainLookup(b *testing.B) {
	const n, nd, working = 1_000_000, 100_000, 65536
	tenants := millionTenants(n)
	s, err := snapshotFromTenants(tenants, DefaultBuckets)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s.domains = make(map[string]domainEntry, nd)
	for i := 0; i < nd; i++ {
		s.domains[fmt.Sprintf("app%06d.customer-%06d.example.com", i, i)] = domainEntry{tenant: tenants[(i*7)%n].ID, verified: true}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perDomain := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / nd
	names, ids := make([]string, working), make([]string, working)
	for i := range names {
		j := (i * 7919) % nd
		names[i] = fmt.Sprintf("app%06d.customer-%06d.example.com", j, j)
		ids[i] = tenants[(i*7919)%n].ID
	}
	mask := working - 1
	b.Run("subdomain", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, ok := s.Lookup(ids[i&mask]); !ok {
				b.Fatal("tenant not found")
			}
		}
	})
	upper := make([]string, working)
	for i, n := range names {
		upper[i] = strings.ToUpper(n[:1]) + n[1:] // a client sending "App…": folded on the stack
	}
	b.Run("custom-domain", func(b *testing.B) { benchDomains(b, s, names, perDomain) })
	b.Run("custom-domain-mixed-case", func(b *testing.B) { benchDomains(b, s, upper, perDomain) })
	runtime.KeepAlive(s)
}

func benchDomains(b *testing.B, s *Snapshot, names []string, perDomain float64) {
	mask := len(names) - 1
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		id, st := s.Domain(names[i&mask])
		if st != DomainRoutes {
			b.Fatal("domain not found")
		}
		if _, ok := s.Lookup(id); !ok {
			b.Fatal("tenant not found")
		}
	}
	b.ReportMetric(perDomain, "heap-bytes/domain")
}

// A name under the base domain is refused before anything is read or
// written (the store has no Consul client here: it must not be touched),
// as a field error that is also ErrDomainUnderBase; a base given with
// another case or a trailing dot is the same base.
func TestAddDomainRefusesBaseDomain(t *testing.T) {
	cases := []struct{ name, base string }{
		{"shop.saas.test", "saas.test"},
		{"saas.test", "saas.test"},
		{"A.B.SAAS.test.", "saas.test"},
		{"shop.saas.test", "SAAS.Test."},
		{"not a domain", "saas.test"},
	}
	for _, tc := range cases {
		_, created, err := (&Store{}).AddDomain(context.Background(), "acme", tc.name, tc.base, 0)
		var fe *FieldError
		if created || !errors.As(err, &fe) || fe.Field != DomainField || !errors.Is(err, ErrInvalid) {
			t.Errorf("AddDomain(%q) under %q: created=%v err=%v, want a domain field error", tc.name, tc.base, created, err)
		}
		if under := errors.Is(err, ErrDomainUnderBase); under != (tc.name != "not a domain") {
			t.Errorf("AddDomain(%q) under %q: ErrDomainUnderBase=%v (%v)", tc.name, tc.base, under, err)
		}
	}
}

// TestDomainsVersion: the listing's summary moves with any change to the
// domains (a write, a delete) and only with them.
func TestDomainsVersion(t *testing.T) {
	a := api.KVPairs{{Key: "d/a.example", ModifyIndex: 5}, {Key: "d/b.example", ModifyIndex: 9}}
	same := api.KVPairs{{Key: "d/a.example", ModifyIndex: 5}, {Key: "d/b.example", ModifyIndex: 9}}
	written := api.KVPairs{{Key: "d/a.example", ModifyIndex: 12}, {Key: "d/b.example", ModifyIndex: 9}}
	deleted := api.KVPairs{{Key: "d/a.example", ModifyIndex: 5}}
	if domainsVersion(a) != domainsVersion(same) {
		t.Fatal("the same listing summed up differently")
	}
	for name, p := range map[string]api.KVPairs{"written": written, "deleted": deleted, "empty": nil} {
		if domainsVersion(p) == domainsVersion(a) {
			t.Errorf("%s: the summary did not move", name)
		}
	}
}

// A pending claim lapses at its expiry, one recorded without an expiry
// DefaultDomainPendingTTL after it was made; a verified domain never does.
func TestDomainLapsed(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	for _, tc := range []struct {
		name string
		d    Domain
		want bool
	}{
		{"pending, before its expiry", Domain{State: DomainPending, Created: now.Add(-time.Hour), Expires: at(time.Minute)}, false},
		{"pending, at its expiry", Domain{State: DomainPending, Created: now.Add(-time.Hour), Expires: at(0)}, true},
		{"pending, past its expiry", Domain{State: DomainPending, Created: now.Add(-time.Hour), Expires: at(-time.Second)}, true},
		{"pending, no expiry, young", Domain{State: DomainPending, Created: now.Add(-time.Hour)}, false},
		{"pending, no expiry, older than the default", Domain{State: DomainPending, Created: now.Add(-DefaultDomainPendingTTL)}, true},
		{"verified, long past", Domain{State: DomainVerified, Created: now.Add(-1000 * time.Hour), Expires: at(-999 * time.Hour)}, false},
	} {
		if got := tc.d.lapsed(now); got != tc.want {
			t.Errorf("%s: lapsed = %v, want %v", tc.name, got, tc.want)
		}
	}
}
