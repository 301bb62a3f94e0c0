// Package router is Switchyard's tenant-aware reverse proxy. It finds the
// tenant of each request, looks it up in the catalog snapshot and forwards it
// to a healthy backend of that tenant's target, holding the tenant's requests
// for the instant of a cutover.
package router

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Config configures a router. Zero values take the defaults in SetDefaults.
type Config struct {
	// NetHTTPOnly hands every connection to net/http instead of the fast
	// path (a fallback, and for A/B benchmarks).
	NetHTTPOnly bool
	// StdTransport uses net/http's Transport towards backends instead of the
	// synchronous one (a fallback, and for A/B benchmarks).
	StdTransport bool
	// Listen is the proxy's address (127.0.0.1:8080).
	Listen string
	// AdminListen serves /livez, /readyz and /metrics (127.0.0.1:9080).
	AdminListen string
	// ID names this router instance in Consul (hostname-pid).
	ID string

	// Extraction: which ways of naming the tenant are on.
	Extract ExtractConfig

	// ReadHeaderTimeout bounds how long a client may take to send headers (5s).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle client keep-alive connections (90s).
	IdleTimeout time.Duration
	// UpstreamHeaderTimeout bounds the wait for a backend's response headers;
	// past it the client gets 504 (30s).
	UpstreamHeaderTimeout time.Duration
	// DialTimeout bounds connecting to a backend (2s).
	DialTimeout time.Duration
	// MaxHeaderBytes caps the request headers; larger gets 431 (64 KiB).
	MaxHeaderBytes int
	// MaxBodyBytes caps the request body; larger gets 413 (32 MiB).
	MaxBodyBytes int64
	// BodyIdleTimeout ends a request whose body sends nothing for this long
	// with 408, and cancels its backend exchange (10s).
	BodyIdleTimeout time.Duration
	// BodyTimeout ends a request whose body has not arrived whole this long
	// after its head with 408 (60s).
	BodyTimeout time.Duration
	// HoldMax is how long a frozen tenant's request may be held before it
	// gets 503 with Retry-After (2s).
	HoldMax time.Duration
	// LeaseTTL is how long after its last acknowledged Consul session
	// renewal the router may forward on its snapshot (10s, Consul's
	// shortest session TTL; shorter only makes it stricter).
	LeaseTTL time.Duration
	// ShutdownTimeout bounds the drain of in-flight requests (30s).
	ShutdownTimeout time.Duration

	Breaker BreakerConfig

	// Observe: usage metering, request ids, the access log.
	Observe ObserveConfig

	// AdminPprof serves net/http/pprof under /debug/pprof/ on the admin
	// listener (off: profiles reveal internals and cost CPU).
	AdminPprof bool

	// TLS: the TLS listener, HTTP/2 and the plaintext listener's redirect
	// (edge.go).
	TLS EdgeConfig
}

// ExtractConfig says how a request names its tenant.
type ExtractConfig struct {
	// BaseDomain turns on Host extraction: <tenant>.<BaseDomain>.
	BaseDomain string
	// PathPrefix turns on /t/<tenant>/... extraction (the prefix is stripped).
	PathPrefix bool
	// JWTSecret turns on bearer tokens: HS256 JWTs with a "tenant" claim.
	JWTSecret []byte
	// TrustedCIDRs are callers whose X-Tenant-ID header is honoured; from
	// anyone else it is removed.
	TrustedCIDRs []netip.Prefix
}

// BreakerConfig configures the per-backend circuit breakers.
type BreakerConfig struct {
	// ConsecutiveFailures trips the breaker (5).
	ConsecutiveFailures uint32
	// OpenTimeout is how long it stays open before a probe (5s).
	OpenTimeout time.Duration
	// HalfOpenRequests is how many probes half-open lets through (1).
	HalfOpenRequests uint32
}

// SetDefaults fills in zero values.
func (c *Config) SetDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.AdminListen == "" {
		c.AdminListen = "127.0.0.1:9080"
	}
	if c.ID == "" {
		// Unique per instance: two routers sharing an id would share one
		// cutover registration, and a cutover would wait for only one.
		h, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s-%d-%04x", h, os.Getpid(), rand.Uint32()&0xffff)
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = 5 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 90 * time.Second
	}
	if c.UpstreamHeaderTimeout == 0 {
		c.UpstreamHeaderTimeout = 30 * time.Second
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 2 * time.Second
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 32 << 20
	}
	if c.BodyIdleTimeout == 0 {
		c.BodyIdleTimeout = 10 * time.Second
	}
	if c.BodyTimeout == 0 {
		c.BodyTimeout = 60 * time.Second
	}
	if c.HoldMax == 0 {
		c.HoldMax = 2 * time.Second
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.Breaker.ConsecutiveFailures == 0 {
		c.Breaker.ConsecutiveFailures = 5
	}
	if c.Breaker.OpenTimeout == 0 {
		c.Breaker.OpenTimeout = 5 * time.Second
	}
	if c.Breaker.HalfOpenRequests == 0 {
		c.Breaker.HalfOpenRequests = 1
	}
	c.Observe.setDefaults()
	c.TLS.setDefaults()
	c.Extract.BaseDomain = strings.ToLower(strings.Trim(c.Extract.BaseDomain, "."))
}

// Validate reports every setting that cannot work.
func (c *Config) Validate() error {
	var errs []error
	for name, addr := range map[string]string{"listen": c.Listen, "admin listen": c.AdminListen} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s address %q: %w", name, addr, err))
		}
	}
	if c.Extract.BaseDomain == "" && !c.Extract.PathPrefix && len(c.Extract.JWTSecret) == 0 && len(c.Extract.TrustedCIDRs) == 0 {
		errs = append(errs, errors.New("no tenant extraction is on: set a base domain, path prefix, JWT secret or trusted CIDRs"))
	}
	if len(c.Extract.JWTSecret) > 0 && len(c.Extract.JWTSecret) < 32 {
		errs = append(errs, errors.New("JWT secret must be at least 32 bytes"))
	}
	for name, d := range map[string]time.Duration{
		"read header timeout": c.ReadHeaderTimeout, "idle timeout": c.IdleTimeout,
		"upstream header timeout": c.UpstreamHeaderTimeout, "dial timeout": c.DialTimeout,
		"hold max": c.HoldMax, "lease ttl": c.LeaseTTL, "body idle timeout": c.BodyIdleTimeout, "body timeout": c.BodyTimeout, "shutdown timeout": c.ShutdownTimeout, "breaker open timeout": c.Breaker.OpenTimeout,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", name))
		}
	}
	if c.MaxHeaderBytes < 1024 {
		errs = append(errs, errors.New("max header bytes must be at least 1024"))
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, errors.New("max body bytes must not be negative"))
	}
	if err := c.TLS.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
