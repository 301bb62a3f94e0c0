package router

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard/switchyard/router/wire"
)

// The router at the edge: the TLS listener (certificates by SNI from
// Consul, certs.go), HTTP/2 over TLS (ALPN) and as h2c with prior
// knowledge on the plaintext listener, the plaintext listener's redirect to
// https and HSTS. The TLS listener is a wire.Server like the plaintext
// one: a connection whose ALPN is http/1.1 (or none) takes the fast path
// (forward.go; the SNI check and X-Forwarded-Proto from its TLS state),
// and every HTTP/2 request (h2, h2c) is served by net/http into the same
// Proxy.ServeHTTP as the fast path's hand-offs, so extraction, holds,
// limits, breakers and error bodies are the same code.
//
// HTTP/2 is net/http's own (http.Server.Protocols and HTTP2Config):
// golang.org/x/net v0.62.0 deprecates its http2.Server, ConfigureServer
// and ServeConn in favour of these, and net/http bundles the same server,
// with the same rapid-reset mitigation (a connection may run at most
// MaxConcurrentStreams handlers; when more than 4× that many streams wait
// for one, because the client keeps opening and resetting streams, the
// connection gets GOAWAY ENHANCE_YOUR_CALM).

// Unknown SNI policies (EdgeConfig.UnknownSNI).
const (
	// UnknownSNIDefault serves the default certificate.
	UnknownSNIDefault = "default"
	// UnknownSNIRefuse fails the handshake.
	UnknownSNIRefuse = "refuse"
)

// EdgeConfig configures TLS, HTTP/2 and the redirect. Zero values take the
// defaults in setDefaults; TLS is off while Listen is empty.
type EdgeConfig struct {
	// Listen is the TLS listener's address ("": no TLS listener).
	Listen string
	// DefaultCert names the certificate (in Consul) served for a name no
	// certificate covers, and normally the base domain's wildcard ("default").
	DefaultCert string
	// UnknownSNI: UnknownSNIDefault (the default) or UnknownSNIRefuse.
	UnknownSNI string
	// ExpiryWarning: a certificate expiring sooner shows in /readyz and
	// gets its own series in /metrics (21 days).
	ExpiryWarning time.Duration
	// HSTSMaxAge > 0 sends Strict-Transport-Security on the TLS listener's
	// answers (off by default).
	HSTSMaxAge time.Duration
	// HSTSIncludeSubdomains adds includeSubDomains to it.
	HSTSIncludeSubdomains bool
	// RedirectHTTPS makes the plaintext listener answer every request with
	// 308 to the same URL over https (off by default).
	RedirectHTTPS bool
	// DisableH2C stops the plaintext listener from serving h2c with prior
	// knowledge.
	DisableH2C bool
	// HTTP2 are the inbound HTTP/2 limits.
	HTTP2 H2Limits
	// BackendRootCAs are the CAs trusted for backends that speak h2 over
	// TLS (nil: the system roots).
	BackendRootCAs *x509.CertPool
}

// H2Limits are the HTTP/2 server's limits, set deliberately rather than
// left to the library.
type H2Limits struct {
	// MaxConcurrentStreams per connection (128, as nginx): also the number
	// of handlers one connection may run at once.
	MaxConcurrentStreams int
	// MaxReadFrameSize is the largest frame accepted (64 KiB).
	MaxReadFrameSize int
	// MaxReceiveBufferPerStream is a stream's flow-control window: what a
	// client may send ahead of the backend reading it (256 KiB).
	MaxReceiveBufferPerStream int
	// MaxReceiveBufferPerConnection is the connection's window (1 MiB):
	// bounds the memory one connection can make the router hold.
	MaxReceiveBufferPerConnection int
	// WriteByteTimeout closes a connection whose client reads nothing of
	// what the router sends for this long (30s).
	WriteByteTimeout time.Duration
}

func (c *EdgeConfig) setDefaults() {
	if c.DefaultCert == "" {
		c.DefaultCert = "default"
	}
	if c.UnknownSNI == "" {
		c.UnknownSNI = UnknownSNIDefault
	}
	if c.ExpiryWarning == 0 {
		c.ExpiryWarning = 21 * 24 * time.Hour
	}
	h := &c.HTTP2
	if h.MaxConcurrentStreams == 0 {
		h.MaxConcurrentStreams = 128
	}
	if h.MaxReadFrameSize == 0 {
		h.MaxReadFrameSize = 64 << 10
	}
	if h.MaxReceiveBufferPerStream == 0 {
		h.MaxReceiveBufferPerStream = 256 << 10
	}
	if h.MaxReceiveBufferPerConnection == 0 {
		h.MaxReceiveBufferPerConnection = 1 << 20
	}
	if h.WriteByteTimeout == 0 {
		h.WriteByteTimeout = 30 * time.Second
	}
}

func (c *EdgeConfig) validate() error {
	var errs []error
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			errs = append(errs, fmt.Errorf("tls listen address %q: %w", c.Listen, err))
		}
	}
	if c.UnknownSNI != UnknownSNIDefault && c.UnknownSNI != UnknownSNIRefuse {
		errs = append(errs, fmt.Errorf("unknown SNI policy %q: want %q or %q", c.UnknownSNI, UnknownSNIDefault, UnknownSNIRefuse))
	}
	if c.RedirectHTTPS && c.Listen == "" {
		errs = append(errs, errors.New("redirect to https needs a TLS listener"))
	}
	if c.HSTSMaxAge < 0 || c.ExpiryWarning < 0 || c.HTTP2.WriteByteTimeout < 0 {
		errs = append(errs, errors.New("HSTS max age, expiry warning and HTTP/2 write timeout must not be negative"))
	}
	h := c.HTTP2
	if h.MaxReadFrameSize < 16<<10 || h.MaxReadFrameSize > 16<<20 {
		errs = append(errs, errors.New("HTTP/2 max read frame size must be 16 KiB to 16 MiB"))
	}
	if h.MaxConcurrentStreams < 1 || h.MaxReceiveBufferPerStream < 1 || h.MaxReceiveBufferPerConnection < h.MaxReceiveBufferPerStream {
		errs = append(errs, errors.New("HTTP/2 streams and windows must be positive, the connection window at least the stream's"))
	}
	return errors.Join(errs...)
}

// http2Config is net/http's HTTP/2 configuration from the limits.
func (h H2Limits) http2Config() *http.HTTP2Config {
	return &http.HTTP2Config{
		MaxConcurrentStreams:          h.MaxConcurrentStreams,
		MaxReadFrameSize:              h.MaxReadFrameSize,
		MaxReceiveBufferPerStream:     h.MaxReceiveBufferPerStream,
		MaxReceiveBufferPerConnection: h.MaxReceiveBufferPerConnection,
		WriteByteTimeout:              h.WriteByteTimeout,
	}
}

// frontConfig is the wire server's configuration of a listener ("plain"
// or "tls", the label of its connections in the metrics): the fast path
// for the requests it takes, the proxy's net/http handler for the rest.
func frontConfig(p *Proxy, cfg Config, listener string, log *slog.Logger) wire.ServerConfig {
	fast := p.metrics.connections.WithLabelValues(listener, "fast")
	netHTTP := p.metrics.connections.WithLabelValues(listener, "net_http")
	return wire.ServerConfig{
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		BodyTimeout:       cfg.BodyTimeout,
		BodyIdleTimeout:   cfg.BodyIdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		Handler:           fastPath{p},
		Fallback:          p,
		NetHTTPOnly:       cfg.NetHTTPOnly,
		HTTP2:             cfg.TLS.HTTP2.http2Config(),
		OnConn: func(handedOff bool) {
			if handedOff {
				netHTTP.Inc()
			} else {
				fast.Inc()
			}
		},
		Log: log,
	}
}

// newTLSFrontServer is the TLS listener: the certificate by SNI, ALPN h2
// and http/1.1. A connection that negotiates h2 is net/http's (HTTP/2 with
// the limits in cfg.TLS.HTTP2); any other is served as the plaintext
// listener's are, the fast path first (NetHTTPOnly: net/http throughout).
// HSTS, when configured, is on every answer.
func newTLSFrontServer(p *Proxy, cfg Config, certs *certStore, log *slog.Logger) *wire.Server {
	wc := frontConfig(p, cfg, "tls", log)
	wc.TLS = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: certs.getCertificate,
	}
	if cfg.TLS.HSTSMaxAge > 0 {
		wc.ResponseHeader = http.Header{"Strict-Transport-Security": {hstsValue(cfg.TLS.HSTSMaxAge, cfg.TLS.HSTSIncludeSubdomains)}}
	}
	return wire.NewServer(wc)
}

// hstsValue is the Strict-Transport-Security field's value.
func hstsValue(maxAge time.Duration, subdomains bool) string {
	v := "max-age=" + strconv.FormatInt(int64(maxAge/time.Second), 10)
	if subdomains {
		v += "; includeSubDomains"
	}
	return v
}

// newRedirectServer is the plaintext listener when RedirectHTTPS is on:
// every request gets 308 to the same URL over https (on the TLS
// listener's port when it is not 443); nothing is proxied in plaintext.
func newRedirectServer(cfg Config, tlsAddr net.Addr, log *slog.Logger) *http.Server {
	_, port, _ := net.SplitHostPort(tlsAddr.String())
	return &http.Server{
		Handler:           redirectHandler(port),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

func redirectHandler(port string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" || strings.ContainsAny(host, "/\\@ ") {
			writeError(w, http.StatusBadRequest, "bad_host", "the request names no valid Host to redirect to", "", 0)
			return
		}
		if port != "" && port != "443" {
			host = net.JoinHostPort(host, port)
		}
		w.Header().Set("Location", "https://"+host+r.URL.RequestURI())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusPermanentRedirect)
		_, _ = w.Write([]byte("use https\n"))
	})
}

// errMisdirected: over TLS, the SNI names one tenant and Host another.
var errMisdirected = &routeError{http.StatusMisdirectedRequest, "misdirected_request",
	"the TLS server name and the Host header name different tenants", 0}

// checkSNI refuses a TLS request whose SNI names a tenant (a subdomain of
// the base domain, or a custom domain) while its Host names another: the connection was made
// for one tenant and must not carry another's requests.
func (p *Proxy) checkSNI(r *http.Request) *routeError {
	return p.checkServerName(r.TLS, r.Host)
}

// checkServerName is checkSNI for a connection's TLS state (nil:
// plaintext) and a request's Host: both engines' check.
func (p *Proxy) checkServerName(st *tls.ConnectionState, host string) *routeError {
	if st == nil || st.ServerName == "" {
		return nil
	}
	sni, kind := p.extract.hostSource(st.ServerName)
	if !namesTenant(kind) {
		return nil
	}
	host, kind = p.extract.hostSource(host)
	if namesTenant(kind) && host != sni {
		return errMisdirected
	}
	return nil
}

// namesTenant reports whether a Host or SNI of this kind names a tenant:
// a subdomain of the base domain or a custom domain (verified or not).
func namesTenant(k hostKind) bool {
	return k == hostSubdomain || k == hostCustomDomain || k == hostUnverified
}

// newH2Transports are the net/http engine's clients to HTTP/2 backends:
// h2c (prior knowledge, plain TCP) and h2 over TLS (verified against
// BackendRootCAs). Trailers pass through both (gRPC's status is one).
func newH2Transports(cfg Config) (h2c, h2 *http.Transport) {
	mk := func(p func(*http.Protocols)) *http.Transport {
		protos := new(http.Protocols)
		p(protos)
		return &http.Transport{
			Protocols:             protos,
			DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.TLS.BackendRootCAs},
			TLSHandshakeTimeout:   cfg.DialTimeout,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: cfg.UpstreamHeaderTimeout,
			DisableCompression:    true,
			HTTP2:                 &http.HTTP2Config{MaxReadFrameSize: cfg.TLS.HTTP2.MaxReadFrameSize},
		}
	}
	return mk(func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }), mk(func(p *http.Protocols) { p.SetHTTP2(true) })
}

// closeUnread ends what carries a request whose body the router will not
// read (it answers 413): an HTTP/1 connection closes after the answer,
// net/http's drain of the body giving up soon; on HTTP/2 only the stream
// ends (net/http resets it), never the connection other streams share.
func closeUnread(rec *statusRecorder, r *http.Request) {
	if r.ProtoMajor >= 2 {
		return
	}
	rec.Header().Set("Connection", "close")
	_ = http.NewResponseController(rec).SetReadDeadline(time.Now().Add(wire.LingerTimeout))
}
