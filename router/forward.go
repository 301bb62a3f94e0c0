package router

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router/wire"
)

// The fast path's request handling: the same decisions as Proxy.ServeHTTP
// and the ReverseProxy hooks (extraction, lookup, hold, breaker, retry,
// header rewriting, metrics), made on the head the wire package parsed;
// the wire package moves the bytes.

// newFrontServer is the router's plaintext listener: the fast path for the
// requests it takes, the proxy's net/http handler for the rest (and h2c).
func newFrontServer(p *Proxy, cfg Config, log *slog.Logger) *wire.Server {
	wc := frontConfig(p, cfg, "plain", log)
	wc.H2C = !cfg.TLS.DisableH2C
	return wire.NewServer(wc)
}

// fastPath serves the requests the wire package's connection loop takes.
type fastPath struct{ p *Proxy }

var _ wire.Handler = fastPath{}

// Open implements wire.Handler.
func (f fastPath) Open(c *wire.Conn) wire.RequestServer {
	fc := &fastConn{p: f.p, c: c}
	fc.req.OnHead = fc.observeHead
	fc.req.BeforeFlush = fc.leave
	return fc
}

// fastConn serves the requests of one client connection.
type fastConn struct {
	p   *Proxy
	c   *wire.Conn
	req fwdReq

	// The last metric children used: a connection mostly serves one
	// tenant's target, so this spares a map lookup per request.
	lastCounterKey requestKey
	lastCounter    prometheus.Counter
	lastLatencyKey latencyKey
	lastLatency    prometheus.Observer

	done completion // the current request's record: metering, access log (usage_observe.go)
}

var _ wire.RequestServer = (*fastConn)(nil)

// fwdReq is what forwarding needs of the request once its head's bytes
// may be gone (the body is read through the same buffer).
type fwdReq struct {
	wire.Request
	tenant     string
	route      catalog.Route
	service    string
	idempotent bool // may go to another instance after a connect failure
	// entry counts the request in flight until leave (nil: not counted).
	entry *InflightEntry
}

// leave counts the current request out of flight, once: before the last
// flush of its response (wire.Request.BeforeFlush), so a client that saw
// the response end never finds it still counted against its
// concurrent_requests limit, or when ServeRequest returns.
func (fc *fastConn) leave() {
	if e := fc.req.entry; e != nil {
		fc.req.entry = nil
		e.Leave()
	}
}

func (fc *fastConn) requestCounter(tier, target, code string) prometheus.Counter {
	k := requestKey{tier, target, code}
	if fc.lastCounter == nil || fc.lastCounterKey != k {
		fc.lastCounterKey, fc.lastCounter = k, fc.p.metrics.requestCounter(tier, target, code)
	}
	return fc.lastCounter
}

// observeHead times the backend's answer (wire.Request.OnHead).
func (fc *fastConn) observeHead(d time.Duration) {
	tier, target := string(fc.req.route.Tier), fc.req.route.Target
	k := latencyKey{tier, target}
	if fc.lastLatency == nil || fc.lastLatencyKey != k {
		fc.lastLatencyKey, fc.lastLatency = k, fc.p.metrics.upstreamObserver(tier, target)
	}
	fc.lastLatency.Observe(d.Seconds())
	fc.done.upstream = d
}

// Refuse implements wire.RequestServer: a request refused before it
// was parsed (a head too slow, ambiguous framing, a folded line).
func (fc *fastConn) Refuse(err error) {
	e := answerFor(err)
	fc.writeRouterError(e, "", true)
	if !errors.Is(err, wire.ErrHeadTimeout) {
		fc.requestCounter("", "", statusText(e.status)).Inc()
	}
}

// ServeRequest implements wire.RequestServer. It reports whether the
// connection can carry another request.
func (fc *fastConn) ServeRequest(h *wire.RequestHead) (keep bool) {
	p, c := fc.p, fc.c
	cfg := &p.cfg
	tier, target, status := "", "", 0
	done := &fc.done
	path, _, _ := strings.Cut(h.Target(), "?")
	p.obs.begin(done, h.Method(), path)
	handedOff := false
	defer func() {
		if handedOff {
			return // net/http serves (and counts) it
		}
		fc.requestCounter(tier, target, statusText(status)).Inc()
		done.status = status
		p.completed(done)
	}()

	// A router answer to a request whose body was not read ends the
	// connection: the body's bytes cannot be told from the next request's.
	hasBody := h.ContentLength() > 0
	answer := func(e *routeError, tenant string) bool {
		status = e.status
		closeConn := hasBody || h.Close()
		if hasBody {
			c.Linger()
		}
		ok := fc.writeRouterError(e, tenant, closeConn)
		c.DiscardHead() // the request is answered (tenant may point into it: written first)
		return ok && !closeConn
	}
	if h.Size() > cfg.MaxHeaderBytes {
		return answer(errHeadersTooLarge, "")
	}
	if e := p.checkServerName(c.TLS(), h.Host()); e != nil {
		return answer(e, "")
	}
	if h.ContentLength() > cfg.MaxBodyBytes {
		return answer(errBodyTooLarge, "")
	}
	ex, err := p.extract.extract(extractInput{tenantHeader: h.Tenant(), authorization: h.Auth(), host: h.Host(), path: path, remoteAddr: c.RemoteAddr()})
	if err != nil {
		return answer(extractionError(err), "")
	}
	tenant := strings.Clone(ex.Tenant) // the head's bytes go when the body is read
	done.tenant = tenant
	route, t, entry, rerr := p.resolve(context.Background(), tenant)
	done.routed(route, rerr)
	if rerr != nil {
		return answer(rerr, tenant)
	}
	fc.req.entry = entry
	defer fc.leave()
	if t.HTTP2Backend() {
		// Its backends speak HTTP/2: net/http's engine forwards it (and
		// the rest of the connection), from its head on.
		handedOff = true
		c.HandOff()
		return false
	}
	tier, target = string(route.Tier), route.Target
	if e := p.admit(route, entry, h.ContentLength()); e != nil {
		return answer(e, tenant) // writeRouterError counts it out first
	}

	req := &fc.req
	req.tenant, req.route, req.service = tenant, route, t.Service
	req.idempotent = idempotentMethod(h.Method()) || h.IdempotencyKey()
	req.Request = wire.Request{Head: fc.buildOutHead(h, route, ex.StripPrefix), ContentLength: h.ContentLength(),
		HeadMethod: h.Method() == "HEAD", ClientClose: h.Close(), OnHead: fc.req.OnHead, BeforeFlush: fc.req.BeforeFlush,
		Replayable: (wire.SafeMethod(h.Method()) || h.IdempotencyKey()) && h.ContentLength() <= 0}
	c.DiscardHead()
	status, keep = fc.forward(req)
	if req.BodyRead {
		done.bytesIn = req.ContentLength
	}
	done.bytesOut = req.BytesOut
	return keep && !req.ClientClose
}

// buildOutHead is the request head to send to the backend: the client's
// fields minus hop-by-hop ones and every router-owned one (X-Tenant-*,
// Forwarded, X-Forwarded-*, in any spelling), then the router's own. The
// same rewrite as Proxy.rewrite.
func (fc *fastConn) buildOutHead(h *wire.RequestHead, route catalog.Route, strip string) []byte {
	keepID, dropID := fc.p.obs.fastRequestID(h, &fc.done)
	drop := routerOwned
	if dropID {
		drop = routerOwnedOrRequestID
	}
	b := wire.AppendForwardHead(fc.req.Head[:0], h, strip, drop)
	b = append(b, HeaderTenantID+": "...)
	b = append(b, route.ID...)
	b = append(b, "\r\n"+HeaderTenantTier+": "...)
	b = append(b, route.Tier...)
	b = append(b, "\r\n"+HeaderTenantTarget+": "...)
	b = append(b, route.Target...)
	b = append(b, "\r\n"+HeaderTenantEpoch+": "...)
	b = strconv.AppendUint(b, route.Epoch, 10)
	b = append(b, "\r\n"...)
	b = fc.p.obs.appendRequestIDField(b, &fc.done, keepID)
	b = append(b, "X-Forwarded-For: "...)
	b = append(b, fc.c.ClientIP()...)
	b = append(b, "\r\nX-Forwarded-Host: "...)
	b = append(b, h.Host()...)
	if fc.c.TLS() != nil {
		return append(b, "\r\nX-Forwarded-Proto: https\r\n\r\n"...)
	}
	b = append(b, "\r\nX-Forwarded-Proto: http\r\n\r\n"...)
	return b
}

// forward sends the request to a backend instance and relays the answer.
// It returns the status the client got and whether the client connection
// can be reused.
func (fc *fastConn) forward(req *fwdReq) (int, bool) {
	p := fc.p
	a, err := startAttempt(p.upstreams, p.metrics.retries, req.service, req.tenant, req.idempotent)
	if err != nil {
		return fc.failed(req, err)
	}
	for {
		fc.done.instance = a.addr()
		st, keep, err := fc.c.Forward(p.fastTransport, a.addr(), &req.Request)
		if a.end(st, err) {
			continue
		}
		switch {
		case err == nil:
			return st, keep
		case st == 0:
			return fc.failed(req, err)
		}
		return st, false
	}
}

// failed answers a request that was not relayed (a client fault, a
// breaker, or the backend), as Proxy.errorHandler does; the status 499
// means nobody was there to answer.
func (fc *fastConn) failed(req *fwdReq, err error) (int, bool) {
	e := answerFor(err)
	if e == nil {
		return 499, false
	}
	if e == errUpstreamFailed {
		fc.p.log.Warn("upstream request failed", "err", err, "tier", string(req.route.Tier))
	}
	closeConn := req.ClientClose || fc.c.Closing() || closesConnection(e)
	if req.ContentLength > 0 && !req.BodyRead {
		// The body's bytes are still on the connection: they must never
		// be read as a request.
		closeConn = true
		fc.c.Linger()
	}
	ok := fc.writeRouterError(e, req.tenant, closeConn)
	return e.status, ok && !closeConn
}

// writeRouterError answers with the router's JSON error body (the same as
// writeError). It reports whether the write succeeded.
func (fc *fastConn) writeRouterError(e *routeError, tenant string, closeConn bool) bool {
	fc.leave() // answered by the router: out of flight before the client reads it
	body, _ := json.Marshal(apiError{Error: e.code, Message: e.msg, Tenant: tenant})
	body = append(body, '\n')
	return fc.c.WriteJSON(e.status, body, e.retryAfter, closeConn)
}
