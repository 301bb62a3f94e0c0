package wire

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The router's client side (the connection loop). net/http's server costs a proxy dearly per
// request: a background read goroutine started and stopped around every
// handler, a Request with its header map, a ResponseWriter, and
// httputil.ReverseProxy's copy of them all; measured here that was half of
// the router's CPU per request. So the router serves HTTP/1.1 itself for
// the requests that make up nearly all traffic — a head it parses strictly
// (head.go), no body or a Content-Length body — and its Handler forwards
// them without building any of that (exchange.go). Any other request — transfer codings,
// Expect, upgrades (WebSocket), HTTP/1.0, percent-encoded paths, heads
// bigger than the read buffer, anything the strict parser does not fully
// understand — hands its connection, with the bytes already read, to a
// net/http server running the fallback handler, which serves it (and the rest
// of that connection) exactly as before. net/http stays the authority on
// every unusual case; the fast path only ever does what it would have done.

// frontBufSize is the read buffer of a client connection: heads that do
// not fit go to net/http (which allows up to twice MaxHeaderBytes and
// answers 431 above MaxHeaderBytes).
const frontBufSize = 8 << 10

// Handler serves the requests the fast path takes: the wire package is its
// consumer.
type Handler interface {
	// Open returns the server of one connection's requests; it is called
	// once per connection, before its first request.
	Open(c *Conn) RequestServer
}

// RequestServer serves the requests of one connection.
type RequestServer interface {
	// ServeRequest serves the request whose head is h (its strings point
	// into the connection's read buffer: valid until Conn.DiscardHead).
	// It reports whether the connection can carry another request.
	ServeRequest(h *RequestHead) (keep bool)
	// Refuse answers a request the connection loop refuses as it stands
	// (ErrHeadTimeout, ErrAmbiguousFraming, ErrObsFold); the connection
	// closes after it.
	Refuse(err error)
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// ReadHeaderTimeout bounds the wait for a request head (the first one
	// counted from the accept).
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request's first byte.
	IdleTimeout time.Duration
	// BodyTimeout: a request body must have arrived whole this long after
	// its head; BodyIdleTimeout: each wait for more of it.
	BodyTimeout, BodyIdleTimeout time.Duration
	// MaxHeaderBytes is the answered limit on request heads; net/http's
	// own hard limit on handed-off connections is twice it.
	MaxHeaderBytes int
	// Handler serves the requests the fast path takes.
	Handler Handler
	// Fallback serves every connection handed to net/http.
	Fallback http.Handler
	// NetHTTPOnly hands every connection to net/http.
	NetHTTPOnly bool
	// H2C: a connection that starts with the HTTP/2 preface (h2c with
	// prior knowledge) goes to net/http, which serves it as HTTP/2 with
	// the limits in HTTP2.
	H2C   bool
	HTTP2 *http.HTTP2Config
	// TLS, if not nil, makes the server a TLS listener: each connection's
	// handshake runs in the connection's own goroutine (within
	// ReadHeaderTimeout); one that negotiates h2 goes to net/http as it
	// is (HTTP/2 with the limits in HTTP2), any other (http/1.1, or no
	// ALPN) is served as a plaintext connection is.
	TLS *tls.Config
	// ResponseHeader fields (canonical keys) are sent with every final
	// response, the fast path's and net/http's (HSTS on a TLS listener).
	ResponseHeader http.Header
	// OnConn, if not nil, is told how each connection is served: by the
	// fast path (false), or handed to net/http (true; a connection handed
	// off after fast-path requests is told both).
	OnConn func(handedOff bool)
	Log    *slog.Logger
}

// Server accepts client connections and serves them.
type Server struct {
	cfg     ServerConfig
	log     *slog.Logger
	fields  string        // ResponseHeader as head lines
	general *http.Server  // serves handed-off connections
	handoff *connListener // feeds general

	mu       sync.Mutex
	conns    map[*Conn]struct{}
	closing  atomic.Bool
	drained  chan struct{} // closed when closing and no connection is left
	listener net.Listener
}

// NewServer returns a server; Serve runs it.
func NewServer(cfg ServerConfig) *Server {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, log: log, conns: map[*Conn]struct{}{}, drained: make(chan struct{}), fields: headLines(cfg.ResponseHeader)}
	s.handoff = newConnListener()
	s.general = &http.Server{
		Handler:           fallbackHandler(cfg.Fallback, cfg.TLS != nil, cfg.ResponseHeader),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		// The fallback answers 431 in JSON up to MaxHeaderBytes; net/http's
		// own limit sits above it as a hard stop.
		MaxHeaderBytes: cfg.MaxHeaderBytes * 2,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnContext:    handedOffTLS,
	}
	if cfg.H2C || cfg.TLS != nil {
		// A handed-off *tls.Conn that negotiated h2 is served as HTTP/2:
		// net/http takes its handshake as done.
		protos := new(http.Protocols)
		protos.SetHTTP1(true)
		protos.SetUnencryptedHTTP2(cfg.H2C)
		protos.SetHTTP2(cfg.TLS != nil)
		s.general.Protocols = protos
		s.general.HTTP2 = cfg.HTTP2
	}
	return s
}

// headLines renders h as response head lines ("Name: value\r\n"...).
func headLines(h http.Header) string {
	var b strings.Builder
	for k, vs := range h {
		for _, v := range vs {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	return b.String()
}

// tlsStateKey is the context key of a handed-off HTTP/1 TLS connection's
// state (handedOffTLS).
type tlsStateKey struct{}

// handedOffTLS keeps the TLS state of a TLS connection handed off with
// bytes already read (a replayConn, not a *tls.Conn, so net/http does not
// see it is TLS); fallbackHandler puts it back on each request.
func handedOffTLS(ctx context.Context, c net.Conn) context.Context {
	if rc, ok := c.(*replayConn); ok && rc.tls != nil {
		return context.WithValue(ctx, tlsStateKey{}, rc.tls)
	}
	return ctx
}

// fallbackHandler is next with, over TLS, the requests of handed-off
// connections given their Request.TLS, as net/http would have, and fields
// on every answer.
func fallbackHandler(next http.Handler, overTLS bool, fields http.Header) http.Handler {
	if next == nil {
		next = http.DefaultServeMux // as http.Server would
	}
	if !overTLS && len(fields) == 0 {
		return next
	}
	for k, vs := range fields {
		fields[k] = slices.Clip(vs) // a handler's Add copies rather than shares
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if st, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok {
				r.TLS = st
			}
		}
		h := w.Header()
		for k, vs := range fields {
			h[k] = vs
		}
		next.ServeHTTP(w, r)
	})
}

// Serve accepts connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
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
		if s.cfg.NetHTTPOnly && s.cfg.TLS == nil {
			s.handOff(c)
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

// handOff gives c to net/http, as it is. OnConn hears of it first: once
// given, net/http may answer the client before give returns (a connection
// refused because the server is closing is counted all the same).
func (s *Server) handOff(c net.Conn) bool {
	if s.cfg.OnConn != nil {
		s.cfg.OnConn(true)
	}
	return s.handoff.give(c)
}

// isTemporaryAccept: out of file descriptors and the like; worth retrying.
func isTemporaryAccept(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) newConn(c net.Conn) *Conn {
	fc := &Conn{s: s, conn: c}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return nil
	}
	s.conns[fc] = struct{}{}
	return fc
}

func (s *Server) forget(fc *Conn) {
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
func (s *Server) Shutdown(ctx context.Context) error {
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

// Conn is one client connection served by the fast path.
type Conn struct {
	s    *Server
	rs   RequestServer
	conn net.Conn // the accepted connection (its socket: deadlines, peeks, Shutdown's close)
	tc   *tls.Conn
	tls  *tls.ConnectionState // nil: plaintext
	io   net.Conn             // the connection's reads and writes (raw system calls where possible: sysConn; tc over TLS)
	br   *bufio.Reader

	out        countingWriter // what writer sends to the client, counted
	clientIP   string         // for X-Forwarded-For
	remoteAddr string

	mu   sync.Mutex
	idle bool // waiting for the next request's first byte

	// linger: the connection closes with a request body not read (say
	// after a 413); close gently so the client reads the answer first.
	linger bool
	// handOffReq: the handler gave the request (still in the buffer) and
	// the rest of the connection to net/http (HandOff).
	handOffReq bool

	head RequestHead
	resp respHead
	x    exchangeState

	sendThenWait  func(fd uintptr) bool // fc.sendStep, bound once
	waitBackendFn func() error          // fc.waitBackend, bound once
	waitBodyFn    func() error          // fc.waitBody, bound once
	bodyDeadline  time.Time             // the request body must have arrived by then
}

// ClientIP is the client's address without the port (for X-Forwarded-For).
func (fc *Conn) ClientIP() string { return fc.clientIP }

// RemoteAddr is the client's address.
func (fc *Conn) RemoteAddr() string { return fc.remoteAddr }

// TLS is the connection's TLS state (nil: plaintext): the server name
// (SNI) the client asked for, the negotiated protocol.
func (fc *Conn) TLS() *tls.ConnectionState { return fc.tls }

// stream is what carries the connection's bytes: the TLS connection over
// TLS (closing it sends close_notify), else the accepted one.
func (fc *Conn) stream() net.Conn {
	if fc.tc != nil {
		return fc.tc
	}
	return fc.conn
}

// Closing reports whether the server is shutting down (the connection
// closes after the request in progress).
func (fc *Conn) Closing() bool { return fc.s.closing.Load() }

// Linger makes the connection close gently: the request's body is not
// read, and the client must get the answer before the close.
func (fc *Conn) Linger() { fc.linger = true }

// HandOff gives the request being served (its head not discarded, its
// body not read) and the rest of the connection to net/http: the handler
// calls it from ServeRequest, answers nothing, and returns false.
func (fc *Conn) HandOff() { fc.handOffReq = true }

// h2Preface is how an h2c connection with prior knowledge starts (its
// first line: the head's end is "\r\n\r\n" in the middle of the preface).
var h2Preface = []byte("PRI * HTTP/2.0\r\n")

// DiscardHead drops the request head from the read buffer: the request's
// body (if any) comes next. The head's strings are invalid from here.
func (fc *Conn) DiscardHead() { _, _ = fc.br.Discard(fc.head.size) }

// wakeIfIdle makes a connection waiting for its next request give up now
// (shutdown). A connection busy with a request is left alone.
func (fc *Conn) wakeIfIdle() {
	fc.mu.Lock()
	if fc.idle {
		_ = fc.conn.SetReadDeadline(time.Now())
	}
	fc.mu.Unlock()
}

func (fc *Conn) setIdle(idle bool) {
	fc.mu.Lock()
	fc.idle = idle
	fc.mu.Unlock()
}

var frontReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, frontBufSize) }}

func (fc *Conn) serve() {
	handedOff := false
	defer func() {
		if r := recover(); r != nil {
			fc.s.log.Error("panic serving a connection", "panic", r, "stack", string(debug.Stack()))
		}
		if !handedOff {
			if fc.linger {
				fc.lingerClose()
			}
			_ = fc.stream().Close()
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
	if fc.s.cfg.TLS != nil {
		var more bool
		if more, handedOff = fc.handshake(); !more {
			return
		}
	}
	if fc.s.cfg.OnConn != nil {
		fc.s.cfg.OnConn(false)
	}
	fc.io = fc.stream()
	if fc.tc == nil {
		fc.io = newSysConn(fc.conn)
	}
	fc.waitBackendFn = fc.waitBackend
	fc.waitBodyFn = fc.waitBody
	fc.br = frontReaders.Get().(*bufio.Reader)
	fc.br.Reset(fc.io)
	fc.rs = fc.s.cfg.Handler.Open(fc)
	for first := true; ; first = false {
		n, ok := fc.nextHead(first)
		if !ok {
			return
		}
		if n < 0 || fc.s.cfg.NetHTTPOnly {
			handedOff = fc.handOffUnlessRefused()
			return
		}
		buf, _ := fc.br.Peek(n)
		if first && fc.s.cfg.H2C && bytes.HasPrefix(buf, h2Preface) {
			handedOff = fc.handOff() // the rest of the preface is net/http's to read
			return
		}
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
			fc.bodyDeadline = time.Now().Add(fc.s.cfg.BodyTimeout)
		}
		if !fc.rs.ServeRequest(&fc.head) || fc.s.closing.Load() {
			if fc.handOffReq {
				handedOff = fc.handOff()
			}
			return
		}
	}
}

// nextHead waits for the next request and returns the length of its head
// in the read buffer, or -1 if it is net/http's business (see readHead);
// false: the connection is done (closed, timed out, shutting down).
func (fc *Conn) nextHead(first bool) (int, bool) {
	cfg := &fc.s.cfg
	// Wait for the next request: the idle timeout (the header timeout
	// for the first), then the header timeout for the rest of the head.
	wait := cfg.IdleTimeout
	if first {
		wait = cfg.ReadHeaderTimeout
	}
	// Going idle, the shutdown check and arming the wait happen under
	// the lock Shutdown's wake-up takes, so the wake-up cannot land in
	// between and be overwritten.
	fc.mu.Lock()
	fc.idle = true
	if fc.s.closing.Load() && fc.br.Buffered() == 0 {
		fc.mu.Unlock()
		return 0, false
	}
	_ = fc.conn.SetReadDeadline(time.Now().Add(wait))
	fc.mu.Unlock()
	_, err := fc.br.Peek(1)
	fc.setIdle(false)
	if err != nil {
		return 0, false
	}
	// A head usually arrives whole; only one still arriving gets the
	// header timeout (which cuts off slow clients). The first request's
	// wait already was the header timeout, counted from the accept.
	buf, _ := fc.br.Peek(fc.br.Buffered())
	n := headEnd(buf)
	if n >= 0 {
		return n, true
	}
	if !first {
		_ = fc.conn.SetReadDeadline(time.Now().Add(cfg.ReadHeaderTimeout))
	}
	if n, err = fc.readHead(); err != nil {
		if isTimeout(err) {
			fc.rs.Refuse(ErrHeadTimeout)
		}
		return 0, false
	}
	return n, true
}

// LingerTimeout is how long a connection closing with an unread request
// body keeps reading (and dropping) it after sending its answer: closing a
// socket with unread data resets the connection, and a client still sending
// would then lose the answer (net/http waits 500 ms for the same reason).
const LingerTimeout = 500 * time.Millisecond

// handshake does a TLS listener's handshake, in the connection's
// goroutine, within ReadHeaderTimeout (Shutdown cuts it short: no request
// is in progress). more: the connection goes on to the fast path;
// handedOff: it went to net/http (h2 negotiated, or NetHTTPOnly).
func (fc *Conn) handshake() (more, handedOff bool) {
	tc := tls.Server(newSysConn(fc.conn), fc.s.cfg.TLS) // records read and written by raw system calls
	fc.mu.Lock()
	fc.idle = true
	if fc.s.closing.Load() {
		fc.mu.Unlock()
		return false, false
	}
	_ = fc.conn.SetDeadline(time.Now().Add(fc.s.cfg.ReadHeaderTimeout))
	fc.mu.Unlock()
	err := tc.HandshakeContext(context.Background())
	fc.setIdle(false)
	_ = fc.conn.SetDeadline(time.Time{})
	if err != nil {
		fc.s.log.Debug("TLS handshake failed", "remote", fc.remoteAddr, "err", err)
		return false, false
	}
	st := tc.ConnectionState()
	fc.tc, fc.tls = tc, &st
	if st.NegotiatedProtocol == "h2" || fc.s.cfg.NetHTTPOnly {
		// net/http serves it: it must see the *tls.Conn itself.
		return false, !fc.s.closing.Load() && fc.s.handOff(tc)
	}
	return true, false
}

// lingerClose half-closes the connection and drops what the client still
// sends, until it closes its side or LingerTimeout passes.
func (fc *Conn) lingerClose() {
	cw, ok := fc.stream().(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil || fc.br == nil {
		return
	}
	_ = fc.conn.SetReadDeadline(time.Now().Add(LingerTimeout))
	_, _ = io.Copy(io.Discard, fc.br)
}

// readHead waits until the read buffer holds a complete head and returns
// its length, or -1 if the head does not fit the buffer (or uses bare LF
// line ends): net/http's business.
func (fc *Conn) readHead() (int, error) {
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
// whose head refusedHead refuses: that one is refused (the handler answers
// 400) and the connection closed, as nginx does (RFC 9112 §6.3 allows refusing a request
// with both a length and a coding, and requires the close). net/http would
// read it by the coding alone, or unfold the folded line, and keep the
// connection.
func (fc *Conn) handOffUnlessRefused() bool {
	buf, _ := fc.br.Peek(fc.br.Buffered())
	err := refusedHead(buf)
	if err == nil {
		return fc.handOff()
	}
	fc.linger = true
	fc.rs.Refuse(err)
	return false
}

// handOff gives the connection, with everything read from it so far, to
// the net/http server. It reports whether the connection was handed over.
func (fc *Conn) handOff() bool {
	_ = fc.conn.SetReadDeadline(time.Time{})
	if fc.s.closing.Load() {
		return false
	}
	rc := &replayConn{Conn: fc.stream(), br: fc.br, tls: fc.tls}
	fc.br = nil // owned by rc now
	if !fc.s.handOff(rc) {
		fc.br = rc.br
		return false
	}
	return true
}

// replayConn is a connection whose first bytes were already read into br.
type replayConn struct {
	net.Conn
	br  *bufio.Reader
	tls *tls.ConnectionState // over TLS (Conn is a *tls.Conn): its state
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
