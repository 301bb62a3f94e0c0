package router

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/switchyard/switchyard/catalog"
)

// Header names the router sets for the upstream and strips from clients.
const (
	HeaderTenantID     = "X-Tenant-Id"
	HeaderTenantTier   = "X-Tenant-Tier"
	HeaderTenantTarget = "X-Tenant-Target"
	HeaderTenantEpoch  = "X-Tenant-Epoch"
)

// Extraction errors; each becomes a 400 or 401 with a JSON body.
var (
	ErrNoTenant       = errors.New("request names no tenant")
	ErrBadTenantID    = errors.New("tenant id is not a valid identifier")
	ErrTenantConflict = errors.New("request names two different tenants")
	ErrBadToken       = errors.New("bearer token is invalid")
	// ErrRepeatedCredentials: Authorization or X-Tenant-Id sent more than
	// once; which one counts would be a guess, so neither does.
	ErrRepeatedCredentials = errors.New("request repeats Authorization or X-Tenant-Id")
	// ErrDomainUnverified: the Host is a tenant's custom domain that is not
	// verified yet; it does not route (404 domain_unverified).
	ErrDomainUnverified = errors.New("the custom domain is not verified yet")
	// ErrUnknownDomain: the Host is neither under the base domain nor a
	// custom domain, and nothing else names a tenant (404 unknown_tenant).
	ErrUnknownDomain = errors.New("no tenant has this domain")
)

// Extractor finds the tenant a request is for. It is safe for concurrent use.
type Extractor struct {
	cfg    ExtractConfig
	suffix string // "." + base domain
	now    func() time.Time
	// domains hands out the current custom domains (nil: none are looked up).
	domains func() DomainIndex
}

// DomainIndex finds the tenant of a custom domain, exactly but for case
// (the name has no port and no trailing dot): the catalog snapshot.
type DomainIndex interface {
	Domain(name string) (tenant string, st catalog.DomainLookup)
}

var _ DomainIndex = (*catalog.Snapshot)(nil)

// NewExtractor returns an extractor for cfg.
func NewExtractor(cfg ExtractConfig) *Extractor {
	e := &Extractor{cfg: cfg, now: time.Now}
	if cfg.BaseDomain != "" {
		e.suffix = "." + strings.ToLower(cfg.BaseDomain)
	}
	return e
}

// newDomainExtractor is NewExtractor also reading tenants' custom domains
// from the catalog snapshots src hands out.
func newDomainExtractor(cfg ExtractConfig, src SnapshotSource) *Extractor {
	e := NewExtractor(cfg)
	e.domains = func() DomainIndex { return src.Snapshot() }
	return e
}

// Extraction is the outcome of Extract.
type Extraction struct {
	Tenant string
	// StripPrefix is the path prefix to remove before forwarding ("" if none).
	StripPrefix string
}

// extractInput is what extraction reads from a request.
type extractInput struct {
	tenantHeader  string // X-Tenant-Id
	authorization string
	host          string
	path          string // decoded path
	remoteAddr    string
}

// Extract returns the tenant the request names. Every enabled source is
// consulted; if two name different tenants the request is refused, so a
// forged Host cannot redirect a token holder's request, nor the reverse.
func (e *Extractor) Extract(r *http.Request) (Extraction, error) {
	if len(r.Header["Authorization"]) > 1 || len(r.Header[HeaderTenantID]) > 1 {
		return Extraction{}, ErrRepeatedCredentials
	}
	return e.extract(extractInput{
		tenantHeader:  r.Header.Get(HeaderTenantID),
		authorization: r.Header.Get("Authorization"),
		host:          r.Host,
		path:          r.URL.Path,
		remoteAddr:    r.RemoteAddr,
	})
}

func (e *Extractor) extract(in extractInput) (Extraction, error) {
	var out Extraction
	add := func(id string) error {
		if !catalog.ValidID(id) {
			return ErrBadTenantID
		}
		if out.Tenant != "" && out.Tenant != id {
			return ErrTenantConflict
		}
		out.Tenant = id
		return nil
	}
	if v := in.tenantHeader; v != "" && len(e.cfg.TrustedCIDRs) > 0 && e.trusted(in.remoteAddr) {
		if err := add(v); err != nil {
			return Extraction{}, err
		}
	}
	if len(e.cfg.JWTSecret) > 0 {
		if auth := in.authorization; auth != "" {
			if tok, ok := cutPrefixFold(auth, "Bearer "); ok {
				id, err := e.tokenTenant(strings.TrimSpace(tok))
				if err != nil {
					return Extraction{}, err
				}
				if err := add(id); err != nil {
					return Extraction{}, err
				}
			}
		}
	}
	unknownDomain := false
	if e.suffix != "" || e.domains != nil {
		id, src := e.hostSource(in.host)
		switch src {
		case hostUnverified:
			return Extraction{}, ErrDomainUnverified
		case hostUnknownDomain:
			unknownDomain = true
		case hostSubdomain, hostCustomDomain:
			if err := add(id); err != nil {
				return Extraction{}, err
			}
		}
	}
	if e.cfg.PathPrefix {
		if id, prefix, ok := pathTenant(in.path); ok {
			if err := add(id); err != nil {
				return Extraction{}, err
			}
			out.StripPrefix = prefix
		}
	}
	if out.Tenant == "" {
		if unknownDomain {
			return Extraction{}, ErrUnknownDomain
		}
		return Extraction{}, ErrNoTenant
	}
	return out, nil
}

// hostKind is what a request's Host says about its tenant.
type hostKind uint8

const (
	hostNone          hostKind = iota // names no tenant (an IP address, a bare name, the base domain)
	hostSubdomain                     // <tenant>.<base domain>
	hostCustomDomain                  // a tenant's verified custom domain
	hostUnverified                    // a tenant's custom domain, not verified yet
	hostUnknownDomain                 // a domain nobody claims
)

// hostSource reads the tenant from Host: a subdomain of the base domain,
// else a custom domain, looked up exactly but for case (the snapshot folds
// it once, without allocating).
func (e *Extractor) hostSource(host string) (string, hostKind) {
	if e.suffix != "" {
		if id, ok := e.hostTenant(host); ok {
			return id, hostSubdomain
		}
	}
	if e.domains == nil {
		return "", hostNone
	}
	name := hostName(host)
	if strings.IndexByte(name, '.') < 0 || name[len(name)-1] <= '9' || strings.IndexByte(name, ':') >= 0 {
		return "", hostNone // no dot, an IPv4 address (numeric last label) or an IPv6 one
	}
	if e.suffix != "" && (len(name) >= len(e.suffix) && strings.EqualFold(name[len(name)-len(e.suffix):], e.suffix) || strings.EqualFold(name, e.suffix[1:])) {
		return "", hostNone // under the base domain: only <tenant>.<base> names a tenant
	}
	id, st := e.domains().Domain(name)
	switch st {
	case catalog.DomainRoutes:
		return id, hostCustomDomain
	case catalog.DomainUnverified:
		return id, hostUnverified
	}
	return "", hostUnknownDomain
}

// hostName is Host without its port and trailing dot.
func hostName(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	return strings.TrimSuffix(host, ".")
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

func (e *Extractor) trusted(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	for _, p := range e.cfg.TrustedCIDRs {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// hostTenant returns <tenant> from "<tenant>.<base>[:port]". Only a single
// label directly under the base domain counts.
func (e *Extractor) hostTenant(host string) (string, bool) {
	host = hostName(host)
	if len(host) <= len(e.suffix) || !strings.EqualFold(host[len(host)-len(e.suffix):], e.suffix) {
		return "", false
	}
	label := host[:len(host)-len(e.suffix)]
	if strings.IndexByte(label, '.') >= 0 {
		return "", false
	}
	return strings.ToLower(label), true
}

// pathTenant returns <tenant> and the prefix to strip from "/t/<tenant>/...".
func pathTenant(path string) (id, prefix string, ok bool) {
	rest, ok := strings.CutPrefix(path, "/t/")
	if !ok {
		return "", "", false
	}
	id = rest
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		id = rest[:i]
	}
	if id == "" {
		return "", "", false
	}
	return id, path[:3+len(id)], true
}

// tokenTenant verifies an HS256 JWT and returns its tenant claim. Only HS256
// is accepted: "none" and every other algorithm are refused.
func (e *Extractor) tokenTenant(tok string) (string, error) {
	h, rest, ok := strings.Cut(tok, ".")
	if !ok {
		return "", ErrBadToken
	}
	p, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.IndexByte(sig, '.') >= 0 {
		return "", ErrBadToken
	}
	var header struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
	}
	hb, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil || json.Unmarshal(hb, &header) != nil || header.Alg != "HS256" {
		return "", ErrBadToken
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return "", ErrBadToken
	}
	mac := hmac.New(sha256.New, e.cfg.JWTSecret)
	mac.Write([]byte(tok[:len(h)+1+len(p)]))
	if !hmac.Equal(mac.Sum(nil), got) {
		return "", ErrBadToken
	}
	pb, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return "", ErrBadToken
	}
	var claims struct {
		Tenant string   `json:"tenant"`
		Exp    *float64 `json:"exp"`
		Nbf    *float64 `json:"nbf"`
	}
	if err := json.Unmarshal(pb, &claims); err != nil {
		return "", ErrBadToken
	}
	now := float64(e.now().Unix())
	if claims.Exp != nil && now >= *claims.Exp {
		return "", ErrBadToken
	}
	if claims.Nbf != nil && now < *claims.Nbf {
		return "", ErrBadToken
	}
	if claims.Tenant == "" {
		return "", ErrBadToken
	}
	return claims.Tenant, nil
}

// SignToken makes an HS256 JWT with a tenant claim (and exp = now+ttl if ttl != 0):
// for tests, the dev stack and the CLI.
func SignToken(secret []byte, tenant string, ttl time.Duration) string {
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	claims := map[string]any{"tenant": tenant}
	if ttl != 0 {
		claims["exp"] = time.Now().Add(ttl).Unix()
	}
	cb, _ := json.Marshal(claims)
	payload := base64.RawURLEncoding.EncodeToString(cb)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(header + "." + payload))
	return header + "." + payload + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}
