package router

import (
	"io"
	"strings"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router/wire"
)

// ObserveConfig configures what the router records of each request: usage
// metering, request ids and the access log.
type ObserveConfig struct {
	// DisableUsage turns usage metering off (on by default).
	DisableUsage bool
	// UsageFlushEvery is how often usage is published to Consul (5s).
	UsageFlushEvery time.Duration
	// UsageRetention is how long published usage is kept (7 days).
	UsageRetention time.Duration

	// DisableRequestIDs stops sending X-Request-Id upstream (sent by default).
	DisableRequestIDs bool
	// TrustRequestID keeps a client's own X-Request-Id (one value, 1–128
	// visible ASCII characters) instead of replacing it.
	TrustRequestID bool

	// AccessLog receives the access log, one JSON line per request (nil: off).
	AccessLog io.Writer
	// AccessLogSample is the fraction of requests logged (0 means 1).
	AccessLogSample float64
	// AccessLogBuffer is how many lines may wait for the writer before
	// new ones are dropped (and counted) (8192).
	AccessLogBuffer int
}

func (c *ObserveConfig) setDefaults() {
	if c.UsageFlushEvery <= 0 {
		c.UsageFlushEvery = 5 * time.Second
	}
	if c.UsageRetention <= 0 {
		c.UsageRetention = catalog.DefaultUsageRetention
	}
	if c.AccessLogSample <= 0 || c.AccessLogSample > 1 {
		c.AccessLogSample = 1
	}
	if c.AccessLogBuffer <= 0 {
		c.AccessLogBuffer = 8192
	}
}

// observer is what both engines call when a request ends.
type observer struct {
	meter *Meter     // nil: metering off
	log   *accessLog // nil: access log off
	ids   *requestIDs
	trust bool
}

func newObserver(cfg ObserveConfig) observer {
	cfg.setDefaults()
	o := observer{trust: cfg.TrustRequestID}
	if !cfg.DisableUsage {
		o.meter = NewMeter()
	}
	if !cfg.DisableRequestIDs {
		o.ids = newRequestIDs()
	}
	if cfg.AccessLog != nil {
		o.log = newAccessLog(cfg.AccessLog, cfg.AccessLogSample, cfg.AccessLogBuffer)
	}
	return o
}

// completion is what an engine knows of a request when it ends; both
// engines fill one and call Proxy.completed, the one place where requests
// are metered and logged.
type completion struct {
	start    time.Time
	tenant   string // the tenant named ("" if none)
	resolved bool   // the tenant is in the catalog: its usage is metered
	tier     string
	target   string
	method   string
	path     string // without the query
	status   int
	bytesIn  int64 // request body bytes read from the client
	bytesOut int64 // response body bytes written to the client
	upstream time.Duration
	instance string    // the backend instance (host:port), if any
	id       requestID // sent upstream as X-Request-Id
	logged   bool      // the access log samples this request in
}

// begin starts a request's completion record: its request id, and whether
// the access log samples it (then its start, method and path, copied: on
// the fast path they point into the connection's read buffer).
func (o *observer) begin(c *completion, method, path string) {
	*c = completion{}
	if o.ids != nil {
		c.id.n = o.ids.next()
	}
	if o.log != nil && o.log.sampled() {
		c.logged, c.start = true, time.Now()
		c.method, c.path = strings.Clone(method), strings.Clone(path)
	}
}

// routed records the outcome of the tenant's lookup: a tenant in the
// catalog is metered whatever it was answered (a 503 while it moves, a 429
// over its limits, a 499 when its client left); an unknown one is not.
func (c *completion) routed(route catalog.Route, rerr *routeError) {
	if rerr == errUnknownTenant {
		return
	}
	c.resolved, c.tier, c.target = true, string(route.Tier), route.Target
}

// completed meters and logs a request that has ended.
func (p *Proxy) completed(c *completion) {
	o := &p.obs
	if o.meter == nil && !c.logged {
		return
	}
	end := time.Now()
	if c.resolved && o.meter != nil {
		o.meter.Add(c.tenant, end, c.status, c.bytesIn, c.bytesOut, c.upstream)
	}
	if c.logged {
		o.log.write(c, end, o.ids)
	}
}

// complete finishes the net/http engine's record of the request.
func (s *statusRecorder) complete(p *Proxy) {
	c := &s.done
	c.status, c.bytesOut = s.status, s.written
	if s.body != nil {
		c.bytesIn = s.body.n
	}
	p.completed(c)
}

// fastRequestID decides the fast path's request id: it reports whether
// the client's own X-Request-Id is kept (trusted and valid), and whether
// client copies of the field must be dropped from the outbound head.
func (o *observer) fastRequestID(h *wire.RequestHead, c *completion) (keep, drop bool) {
	if o.ids == nil {
		return false, false
	}
	in, ok := o.trustedID(h.Fields)
	if !ok {
		return false, true
	}
	c.id.in = in
	if c.logged {
		c.id.in = strings.Clone(in) // the head's bytes go before the log line is made
	}
	return true, false
}
