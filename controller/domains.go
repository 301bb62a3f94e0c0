package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/switchyard/switchyard/catalog"
)

// Tenants' custom domains (README "Custom domains"):
//
//	GET    /v1/tenants/{id}/domains                   the tenant's domains
//	POST   /v1/tenants/{id}/domains                   {"domain": …}: claim one, pending (operator)
//	GET    /v1/tenants/{id}/domains/{domain}          one domain, with its token
//	POST   /v1/tenants/{id}/domains/{domain}/verify   fetch the token from the domain (operator)
//	DELETE /v1/tenants/{id}/domains/{domain}          release it (operator)
//
// A domain routes only once verified: the owner serves the token the
// controller gave at http://<domain>/.well-known/switchyard/<token>, and
// the controller fetches it.

// DomainsConfig configures custom domains.
type DomainsConfig struct {
	// BaseDomain is the routers' base domain (-base-domain): a custom
	// domain under it is refused. Empty: no base domain.
	BaseDomain string
	// VerifyResolve sends the verification fetch for a domain to a fixed
	// host:port instead of the domain's DNS address (tests, split-horizon
	// set-ups): domain → host:port.
	VerifyResolve map[string]string
	// VerifyTimeout bounds the whole verification fetch (5s).
	VerifyTimeout time.Duration
	// VerifyMaxBytes bounds the answer's body (4 KiB).
	VerifyMaxBytes int64
	// VerifyAllowPrivate lets the fetch reach loopback, private,
	// link-local and other non-public addresses. Off, a domain whose DNS
	// points there is not fetched (the controller is no proxy into its own
	// network); VerifyResolve entries are always dialled.
	VerifyAllowPrivate bool
	// PendingTTL is how long a claim waits for its verification before
	// another tenant may claim the name (72h).
	PendingTTL time.Duration
}

// SetDefaults fills in zero values.
func (c *DomainsConfig) SetDefaults() {
	if c.VerifyTimeout == 0 {
		c.VerifyTimeout = 5 * time.Second
	}
	if c.VerifyMaxBytes == 0 {
		c.VerifyMaxBytes = 4 << 10
	}
	if c.PendingTTL == 0 {
		c.PendingTTL = catalog.DefaultDomainPendingTTL
	}
}

// Validate reports settings that cannot work.
func (c *DomainsConfig) Validate() error {
	var errs []error
	if c.BaseDomain != "" {
		if _, err := catalog.NormalizeDomain(c.BaseDomain); err != nil {
			errs = append(errs, fmt.Errorf("base domain %q: %w", c.BaseDomain, err))
		}
	}
	for d, addr := range c.VerifyResolve {
		if _, err := catalog.NormalizeDomain(d); err != nil {
			errs = append(errs, fmt.Errorf("verify-resolve %q: %w", d, err))
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("verify-resolve %q=%q: want host:port: %w", d, addr, err))
		}
	}
	if c.VerifyTimeout < 0 || c.VerifyMaxBytes < 0 || c.PendingTTL < 0 {
		errs = append(errs, errors.New("verify timeout, size limit and pending claim lifetime must not be negative"))
	}
	return errors.Join(errs...)
}

// ParseVerifyResolve reads "domain=host:port,domain=host:port".
func ParseVerifyResolve(s string) (map[string]string, error) {
	out := map[string]string{}
	err := parseList(s, "=", "verify-resolve entry %q: want domain=host:port", func(d, addr string) error {
		name, err := catalog.NormalizeDomain(d)
		if err != nil {
			return fmt.Errorf("verify-resolve entry %q: %w", d+"="+addr, err)
		}
		out[name] = addr
		return nil
	})
	return out, err
}

// errVerification: the domain did not serve its token.
var errVerification = errors.New("domain verification failed")

// domainsRoutes registers the custom domain endpoints.
func (s *Server) domainsRoutes(v1 *gin.RouterGroup, read, operator gin.HandlerFunc) {
	v1.GET("/tenants/:id/domains", read, s.listDomains)
	v1.POST("/tenants/:id/domains", operator, s.idempotent(), s.addDomain)
	v1.GET("/tenants/:id/domains/:domain", read, s.getDomain)
	v1.POST("/tenants/:id/domains/:domain/verify", operator, s.idempotent(), s.verifyDomain)
	v1.DELETE("/tenants/:id/domains/:domain", operator, s.removeDomain)
}

// failDomain answers a domain error with its own code where it has one.
func failDomain(c *gin.Context, err error) {
	switch {
	case errors.Is(err, catalog.ErrDomainTaken):
		fail(c, http.StatusConflict, "domain_taken", err.Error())
	case errors.Is(err, catalog.ErrDomainUnderBase):
		c.AbortWithStatusJSON(http.StatusBadRequest, apiError{Error: "under_base_domain", Message: err.Error(), Field: catalog.DomainField})
	case errors.Is(err, errVerification):
		fail(c, http.StatusUnprocessableEntity, "verification_failed", err.Error())
	default:
		failLimits(c, err) // a *FieldError names its field; the rest as failErr
	}
}

type addDomainRequest struct {
	Domain string `json:"domain"`
}

func (s *Server) addDomain(c *gin.Context) {
	var req addDomainRequest
	if !bindJSON(c, &req) {
		return
	}
	ctx, id := c.Request.Context(), c.Param("id")
	d, created, err := s.store.AddDomain(ctx, id, req.Domain, s.cfg.Domains.BaseDomain, s.cfg.Domains.PendingTTL)
	if err != nil {
		failDomain(c, err)
		return
	}
	if !created {
		c.JSON(http.StatusOK, d) // the tenant holds it already: the same answer again
		return
	}
	if d.Replaced != "" {
		s.audit(ctx, auditEntry{Actor: actor(c), Action: "domain.lapsed", Tenant: d.Replaced,
			Detail: d.Name + " (its pending claim lapsed unverified; now claimed by " + id + ")"})
	}
	s.audit(ctx, auditEntry{Actor: actor(c), Action: "domain.add", Tenant: id, Detail: d.Name + " (pending verification)"})
	c.Header("Location", "/v1/tenants/"+id+"/domains/"+d.Name)
	c.JSON(http.StatusCreated, d)
}

func (s *Server) listDomains(c *gin.Context) {
	ctx, id := c.Request.Context(), c.Param("id")
	if _, err := s.store.GetTenant(ctx, id); err != nil {
		failErr(c, err)
		return
	}
	ds, err := s.store.ListDomains(ctx, id)
	if err != nil {
		failErr(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"tenant": id, "domains": ds})
}

func (s *Server) getDomain(c *gin.Context) {
	d, err := s.store.TenantDomain(c.Request.Context(), c.Param("id"), c.Param("domain"))
	if err != nil {
		failDomain(c, err)
		return
	}
	c.JSON(http.StatusOK, d)
}

func (s *Server) removeDomain(c *gin.Context) {
	ctx, id := c.Request.Context(), c.Param("id")
	d, err := s.store.RemoveDomain(ctx, id, c.Param("domain"))
	if err != nil {
		failDomain(c, err)
		return
	}
	s.audit(ctx, auditEntry{Actor: actor(c), Action: "domain.remove", Tenant: id, Detail: d.Name})
	c.JSON(http.StatusOK, d)
}

func (s *Server) verifyDomain(c *gin.Context) {
	ctx, id := c.Request.Context(), c.Param("id")
	d, err := s.store.TenantDomain(ctx, id, c.Param("domain"))
	if err != nil {
		failDomain(c, err)
		return
	}
	if d.State == catalog.DomainVerified {
		c.JSON(http.StatusOK, d)
		return
	}
	if err := s.fetchDomainToken(ctx, d.Name, d.Token); err != nil {
		s.audit(ctx, auditEntry{Actor: actor(c), Action: "domain.verify_failed", Tenant: id, Detail: d.Name + ": " + err.Error()})
		failDomain(c, err)
		return
	}
	d, err = s.store.MarkDomainVerified(ctx, id, d.Name, d.Token)
	if err != nil {
		failDomain(c, err)
		return
	}
	s.audit(ctx, auditEntry{Actor: actor(c), Action: "domain.verify", Tenant: id, Detail: d.Name + " verified: routes from now"})
	c.JSON(http.StatusOK, d)
}

// fetchDomainToken fetches http://<domain>/.well-known/switchyard/<token>
// and checks it answers 200 with the token as its body: within
// VerifyTimeout, at most VerifyMaxBytes, following redirects only on the
// same host, never through a proxy.
func (s *Server) fetchDomainToken(ctx context.Context, domain, token string) error {
	cfg := s.cfg.Domains
	ctx, cancel := context.WithTimeout(ctx, cfg.VerifyTimeout)
	defer cancel()
	hc := &http.Client{Transport: verifyTransport(cfg.VerifyResolve, cfg.VerifyAllowPrivate), CheckRedirect: sameHostRedirects(domain)}
	defer hc.CloseIdleConnections()
	url := "http://" + domain + "/.well-known/switchyard/" + token
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", errVerification, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: GET %s: %w", errVerification, url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: GET %s answered %d, want 200", errVerification, url, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, cfg.VerifyMaxBytes+1))
	if err != nil {
		return fmt.Errorf("%w: GET %s: reading the body: %w", errVerification, url, err)
	}
	if int64(len(body)) > cfg.VerifyMaxBytes {
		return fmt.Errorf("%w: GET %s: body over %d bytes", errVerification, url, cfg.VerifyMaxBytes)
	}
	if !bytes.Equal(bytes.TrimSpace(body), []byte(token)) {
		return fmt.Errorf("%w: GET %s: the body is not the domain's token", errVerification, url)
	}
	return nil
}

// verifyTransport dials a domain listed in resolve at its fixed address,
// any other at its own, refusing non-public addresses unless
// allowPrivate; it uses no proxy and keeps no connections.
func verifyTransport(resolve map[string]string, allowPrivate bool) *http.Transport {
	fixed := &net.Dialer{Timeout: 5 * time.Second}
	d := &net.Dialer{Timeout: 5 * time.Second}
	if !allowPrivate {
		d.Control = refuseNonPublic
	}
	return &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err == nil {
				if to, ok := resolve[strings.ToLower(host)]; ok {
					return fixed.DialContext(ctx, network, to)
				}
			}
			return d.DialContext(ctx, network, addr)
		},
		ResponseHeaderTimeout:  5 * time.Second,
		MaxResponseHeaderBytes: 16 << 10,
	}
}

// sameHostRedirects follows at most 3 redirects, and only to http URLs on
// domain itself: a domain cannot have its token vouched for by another host.
func sameHostRedirects(domain string) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if len(via) > 3 {
			return fmt.Errorf("%w: more than 3 redirects", errVerification)
		}
		if !strings.EqualFold(req.URL.Hostname(), domain) || req.URL.Scheme != "http" {
			return fmt.Errorf("%w: redirected to another host (%s)", errVerification, req.URL.Redacted())
		}
		return nil
	}
}

// releaseDomains removes every custom domain of a tenant that is gone, so
// another tenant may claim them.
func (s *Server) releaseDomains(ctx context.Context, tenant string) error {
	ds, err := s.store.ListDomains(ctx, tenant)
	if err != nil {
		return err
	}
	for _, d := range ds {
		if _, err := s.store.RemoveDomain(ctx, tenant, d.Name); err != nil && !errors.Is(err, catalog.ErrNotFound) {
			return err
		}
		s.audit(ctx, auditEntry{Actor: "controller:" + s.cfg.ID, Action: "domain.remove", Tenant: tenant, Detail: d.Name + ": the tenant was removed"})
	}
	return nil
}

// refuseNonPublic is a dialer's Control: it refuses to connect to an
// address that is not a public unicast one (checked after DNS, on the
// address actually dialled).
func refuseNonPublic(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return err
	}
	ip = ip.Unmap()
	if !ip.IsGlobalUnicast() || ip.IsPrivate() {
		return fmt.Errorf("%w: %s is not a public address (the controller's -verify-allow-private allows it)", errVerification, ip)
	}
	return nil
}
