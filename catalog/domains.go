package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// A tenant's custom domains live one key each under Keys.Domains
// (<prefix>/domains/<domain>), apart from the tenant buckets: the key is
// the claim, so creating it with a check-and-set on index 0 makes a domain
// belong to one tenant at most, however many claims race. Routers watch
// the prefix and hold the domains as a map in their snapshot; a domain
// names its tenant by id, never a target, so it follows the tenant
// through moves.

// DomainState is where a custom domain is in its verification.
type DomainState string

// Domain states: only a verified domain routes.
const (
	DomainPending  DomainState = "pending"
	DomainVerified DomainState = "verified"
)

// Domain is a tenant's custom domain.
type Domain struct {
	Name   string      `json:"domain"`
	Tenant string      `json:"tenant"`
	State  DomainState `json:"state"`
	// Token is what the owner serves at
	// http://<domain>/.well-known/switchyard/<token> to prove control.
	Token   string    `json:"token"`
	Created time.Time `json:"created"`
	// Expires is when a pending claim lapses: from then on another
	// tenant's claim replaces it (a claim nobody verifies never holds a
	// name for ever). A verified domain does not expire.
	Expires    *time.Time `json:"expires,omitempty"`
	VerifiedAt *time.Time `json:"verified_at,omitempty"`
	// Replaced names the tenant whose lapsed pending claim this claim
	// replaced, if any.
	Replaced string `json:"replaced,omitempty"`
}

// DefaultDomainPendingTTL is how long a pending claim holds its name
// against other tenants' claims when the caller sets no other.
const DefaultDomainPendingTTL = 72 * time.Hour

// lapsed reports whether d is a pending claim past its expiry at now. A
// claim recorded before claims expired (no Expires) lapses
// DefaultDomainPendingTTL after it was made.
func (d Domain) lapsed(now time.Time) bool {
	if d.State != DomainPending {
		return false
	}
	if d.Expires == nil {
		return !now.Before(d.Created.Add(DefaultDomainPendingTTL))
	}
	return !now.Before(*d.Expires)
}

// Domain errors callers branch on.
var (
	// ErrDomainTaken: the domain belongs to another tenant.
	ErrDomainTaken = errors.New("domain belongs to another tenant")
	// ErrDomainUnderBase: the domain falls under the routers' base domain,
	// whose names are the tenants' own subdomains.
	ErrDomainUnderBase = errors.New("domain falls under the base domain")
)

// underBaseError is a *FieldError that is also ErrDomainUnderBase.
type underBaseError struct{ fe *FieldError }

func (e *underBaseError) Error() string { return e.fe.Error() }

// Unwrap makes it a *FieldError (and so ErrInvalid).
func (e *underBaseError) Unwrap() error { return e.fe }

// Is makes it ErrDomainUnderBase.
func (e *underBaseError) Is(target error) bool { return target == ErrDomainUnderBase }

// DomainField is the field name domain errors are reported under.
const DomainField = "domain"

// NormalizeDomain returns a domain name in the one form it is stored and
// looked up in: lower case, without a trailing dot. It refuses what is not
// a DNS host name of at least two labels (IP addresses, ports, wildcards,
// empty labels, labels over 63 characters) with a *FieldError.
func NormalizeDomain(s string) (string, error) {
	bad := func(problem string) (string, error) {
		return "", &FieldError{Field: DomainField, Problem: problem}
	}
	name := strings.ToLower(strings.TrimSuffix(s, "."))
	if name == "" || len(name) > 253 {
		return bad("must be a host name of 1 to 253 characters")
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return bad("must have at least two labels (example.com)")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return bad(fmt.Sprintf("label %q: 1 to 63 letters, digits or hyphens, not starting or ending with a hyphen", l))
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return bad(fmt.Sprintf("label %q: only letters, digits and hyphens", l))
			}
		}
	}
	if tld := labels[len(labels)-1]; strings.Trim(tld, "0123456789") == "" {
		return bad("must be a host name, not an IP address")
	}
	return name, nil
}

// UnderDomain reports whether name is base or a name under it (both
// normalised).
func UnderDomain(name, base string) bool {
	return base != "" && (name == base || strings.HasSuffix(name, "."+base))
}

// newDomainToken is a verification token: 128 random bits, hex.
func newDomainToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// AddDomain claims name for tenant, pending verification for pendingFor
// (DefaultDomainPendingTTL if 0). The claim is a check-and-set creating
// the domain's key, so of concurrent claims exactly one wins. It returns
// created=false with the existing record when the tenant already holds
// the domain (its own lapsed claim renewed for pendingFor, same token);
// ErrDomainTaken when another does (a pending claim of another tenant
// past its expiry is replaced instead, by a check-and-set on the record
// read: a verification racing it wins or loses whole); ErrDomainUnderBase
// (a *FieldError, so ErrInvalid) under base.
func (s *Store) AddDomain(ctx context.Context, tenant, name, base string, pendingFor time.Duration) (d Domain, created bool, err error) {
	name, err = NormalizeDomain(name)
	if err != nil {
		return Domain{}, false, err
	}
	if base = strings.ToLower(strings.TrimSuffix(base, ".")); UnderDomain(name, base) {
		return Domain{}, false, &underBaseError{&FieldError{Field: DomainField,
			Problem: fmt.Sprintf("%s falls under the base domain %s, whose names are the tenants' own subdomains", name, base)}}
	}
	if _, err := s.GetTenant(ctx, tenant); err != nil {
		return Domain{}, false, err
	}
	if pendingFor <= 0 {
		pendingFor = DefaultDomainPendingTTL
	}
	now := time.Now().UTC()
	expires := now.Add(pendingFor)
	d = Domain{Name: name, Tenant: tenant, State: DomainPending, Token: newDomainToken(), Created: now, Expires: &expires}
	var idx uint64 // 0: create the key
	for attempt := 0; attempt < 3; attempt++ {
		ok, err := s.casDomain(ctx, d, idx)
		if err != nil || ok {
			return d, ok, err
		}
		cur, curIdx, err := s.GetDomain(ctx, name)
		switch {
		case errors.Is(err, ErrNotFound):
			idx, d.Replaced = 0, "" // released meanwhile: claim it afresh
			continue
		case err != nil:
			return Domain{}, false, err
		case cur.Tenant == tenant && !cur.lapsed(time.Now()):
			return cur, false, nil
		case cur.Tenant == tenant:
			cur.Expires = &expires // renewed, token kept: the owner may serve it already
			if ok, err := s.casDomain(ctx, cur, curIdx); err != nil || ok {
				return cur, false, err
			}
			idx = 0
			continue
		case !cur.lapsed(time.Now()):
			return Domain{}, false, fmt.Errorf("domain %s: %w", name, ErrDomainTaken)
		}
		idx, d.Replaced = curIdx, cur.Tenant // another tenant's lapsed claim: replace it
	}
	return Domain{}, false, fmt.Errorf("domain %s: claimed concurrently: %w", name, ErrConflict)
}

// casDomain writes d with a check-and-set on idx (0: the key must not exist).
func (s *Store) casDomain(ctx context.Context, d Domain, idx uint64) (bool, error) {
	data, err := json.Marshal(d)
	if err != nil {
		return false, err
	}
	ok, _, err := s.client.KV().CAS(&api.KVPair{Key: s.keys.Domain(d.Name), Value: data, ModifyIndex: idx}, writeOpts(ctx))
	if err != nil {
		return false, fmt.Errorf("add domain: %w", err)
	}
	return ok, nil
}

// GetDomain returns a domain's record and its ModifyIndex; ErrNotFound if
// nobody claims it.
func (s *Store) GetDomain(ctx context.Context, name string) (Domain, uint64, error) {
	name, err := NormalizeDomain(name)
	if err != nil {
		return Domain{}, 0, err
	}
	pair, _, err := s.client.KV().Get(s.keys.Domain(name), readOpts(ctx))
	if err != nil {
		return Domain{}, 0, fmt.Errorf("get domain: %w", err)
	}
	if pair == nil {
		return Domain{}, 0, fmt.Errorf("domain %s: %w", name, ErrNotFound)
	}
	var d Domain
	if err := json.Unmarshal(pair.Value, &d); err != nil {
		return Domain{}, 0, fmt.Errorf("domain %s: %w", name, err)
	}
	return d, pair.ModifyIndex, nil
}

// tenantDomain is GetDomain for a domain the tenant must hold: another
// tenant's domain is ErrNotFound to it, as if it did not exist.
func (s *Store) tenantDomain(ctx context.Context, tenant, name string) (Domain, uint64, error) {
	d, idx, err := s.GetDomain(ctx, name)
	if err != nil {
		return Domain{}, 0, err
	}
	if d.Tenant != tenant {
		return Domain{}, 0, fmt.Errorf("domain %s of tenant %s: %w", d.Name, tenant, ErrNotFound)
	}
	return d, idx, nil
}

// TenantDomain returns a domain the tenant holds (ErrNotFound otherwise).
func (s *Store) TenantDomain(ctx context.Context, tenant, name string) (Domain, error) {
	d, _, err := s.tenantDomain(ctx, tenant, name)
	return d, err
}

// ListDomains returns the domains of tenant ("" for every tenant's), by name.
func (s *Store) ListDomains(ctx context.Context, tenant string) ([]Domain, error) {
	pairs, _, err := s.client.KV().List(s.keys.Domains(), readOpts(ctx))
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	out := []Domain{}
	for _, p := range pairs {
		var d Domain
		if err := json.Unmarshal(p.Value, &d); err != nil {
			return nil, fmt.Errorf("%s: %w", p.Key, err)
		}
		if tenant == "" || d.Tenant == tenant {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// MarkDomainVerified marks the tenant's domain verified (a no-op if it
// is). The write is a check-and-set on the record read, so a domain
// removed and claimed again meanwhile is not verified by mistake.
func (s *Store) MarkDomainVerified(ctx context.Context, tenant, name, token string) (Domain, error) {
	d, idx, err := s.tenantDomain(ctx, tenant, name)
	if err != nil {
		return Domain{}, err
	}
	if d.State == DomainVerified {
		return d, nil
	}
	if d.Token != token {
		return Domain{}, fmt.Errorf("domain %s: its token changed during verification: %w", d.Name, ErrConflict)
	}
	now := time.Now().UTC()
	d.State, d.VerifiedAt, d.Expires = DomainVerified, &now, nil
	ok, err := s.casDomain(ctx, d, idx)
	if err != nil {
		return Domain{}, fmt.Errorf("verify domain: %w", err)
	}
	if !ok {
		return Domain{}, fmt.Errorf("domain %s: %w", d.Name, ErrConflict)
	}
	return d, nil
}

// RemoveDomain releases the tenant's domain (check-and-set on the record
// read): routers stop routing it from their next snapshot.
func (s *Store) RemoveDomain(ctx context.Context, tenant, name string) (Domain, error) {
	d, idx, err := s.tenantDomain(ctx, tenant, name)
	if err != nil {
		return Domain{}, err
	}
	ok, _, err := s.client.KV().DeleteCAS(&api.KVPair{Key: s.keys.Domain(d.Name), ModifyIndex: idx}, writeOpts(ctx))
	if err != nil {
		return Domain{}, fmt.Errorf("remove domain: %w", err)
	}
	if !ok {
		return Domain{}, fmt.Errorf("domain %s: %w", d.Name, ErrConflict)
	}
	return d, nil
}

// domainEntry is a domain as routers hold it.
type domainEntry struct {
	tenant   string
	verified bool
}

// DomainLookup is what the snapshot knows of a Host's domain.
type DomainLookup uint8

// DomainLookup results.
const (
	DomainUnknown    DomainLookup = iota // no tenant claims it
	DomainUnverified                     // claimed, not verified yet: it does not route
	DomainRoutes                         // verified: it routes to its tenant
)

// Domain looks a host name up in the custom domains, exactly but for case:
// name is without port and trailing dot. Upper case is folded once, on the
// stack. It never blocks and never allocates.
func (s *Snapshot) Domain(name string) (tenant string, st DomainLookup) {
	if s == nil || len(name) > 253 {
		return "", DomainUnknown
	}
	var e domainEntry
	var ok bool
	if i := firstUpper(name); i < 0 {
		e, ok = s.domains[name]
	} else {
		var buf [253]byte
		n := copy(buf[:], name)
		for ; i < n; i++ {
			if c := buf[i]; 'A' <= c && c <= 'Z' {
				buf[i] = c + 'a' - 'A'
			}
		}
		e, ok = s.domains[string(buf[:n])] // no allocation: the compiler looks the bytes up in place
	}
	switch {
	case !ok:
		return "", DomainUnknown
	case !e.verified:
		return e.tenant, DomainUnverified
	}
	return e.tenant, DomainRoutes
}

// decodeDomains builds the routers' domain map from the prefix's pairs.
// An unreadable record, or one whose name does not match its key, is
// skipped (never a reason to stop serving the others).
func decodeDomains(pairs api.KVPairs, prefix string, warn func(msg string, args ...any)) map[string]domainEntry {
	out := make(map[string]domainEntry, len(pairs))
	for _, p := range pairs {
		var d Domain
		if err := json.Unmarshal(p.Value, &d); err != nil || d.Name != strings.TrimPrefix(p.Key, prefix) || !ValidID(d.Tenant) {
			warn("skipping unreadable custom domain", "key", p.Key, "err", err)
			continue
		}
		out[d.Name] = domainEntry{tenant: d.Tenant, verified: d.State == DomainVerified}
	}
	return out
}

// watchDomains keeps the snapshot's custom domains current.
func (w *Watcher) watchDomains(ctx context.Context, index uint64) (uint64, error) {
	pairs, meta, err := w.store.client.KV().List(w.store.keys.Domains(), w.blockingOpts(ctx, index))
	if err != nil {
		return index, err
	}
	if meta.LastIndex == index && index != 0 {
		return index, nil
	}
	// A prefix's index moves with writes elsewhere in the KV store too
	// (always, for an empty prefix): swap the routers' snapshot only when
	// the domains themselves changed.
	seen := domainsVersion(pairs)
	if w.gotDomains.Load() && seen == w.domainsSeen.Load() {
		return meta.LastIndex, nil
	}
	w.domainsSeen.Store(seen)
	domains := decodeDomains(pairs, w.store.keys.Domains(), w.cfg.Logger.Warn)
	w.mu.Lock()
	cur := w.snap.Load()
	next := *cur
	next.domains = domains
	w.swapLocked(cur, &next)
	w.mu.Unlock()
	w.gotDomains.Store(true)
	w.markReady()
	return meta.LastIndex, nil
}

// firstUpper is the index of name's first ASCII upper-case letter, or -1.
func firstUpper(name string) int {
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return i
		}
	}
	return -1
}

// domainsVersion sums up a listing of the domains: the newest modify index
// and the number of keys (a delete lowers the count, any write raises the
// index).
func domainsVersion(pairs api.KVPairs) uint64 {
	var newest uint64
	for _, p := range pairs {
		newest = max(newest, p.ModifyIndex)
	}
	return newest<<20 | uint64(len(pairs))&(1<<20-1)
}
