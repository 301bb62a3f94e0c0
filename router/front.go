package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The router's client side. net/http's server costs a proxy dearly per
// request: a background read goroutine started and stopped around every
// handler, a Request with its header map, a ResponseWriter, and
// httputil.ReverseProxy's copy of them all; measured here that was half of
// the router's CPU per request. So the router serves HTTP/1.1 itself for
// the requests that make up nearly all traffic — a head it parses strictly
// (head.go), no body or a Content-Length body — and forwards them without
// building any of that (forward.go). Any other request — transfer codings,
// Expect, upgrades (WebSocket), HTTP/1.0, percent-encoded paths, heads
// bigger than the read buffer, anything the strict parser does not fully
// understand — hands its connection, with the bytes already read, to a
// net/http server running the Proxy handler, which serves it (and the rest
// of that connection) exactly as before. net/http stays the authority on
// every unusual case; the fast path only ever does what it would have done.

// frontBufSize is the read buffer of a client connection: heads that do
// not fit go to net/http (which allows up to twice MaxHeaderBytes and
// answers 431 above MaxHeaderBytes).
const frontBufSize = 8 << 10

// netHTTPOnlyEnv, set to 1, hands every connection to net/http (for A/B
// benchmarks, and a way back if the fast path ever misbehaves).
const netHTTPOnlyEnv = "SWITCHYARD_ROUTER_NET_HTTP"

// frontServer accepts client connections and serves them.
type frontServer struct {
	p       *Proxy
	log     *slog.Logger
	general *http.Server  // serves handed-off connections
	handoff *connListener // feeds general
	netOnly bool

	mu       sync.Mutex
	conns    map[*frontConn]struct{}
	closing  atomic.Bool
	drained  chan struct{} // closed when closing and no connection is left
	listener net.Listener
}

func newFrontServer(p *Proxy, cfg Config, log *slog.Logger) *frontServer {
	s := &frontServer{p: p, log: log, conns: map[*frontConn]struct{}{}, drained: make(chan struct{}),
		netOnly: os.Getenv(netHTTPOnlyEnv) == "1"}
	s.handoff = newConnListener()
	s.general = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		// The proxy answers 431 in JSON up to MaxHeaderBytes; net/http's own
		// limit sits above it as a hard stop.
		MaxHeaderBytes: cfg.MaxHeaderBytes * 2,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s
}

// Serve accepts connections on l until Shutdown.
func (s *frontServer) Serve(l net.Listener) error {
	s.mu.Lock()
	s.listener = l
	s.mu.Unlock()
	// net/http serves handed-off connections until Shutdown closes it.
	go func() { _ = s.general.Serve(s.handoff) }()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || isTemporaryAccept(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		backoff = 0
		if s.netOnly {
			s.handoff.give(c)
			continue
		}
		fc := s.newConn(c)
		if fc == nil {
			_ = c.Close()
			continue
		}
		go fc.serve()
	}
}

// isTemporaryAccept: out of file descriptors and the like; worth retrying.
func isTemporaryAccept(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *frontServer) newConn(c net.Conn) *frontConn {
	fc := &frontConn{s: s, p: s.p, conn: c}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return nil
	}
	s.conns[fc] = struct{}{}
	return fc
}

func (s *frontServer) forget(fc *frontConn) {
	s.mu.Lock()
	delete(s.conns, fc)
	if s.closing.Load() && len(s.conns) == 0 {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
	s.mu.Unlock()
}

// Shutdown stops accepting, closes idle connections, lets each request in
// progress finish (its connection closes after it), and returns when every
// connection is gone or ctx ends (then the rest are closed).
func (s *frontServer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	if s.listener != nil {
		_ = s.listener.Close()
	}
	if len(s.conns) == 0 {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
	for fc := range s.conns {
		fc.wakeIfIdle()
	}
	s.mu.Unlock()
	generalDone := make(chan error, 1)
	go func() { generalDone <- s.general.Shutdown(ctx) }()
	var err error
	select {
	case <-s.drained:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		for fc := range s.conns {
			_ = fc.conn.Close()
		}
		s.mu.Unlock()
	}
	if gerr := <-generalDone; gerr != nil {
		if err == nil {
			err = gerr
		}
		_ = s.general.Close()
	}
	return err
}

// frontConn is one client connection served by the fast path.
type frontConn struct {
	s    *frontServer
	p    *Proxy
	conn net.Conn
	io   net.Conn // conn's reads and writes (raw system calls where possible: sysConn)
	br   *bufio.Reader

	clientIP   string // for X-Forwarded-For
	remoteAddr string

	mu   sync.Mutex
	idle bool // waiting for the next request's first byte

	// linger: the connection closes with a request body not read (say
	// after a 413); close gently so the client reads the answer first.
	linger bool

	head reqHead
	resp respHead
	out  []byte // the outbound head being built
	req  fwdReq
	x    exchangeState

	sendThenWait  func(fd uintptr) bool // fc.sendStep, bound once
	waitBackendFn func() error          // fc.waitBackend, bound once
	waitBodyFn    func() error          // fc.waitBody, bound once
	bodyDeadline  time.Time             // the request body must have arrived by then
	obs           frontObs              // metering and the access log (usage_observe.go)

	// The last metric children used: a connection mostly serves one
	// tenant's target, so this spares a map lookup per request.
	lastCounterKey requestKey
	lastCounter    prometheus.Counter
	lastLatencyKey latencyKey
	lastLatency    prometheus.Observer
}

func (fc *frontConn) requestCounter(tier, target, code string) prometheus.Counter {
	k := requestKey{tier, target, code}
	if fc.lastCounter == nil || fc.lastCounterKey != k {
		fc.lastCounterKey, fc.lastCounter = k, fc.p.metrics.requestCounter(tier, target, code)
	}
	return fc.lastCounter
}

func (fc *frontConn) upstreamObserver(tier, target string) prometheus.Observer {
	k := latencyKey{tier, target}
	if fc.lastLatency == nil || fc.lastLatencyKey != k {
		fc.lastLatencyKey, fc.lastLatency = k, fc.p.metrics.upstreamObserver(tier, target)
	}
	return fc.lastLatency
}

// wakeIfIdle makes a connection waiting for its next request give up now
// (shutdown). A connection busy with a request is left alone.
func (fc *frontConn) wakeIfIdle() {
	fc.mu.Lock()
	if fc.idle {
		_ = fc.conn.SetReadDeadline(time.Now())
	}
	fc.mu.Unlock()
}

func (fc *frontConn) setIdle(idle bool) {
	fc.mu.Lock()
	fc.idle = idle
	fc.mu.Unlock()
}

var frontReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, frontBufSize) }}

func (fc *frontConn) serve() {
	handedOff := false
	defer func() {
		if r := recover(); r != nil {
			fc.s.log.Error("panic serving a connection", "panic", r, "stack", string(debug.Stack()))
		}
		if !handedOff {
			if fc.linger {
				fc.lingerClose()
			}
			_ = fc.conn.Close()
			if fc.br != nil {
				fc.br.Reset(nil)
				frontReaders.Put(fc.br)
			}
		}
		fc.s.forget(fc)
	}()
	fc.remoteAddr = fc.conn.RemoteAddr().String()
	fc.clientIP = fc.remoteAddr
	if host, _, err := net.SplitHostPort(fc.remoteAddr); err == nil {
		fc.clientIP = host
	}
	fc.io = newSysConn(fc.conn)
	fc.waitBackendFn = fc.waitBackend
	fc.waitBodyFn = fc.waitBody
	fc.br = frontReaders.Get().(*bufio.Reader)
	fc.br.Reset(fc.io)
	cfg := &fc.p.cfg
	first := true
	for {
		// Wait for the next request: the idle timeout (the header timeout
		// for the first), then the header timeout for the rest of the head.
		wait := cfg.IdleTimeout
		wasFirst := first
		if first {
			wait = cfg.ReadHeaderTimeout
		}
		first = false
		// Going idle, the shutdown check and arming the wait happen under
		// the lock Shutdown's wake-up takes, so the wake-up cannot land in
		// between and be overwritten.
		fc.mu.Lock()
		fc.idle = true
		if fc.s.closing.Load() && fc.br.Buffered() == 0 {
			fc.mu.Unlock()
			return
		}
		_ = fc.conn.SetReadDeadline(time.Now().Add(wait))
		fc.mu.Unlock()
		_, err := fc.br.Peek(1)
		fc.setIdle(false)
		if err != nil {
			return
		}
		// A head usually arrives whole; only one still arriving gets the
		// header timeout (which cuts off slow clients). The first request's
		// wait already was the header timeout, counted from the accept.
		buf, _ := fc.br.Peek(fc.br.Buffered())
		n := headEnd(buf)
		if n < 0 {
			if !wasFirst {
				_ = fc.conn.SetReadDeadline(time.Now().Add(cfg.ReadHeaderTimeout))
			}
			if n, err = fc.readHead(); err != nil {
				if isTimeout(err) {
					fc.writeRouterError(http.StatusRequestTimeout, "request_timeout", "the request head did not arrive in time", "", 0, true)
				}
				return
			}
		}
		if n < 0 || fc.s.netOnly {
			handedOff = fc.handOffUnlessRefused()
			return
		}
		buf, _ = fc.br.Peek(n)
		parseRequestHead(buf, &fc.head)
		if fc.head.general != "" {
			handedOff = fc.handOffUnlessRefused()
			return
		}
		if fc.head.contentLength > 0 {
			// The body gets the body timeout from the end of the head, and
			// each wait for more of it the body idle timeout (waitBody);
			// a bodiless request reads nothing more until the next head,
			// which sets its own.
			fc.bodyDeadline = time.Now().Add(cfg.BodyTimeout)
		}
		if !fc.serveRequest() {
			return
		}
		if fc.s.closing.Load() {
			return
		}
	}
}

// lingerTimeout is how long a connection closing with an unread request
// body keeps reading (and dropping) it after sending its answer: closing a
// socket with unread data resets the connection, and a client still sending
// would then lose the answer (net/http waits 500 ms for the same reason).
const lingerTimeout = 500 * time.Millisecond

// lingerClose half-closes the connection and drops what the client still
// sends, until it closes its side or lingerTimeout passes.
func (fc *frontConn) lingerClose() {
	cw, ok := fc.conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil || fc.br == nil {
		return
	}
	_ = fc.conn.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.Copy(io.Discard, fc.br)
}

// readHead waits until the read buffer holds a complete head and returns
// its length, or -1 if the head does not fit the buffer (or uses bare LF
// line ends): net/http's business.
func (fc *frontConn) readHead() (int, error) {
	n, err := bufferHead(fc.br, bareLFHead)
	if errors.Is(err, errHeadFull) {
		return -1, nil
	}
	return n, err
}

// bareLFHead: a head ending in bare line feeds, which net/http reads.
func bareLFHead(buf []byte) bool {
	return bytes.Contains(buf, lflf) || bytes.Contains(buf, lfcrlf)
}

var (
	lflf   = []byte("\n\n")
	lfcrlf = []byte("\n\r\n")
)

// handOffUnlessRefused hands the connection to net/http, except a request
// whose head refusedHead refuses: that one is answered 400 and the
// connection closed, as nginx does (RFC 9112 §6.3 allows refusing a request
// with both a length and a coding, and requires the close). net/http would
// read it by the coding alone, or unfold the folded line, and keep the
// connection.
func (fc *frontConn) handOffUnlessRefused() bool {
	buf, _ := fc.br.Peek(fc.br.Buffered())
	e := refusedHead(buf)
	if e == nil {
		return fc.handOff()
	}
	fc.linger = true
	fc.writeRouterError(e.status, e.code, e.msg, "", 0, true)
	fc.requestCounter("", "", statusText(e.status)).Inc()
	return false
}

// handOff gives the connection, with everything read from it so far, to
// the net/http server. It reports whether the connection was handed over.
func (fc *frontConn) handOff() bool {
	_ = fc.conn.SetReadDeadline(time.Time{})
	if fc.s.closing.Load() {
		return false
	}
	rc := &replayConn{Conn: fc.conn, br: fc.br}
	fc.br = nil // owned by rc now
	if !fc.s.handoff.give(rc) {
		fc.br = rc.br
		return false
	}
	return true
}

// replayConn is a connection whose first bytes were already read into br.
type replayConn struct {
	net.Conn
	br *bufio.Reader
}

// CloseWrite half-closes, so net/http's gentle close (after a 413, say)
// works on a handed-off connection.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("CloseWrite: %w", http.ErrNotSupported)
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br.Reset(nil)
		frontReaders.Put(c.br)
		c.br = nil
	}
	return c.Conn.Read(p)
}

// connListener is a net.Listener fed with handed-off connections.
type connListener struct {
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

var _ net.Listener = (*connListener)(nil)

func (l *connListener) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		_ = c.Close()
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return handoffAddr{} }

type handoffAddr struct{}

func (handoffAddr) Network() string { return "handoff" }
func (handoffAddr) String() string  { return "handoff" }
