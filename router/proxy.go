package router

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router/wire"
)

// SnapshotSource hands out the current catalog snapshot without blocking.
type SnapshotSource interface {
	Snapshot() *catalog.Snapshot
}

var _ SnapshotSource = (*catalog.Watcher)(nil)

// Proxy is the request path: extract the tenant, look it up, hold it if it
// is frozen, forward it to a healthy backend of its target.
type Proxy struct {
	cfg       Config
	extract   *Extractor
	catalog   SnapshotSource
	upstreams *Upstreams
	metrics   *Metrics
	log       *slog.Logger
	rp        *httputil.ReverseProxy
	transport upstreamTransport
	inflight  *Inflight
	lease     *lease   // nil: no lease to keep (a proxy without a router)
	limits    *limiter // per-tenant limits (limits.go)
	obs       observer // usage metering and the access log (usage.go)

	// fastTransport is the backend client of the fast path (forward.go).
	fastTransport *wire.Transport
	// h2c, h2: the clients of HTTP/2 backends (edge.go).
	h2c, h2 *http.Transport
}

// reqState travels from ServeHTTP to the ReverseProxy hooks in the context.
type reqState struct {
	route       catalog.Route
	service     string
	backend     string // the target's backend protocol (catalog.BackendH2C...)
	stripPrefix string
	start       time.Time
	done        *completion // the request's record for metering and the access log
	// proxyAuthenticate is the backend's Proxy-Authenticate, relayed as
	// nginx does (a 407 needs it), not dropped as hop-by-hop.
	proxyAuthenticate []string
	rec               *statusRecorder // the client's writer (flushes: relayBody)
}

type reqStateKey struct{}

// NewProxy builds the request handler.
func NewProxy(cfg Config, src SnapshotSource, ups *Upstreams, m *Metrics, inflight *Inflight, log *slog.Logger) *Proxy {
	p := &Proxy{cfg: cfg, extract: newDomainExtractor(cfg.Extract, src), catalog: src, upstreams: ups, metrics: m, log: log, inflight: inflight,
		limits: newLimiter(m.Registry), obs: newObserver(cfg.Observe)}
	transport := newUpstreamTransport(cfg)
	p.transport = transport
	if st, ok := transport.(*wire.Transport); ok {
		p.fastTransport = st
	} else {
		p.fastTransport = wire.NewTransport(cfg.DialTimeout, cfg.UpstreamHeaderTimeout)
	}
	p.h2c, p.h2 = newH2Transports(cfg)
	p.rp = &httputil.ReverseProxy{
		Rewrite:    p.rewrite,
		Transport:  &selectingTransport{upstreams: ups, next: transport, retries: m.retries, h2c: p.h2c, h2: p.h2},
		BufferPool: bufferPool{},
		// Relayed as it arrives, as the fast path does: a body of unknown
		// length (gRPC, chunked) and SSE are flushed after every write by
		// the ReverseProxy itself; a body of known length through
		// relayBody, before any read that would wait for the backend.
		FlushInterval:  0,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return p
}

var _ http.Handler = (*Proxy)(nil)

// ServeHTTP implements the request path.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, grpc: isGRPC(r)}
	done := &rec.done
	p.obs.begin(done, r.Method, r.URL.Path)
	tier, target := "", ""
	defer func() {
		p.metrics.requestCounter(tier, target, statusText(rec.status)).Inc()
		rec.complete(p)
	}()
	if headerBytes(r) > p.cfg.MaxHeaderBytes {
		errHeadersTooLarge.write(rec, "")
		return
	}
	if e := p.checkSNI(r); e != nil {
		e.write(rec, "")
		return
	}
	if r.ContentLength > p.cfg.MaxBodyBytes {
		// Not worth reading: the connection closes after the answer, and
		// net/http's drain of the unread body gives up soon.
		closeUnread(rec, r)
		errBodyTooLarge.write(rec, "")
		return
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 && !rec.grpc {
		// (A gRPC stream's body is a stream of messages that may last
		// and idle as long as the call: HTTP/2 flow control bounds it.
		// A body declared empty — an HTTP/2 request without DATA; HTTP/1's
		// is NoBody — is never read: the ReverseProxy sends none, and
		// HTTP/2 refuses bytes beyond the declared length.)
		// From here the body has its deadlines, also for net/http's own
		// read of what the router leaves unread.
		rec.body = p.newBodyReader(w, rec, r.Body)
		r.Body = rec.body
	}
	ex, err := p.extract.Extract(r)
	if err != nil {
		extractionError(err).write(rec, "")
		return
	}
	done.tenant = ex.Tenant
	route, t, entry, rerr := p.resolve(r.Context(), ex.Tenant)
	done.routed(route, rerr)
	if rerr != nil {
		if rerr.status == 499 {
			rec.status = 499 // the client went away
		} else {
			rerr.write(rec, ex.Tenant)
		}
		return
	}
	defer entry.Leave()
	tier, target = string(route.Tier), route.Target
	if e := p.admitHTTP(w, rec, r, route, entry); e != nil {
		e.write(rec, ex.Tenant)
		return
	}
	rec.http10 = !r.ProtoAtLeast(1, 1)
	rec.st = reqState{route: route, service: t.Service, backend: t.BackendProtocol, stripPrefix: ex.StripPrefix, start: time.Now(), done: done, rec: rec}
	st := &rec.st // one allocation with the recorder
	p.rp.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), reqStateKey{}, st)))
}

// routeError is an answer the router gives itself instead of forwarding.
type routeError struct {
	status     int
	code, msg  string
	retryAfter int
}

// write answers with e's JSON body, or to a gRPC request with its gRPC
// status (grpcStatusFor).
func (e *routeError) write(w http.ResponseWriter, tenant string) {
	if rec, ok := w.(*statusRecorder); ok && rec.grpc {
		rec.status = e.status // metrics and the access log: the router's answer
		writeGRPCStatus(rec, grpcStatusFor(e), e.msg)
		return
	}
	writeError(w, e.status, e.code, e.msg, tenant, e.retryAfter)
}

// extractionError is the answer to a request whose tenant could not be found.
func extractionError(err error) *routeError {
	e := &routeError{status: http.StatusBadRequest, code: "bad_tenant", msg: err.Error()}
	switch {
	case errors.Is(err, ErrNoTenant):
		e.code = "no_tenant"
	case errors.Is(err, ErrTenantConflict):
		e.code = "tenant_conflict"
	case errors.Is(err, ErrRepeatedCredentials):
		e.code = "repeated_credentials"
	case errors.Is(err, ErrBadToken):
		e.status, e.code = http.StatusUnauthorized, "bad_token"
	case errors.Is(err, ErrDomainUnverified):
		e.status, e.code = http.StatusNotFound, "domain_unverified"
	case errors.Is(err, ErrUnknownDomain):
		return errUnknownTenant
	}
	return e
}

var (
	errHeadersTooLarge  = &routeError{http.StatusRequestHeaderFieldsTooLarge, "headers_too_large", "request headers exceed the router's limit", 0}
	errBodyTooLarge     = &routeError{http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds the router's limit", 0}
	errAmbiguousFraming = &routeError{http.StatusBadRequest, "ambiguous_framing", "the request has both Content-Length and Transfer-Encoding", 0}
	errObsFold          = &routeError{http.StatusBadRequest, "obsolete_line_folding", "a request header line is folded (obsolete, RFC 9112 §5.2)", 0}
	errBadBody          = &routeError{http.StatusBadRequest, "bad_body", "the request body's framing is malformed", 0}
	errBodyTimeout      = &routeError{http.StatusRequestTimeout, "body_timeout", "the request body did not arrive in time", 0}
	errNoHealthyBackend = &routeError{http.StatusServiceUnavailable, "no_healthy_backend", "no healthy backend instance for the tenant's target", 1}
	errBreakerOpen      = &routeError{http.StatusServiceUnavailable, "breaker_open", "the tenant's backends are failing; retry shortly", 1}
	errUpstreamTimeout  = &routeError{http.StatusGatewayTimeout, "upstream_timeout", "the backend did not answer in time", 0}
	errUpstreamFailed   = &routeError{http.StatusBadGateway, "upstream_failed", "the backend could not be reached or failed", 0}
	errUnknownTenant    = &routeError{http.StatusNotFound, "unknown_tenant", "no such tenant", 0}
	errTenantMoving     = &routeError{http.StatusServiceUnavailable, "tenant_moving", "the tenant is being moved; retry shortly", 1}
	errTenantDisabled   = &routeError{http.StatusForbidden, "tenant_disabled", "the tenant is not served", 0}
	errUnknownTarget    = &routeError{http.StatusServiceUnavailable, "unknown_target", "the tenant's target is not registered", 1}
	errHoldCancelled    = &routeError{status: 499}
	errLeaseLapsed      = &routeError{http.StatusServiceUnavailable, "router_lease_lapsed", "this router has lost touch with the catalog; retry (another router may answer)", 1}
)

// resolve looks the tenant up, holds it while it is frozen, and counts the
// request in flight (Leave on the entry ends that). Otherwise it says what to answer.
func (p *Proxy) resolve(ctx context.Context, tenant string) (catalog.Route, *catalog.Target, *InflightEntry, *routeError) {
	var holdStart time.Time
	for attempt := 0; ; attempt++ {
		snap := p.catalog.Snapshot()
		route, ok := snap.Lookup(tenant)
		if !ok {
			return route, nil, nil, errUnknownTenant
		}
		if route.State == catalog.StateFrozen {
			if holdStart.IsZero() {
				holdStart = time.Now()
			}
			var status int
			route, snap, status = p.hold(ctx, snap, tenant, p.cfg.HoldMax-time.Since(holdStart))
			switch status {
			case 0:
			case http.StatusNotFound:
				return route, nil, nil, errUnknownTenant
			case http.StatusServiceUnavailable:
				return route, nil, nil, errTenantMoving
			default:
				return route, nil, nil, errHoldCancelled
			}
		}
		if route.State != catalog.StateActive {
			return route, nil, nil, errTenantDisabled
		}
		t, ok := snap.Target(route.Target)
		if !ok {
			return route, nil, nil, errUnknownTarget
		}
		entry := p.inflight.Enter(tenant)
		if !p.lease.valid() && !p.lease.wait(ctx, p.cfg.HoldMax) {
			entry.Leave()
			return route, nil, nil, errLeaseLapsed
		}
		// A freeze may have landed between the lookup and Enter. A router
		// acknowledges a freeze only when nothing is in flight, so re-check
		// now that this request counts; if the tenant moved on, start over
		// (and be held).
		if now := p.catalog.Snapshot(); now != snap {
			if r2, ok := now.Lookup(tenant); !ok || r2.Epoch != route.Epoch {
				entry.Leave()
				if attempt >= 5 {
					return route, nil, nil, errTenantMoving
				}
				continue
			}
		}
		return route, t, entry, nil
	}
}

// rewrite builds the outbound request. The ReverseProxy has already removed
// hop-by-hop headers (including any named in Connection) and the client's
// X-Forwarded-*; here every client copy of X-Tenant-* and Forwarded goes too,
// and the router's own are set last, so no client can shape them.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	st := pr.In.Context().Value(reqStateKey{}).(*reqState)
	out := pr.Out
	out.URL.Scheme = "http"
	if st.backend == catalog.BackendH2 {
		out.URL.Scheme = "https"
	}
	out.URL.Host = st.service
	if st.stripPrefix != "" {
		out.URL.Path = ensureSlash(strings.TrimPrefix(out.URL.Path, st.stripPrefix))
		if out.URL.RawPath != "" {
			out.URL.RawPath = ensureSlash(strings.TrimPrefix(out.URL.RawPath, st.stripPrefix))
		}
	}
	for k := range out.Header {
		if routerOwned(k) {
			delete(out.Header, k)
		}
	}
	// The router's seven values share one allocation (capped slices).
	v := make([]string, 7)
	v[0], v[1], v[2], v[3] = st.route.ID, string(st.route.Tier), st.route.Target, uitoa(st.route.Epoch)
	out.Header[HeaderTenantID] = v[0:1:1]
	out.Header[HeaderTenantTier] = v[1:2:2]
	out.Header[HeaderTenantTarget] = v[2:3:3]
	out.Header[HeaderTenantEpoch] = v[3:4:4]
	p.obs.setRequestIDHeader(out.Header, st.done)
	setXForwarded(pr.In, out.Header, v[4:7])
	// The query goes as the client sent it, byte for byte (ReverseProxy
	// drops what url.ParseQuery cannot read, such as "100%" or ';').
	out.URL.RawQuery = pr.In.URL.RawQuery
	out.Host = pr.In.Host
	if out.Host == "" {
		// An HTTP/1.0 request without Host: never the backend's own
		// address (it would leak into redirects).
		out.Host = p.fallbackHost(st.route.ID, st.service)
	}
}

// setXForwarded is httputil.ProxyRequest.SetXForwarded for an outbound
// header with no X-Forwarded-* left (the ReverseProxy and rewrite removed
// every client copy, so there is no earlier X-Forwarded-For to extend),
// its three values in vals.
func setXForwarded(in *http.Request, h http.Header, vals []string) {
	if ip, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		vals[0] = ip
		h["X-Forwarded-For"] = vals[0:1:1]
	}
	vals[1] = in.Host
	h["X-Forwarded-Host"] = vals[1:2:2]
	vals[2] = "http"
	if in.TLS != nil {
		vals[2] = "https"
	}
	h["X-Forwarded-Proto"] = vals[2:3:3]
}

// fallbackHost is the Host sent for a request that named none: the
// tenant's name under the base domain, or the backend service's name.
func (p *Proxy) fallbackHost(tenant, service string) string {
	if d := p.cfg.Extract.BaseDomain; d != "" {
		return tenant + "." + d
	}
	return service
}

// routerOwned reports headers only the router may set: X-Tenant-*,
// Forwarded and X-Forwarded-*, also spelled with underscores, which CGI,
// WSGI and Rack servers read as the same header.
func routerOwned(k string) bool {
	hasPrefix := func(p string) bool {
		if len(k) < len(p) {
			return false
		}
		for i := 0; i < len(p); i++ {
			c := k[i]
			if c == '_' {
				c = '-'
			}
			if c|0x20 != p[i]|0x20 {
				return false
			}
		}
		return true
	}
	return hasPrefix("x-tenant-") || hasPrefix("x-forwarded-") || (len(k) == len("forwarded") && hasPrefix("forwarded"))
}

func ensureSlash(p string) string {
	if p == "" || p[0] != '/' {
		return "/" + p
	}
	return p
}

func uitoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}

func (p *Proxy) modifyResponse(resp *http.Response) error {
	if st, ok := resp.Request.Context().Value(reqStateKey{}).(*reqState); ok {
		d := time.Since(st.start)
		p.metrics.upstreamObserver(string(st.route.Tier), st.route.Target).Observe(d.Seconds())
		st.done.upstream = d
		if st.proxyAuthenticate != nil {
			resp.Header["Proxy-Authenticate"] = st.proxyAuthenticate
		}
		if st.rec != nil && resp.ContentLength > 0 && resp.Body != nil && resp.Body != http.NoBody {
			st.rec.relay = relayBody{ReadCloser: resp.Body, rec: st.rec}
			st.rec.relay.ready, _ = resp.Body.(readiness)
			resp.Body = &st.rec.relay
		}
	}
	return nil
}

// errorHandler answers a request the ReverseProxy could not relay, as
// frontConn.failed does on the fast path.
func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	tenant := ""
	if st, ok := r.Context().Value(reqStateKey{}).(*reqState); ok {
		tenant = st.route.ID
	}
	e := answerFor(withClientGone(r.Context(), err))
	if e == nil {
		// The client went away; nobody reads the answer. Never the
		// implicit empty 200 net/http would send for a handler that
		// wrote nothing: the connection is dropped.
		if rec, ok := w.(*statusRecorder); ok {
			rec.status = 499
		}
		panic(http.ErrAbortHandler)
	}
	if e == errUpstreamFailed {
		p.log.Warn("upstream request failed", "err", err, "tier", tierOf(r), "method", r.Method)
	}
	// net/http ends the connection itself after a body that was cut
	// short, broken or stalled (its read of the rest fails).
	e.write(w, tenant)
}

func tierOf(r *http.Request) string {
	if st, ok := r.Context().Value(reqStateKey{}).(*reqState); ok {
		return string(st.route.Tier)
	}
	return ""
}

func headerBytes(r *http.Request) int {
	n := len(r.RequestURI) + len(r.Host)
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// statusRecorder remembers the status code for metrics. Unwrap lets
// http.ResponseController reach Flush and Hijack (SSE, WebSocket).
type statusRecorder struct {
	http.ResponseWriter
	status int
	http10 bool // the client speaks HTTP/1.0: no interim (1xx) responses
	grpc   bool // a gRPC request: the router's own answers are gRPC statuses
	st     reqState
	// For metering and the access log: the request's record, its body
	// (nil if none) and the response body bytes written.
	done    completion
	body    *bodyReader
	written int64
	// unflushed: a header or bytes were written since the last flush of
	// relay (the response body when its length is known).
	unflushed bool
	relay     relayBody
}

func (s *statusRecorder) WriteHeader(code int) {
	if code < 200 && s.http10 {
		return
	}
	if s.status == 0 && code >= 200 {
		s.status = code
	}
	s.unflushed = true
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.written += int64(n)
	s.unflushed = true
	return n, err
}

// flush sends what was written so far to the client.
func (s *statusRecorder) flush() {
	s.unflushed = false
	_ = http.NewResponseController(s.ResponseWriter).Flush()
}

// readiness is a backend response body that can tell whether a Read would
// wait for the backend (wire's bodies can).
type readiness interface{ Ready() bool }

// relayBody is a response body of known length on its way to the client:
// what was written is flushed before a read that may wait for the backend
// (always, when the body cannot tell), so nothing the router has waits
// while it waits, and a body that is already all there (the common small
// answer) goes out with its header in one write at the end, instead of a
// flush per part.
type relayBody struct {
	io.ReadCloser
	rec   *statusRecorder
	ready readiness // nil: any read may wait
}

func (b *relayBody) Read(p []byte) (int, error) {
	if b.rec.unflushed && (b.ready == nil || !b.ready.Ready()) {
		b.rec.flush()
	}
	return b.ReadCloser.Read(p)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// bufferPool recycles the 32 KiB copy buffers of the ReverseProxy.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *(copyBuffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }
