package wire

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Transport is the router's HTTP/1.1 client to its backends. Unlike
// http.Transport, which hands every request to a connection's write
// goroutine and every response back from its read goroutine, it does the
// whole exchange on the calling goroutine: take an idle keep-alive
// connection (or dial one), write the request, read the response head, and
// return a Response whose Body gives the connection back to the pool when
// it has been read to the end. That saves several goroutine wake-ups and
// channel hand-offs per request, which is most of what proxying a small
// request costs.
//
// It keeps net/http's semantics where the proxy depends on them:
//   - the request is written by http.Request.Write (chunked bodies,
//     trailers, Content-Length checks) or, for the common bodiless request,
//     by an equivalent hand-written head (writeHead);
//   - responses are parsed by http.ReadResponse; 1xx responses are passed to
//     the ClientTrace (the ReverseProxy forwards them) and skipped;
//     "Expect: 100-continue" waits up to continueTimeout for the backend's
//     go-ahead before the body is sent;
//   - a 101 Switching Protocols response's Body is an io.ReadWriteCloser
//     over the connection, as httputil.ReverseProxy requires for upgrades;
//   - dial failures are the dialer's *net.OpError (Op "dial"), so the
//     selecting transport still recognises them and retries elsewhere;
//   - a response head slower than headerTimeout fails with a timeout error
//     (the proxy answers 504);
//   - the request context's cancellation closes the connection, at any
//     point until the response body is closed;
//   - an idle connection the backend has closed is dropped when taken from
//     the pool; if a reused connection still fails before any byte of a
//     response arrives, a replayable request (net/http's rule: bodiless, or
//     with GetBody, and idempotent or with an Idempotency-Key) is sent again
//     once, on a freshly dialed connection.
type Transport struct {
	dialer          net.Dialer
	headerTimeout   time.Duration // 0: none
	continueTimeout time.Duration // wait for 100 Continue before sending the body anyway
	idleTimeout     time.Duration // idle connections older than this are closed
	maxIdlePerAddr  int
	maxHeaderBytes  int64 // response head limit

	pools sync.Map // addr → *idlePool
}

// NewTransport returns a client whose dials time out after dialTimeout and
// whose requests fail when no response head arrives within headerTimeout
// (0: no limit).
func NewTransport(dialTimeout, headerTimeout time.Duration) *Transport {
	return &Transport{
		dialer:          net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		headerTimeout:   headerTimeout,
		continueTimeout: time.Second,
		idleTimeout:     90 * time.Second,
		maxIdlePerAddr:  1024,
		maxHeaderBytes:  10 << 20, // net/http's default MaxResponseHeaderBytes
	}
}

var _ http.RoundTripper = (*Transport)(nil)

// idlePool holds the idle connections to one address, most recently used
// last.
type idlePool struct {
	mu    sync.Mutex
	idle  []*upConn
	timer *time.Timer // prunes expired connections while any are idle
	armed bool
}

// upConn is one connection to a backend.
type upConn struct {
	t    *Transport
	pool *idlePool
	conn net.Conn
	io   net.Conn        // conn's reads and writes (raw system calls where possible: sysConn)
	raw  syscall.RawConn // for the liveness check; nil if unavailable
	br   *bufio.Reader   // from readerPool while a response is read

	idleAt   time.Time
	reused   bool
	noReuse  bool  // close after this exchange
	nwritten int64 // bytes written to the connection in this exchange
	werr     error // the connection's write error, if any
	limit    int64 // bytes the reader may still read (response head limit)

	writeTimeout time.Duration // > 0: each write must complete within it
}

const (
	bufSize  = 32 << 10
	noLimit  = math.MaxInt64
	maxRetry = 1
)

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufSize) }}
)

func (c *upConn) Read(p []byte) (int, error) {
	if c.limit <= 0 {
		return 0, ErrResponseHeadTooLarge
	}
	if int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.io.Read(p)
	c.limit -= int64(n)
	return n, err
}

func (c *upConn) Write(p []byte) (int, error) {
	if c.writeTimeout > 0 {
		_ = c.conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	n, err := c.io.Write(p)
	c.nwritten += int64(n)
	if err != nil && c.werr == nil {
		c.werr = err
	}
	return n, err
}

func (c *upConn) close() {
	_ = c.conn.Close()
	if c.br != nil {
		// The reader may still hold the dead connection's bytes; drop it
		// rather than recycle it.
		c.br = nil
	}
}

var (
	errEarlyResponse    = errors.New("backend answered before the request body was sent")
	errServerClosedIdle = errors.New("backend closed the idle connection")
)

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := validateOutbound(req); err != nil {
		closeReqBody(req)
		return nil, err
	}
	addr := req.URL.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), "80")
	}
	ctx := req.Context()
	fresh := false
	for attempt := 0; ; attempt++ {
		c, err := t.getConn(ctx, addr, fresh, true)
		if err != nil {
			closeReqBody(req)
			return nil, err
		}
		resp, retry, err := c.roundTrip(ctx, req)
		if err == nil {
			return resp, nil
		}
		var cbe *ClientBodyError
		if errors.As(err, &cbe) {
			// The client's body failed (net/http may have cancelled the
			// context over it): that is the answer, not the cancellation.
			return nil, err
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		if !retry || attempt >= maxRetry {
			return nil, err
		}
		if req.Body != nil && req.Body != http.NoBody {
			// Only requests with GetBody are retried with a body.
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			r2 := *req
			r2.Body = body
			req = &r2
		}
		fresh = true // the pool may hold more connections the backend closed
	}
}

// CloseIdleConnections closes every idle connection.
func (t *Transport) CloseIdleConnections() {
	t.pools.Range(func(_, v any) bool {
		p := v.(*idlePool)
		p.mu.Lock()
		idle := p.idle
		p.idle = nil
		if p.timer != nil {
			p.timer.Stop()
			p.armed = false
		}
		p.mu.Unlock()
		for _, c := range idle {
			c.close()
		}
		return true
	})
}

func (t *Transport) poolFor(addr string) *idlePool {
	if v, ok := t.pools.Load(addr); ok {
		return v.(*idlePool)
	}
	v, _ := t.pools.LoadOrStore(addr, &idlePool{})
	return v.(*idlePool)
}

// getConn takes an idle connection to addr (unless fresh) or dials one.
// With checkAlive, an idle connection is checked before it is handed out;
// without, the caller must check it (the fast path does so in the same
// step as waiting for the answer: see Conn.exchange).
func (t *Transport) getConn(ctx context.Context, addr string, fresh, checkAlive bool) (*upConn, error) {
	p := t.poolFor(addr)
	if !fresh {
		now := time.Now()
		for {
			c := p.pop()
			if c == nil {
				break
			}
			idle := now.Sub(c.idleAt)
			// Every reused connection is checked (one non-blocking read):
			// bytes a backend sent after a response's end — or a 408 before
			// closing — must never be read as the next request's answer,
			// which may be another tenant's.
			if idle > t.idleTimeout || checkAlive && !c.alive() {
				c.close()
				continue
			}
			c.reused = true
			c.br = readerPool.Get().(*bufio.Reader)
			c.br.Reset(c)
			return c, nil
		}
	}
	conn, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
	c := &upConn{t: t, pool: p, conn: conn, io: newSysConn(conn), limit: noLimit}
	if sc, ok := conn.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	c.br = readerPool.Get().(*bufio.Reader)
	c.br.Reset(c)
	return c, nil
}

func (p *idlePool) pop() *upConn {
	p.mu.Lock()
	n := len(p.idle)
	if n == 0 {
		p.mu.Unlock()
		return nil
	}
	c := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	p.mu.Unlock()
	return c
}

// putIdle returns a connection whose exchange completed cleanly to the pool.
func (t *Transport) putIdle(c *upConn) {
	if c.noReuse || c.br == nil || c.br.Buffered() != 0 {
		// Bytes beyond the response: the backend is confused; don't reuse.
		c.close()
		return
	}
	c.br.Reset(nil)
	readerPool.Put(c.br)
	c.br = nil
	c.reused, c.nwritten, c.werr = false, 0, nil
	c.idleAt = time.Now()
	p := c.pool
	p.mu.Lock()
	if len(p.idle) >= t.maxIdlePerAddr {
		p.mu.Unlock()
		_ = c.conn.Close()
		return
	}
	p.idle = append(p.idle, c)
	if !p.armed {
		p.armed = true
		if p.timer == nil {
			p.timer = time.AfterFunc(t.idleTimeout, func() { t.prune(p) })
		} else {
			p.timer.Reset(t.idleTimeout)
		}
	}
	p.mu.Unlock()
}

// prune closes the connections idle for longer than the idle timeout and
// re-arms the timer while any remain.
func (t *Transport) prune(p *idlePool) {
	now := time.Now()
	var expired []*upConn
	p.mu.Lock()
	i := 0
	for i < len(p.idle) && now.Sub(p.idle[i].idleAt) >= t.idleTimeout {
		i++
	}
	if i > 0 {
		expired = append(expired, p.idle[:i]...)
		n := copy(p.idle, p.idle[i:])
		clear(p.idle[n:])
		p.idle = p.idle[:n]
	}
	p.armed = false
	if len(p.idle) > 0 {
		p.armed = true
		wait := t.idleTimeout - now.Sub(p.idle[0].idleAt)
		p.timer.Reset(max(wait, time.Millisecond))
	}
	p.mu.Unlock()
	for _, c := range expired {
		c.close()
	}
}

// alive reports whether an idle connection can be used: the backend has
// neither closed it nor sent anything unasked. One non-blocking read.
func (c *upConn) alive() bool {
	if c.raw == nil {
		return true
	}
	ok := false
	err := c.raw.Read(func(fd uintptr) bool {
		ok = fdIdleAndOpen(fd)
		return true // never wait
	})
	return err == nil && ok
}

// roundTrip does one exchange on c. On error c is closed; retry says the
// request never reached the backend's application (a reused connection
// failed before any response byte arrived) and may be sent again.
func (c *upConn) roundTrip(ctx context.Context, req *http.Request) (resp *http.Response, retry bool, err error) {
	var stop func() bool
	if ctx.Done() != nil {
		conn := c.conn
		stop = context.AfterFunc(ctx, func() { _ = conn.Close() })
	}
	rb, err := c.writeRequest(req)
	if err != nil {
		return c.writeFailed(req, rb, err, stop)
	}
	if rb != nil && rb.resp != nil {
		return c.finishHead(req, rb.resp, stop)
	}

	// Read the response head.
	if c.t.headerTimeout > 0 {
		_ = c.conn.SetReadDeadline(time.Now().Add(c.t.headerTimeout))
	}
	c.limit = c.t.maxHeaderBytes
	if _, err = c.br.Peek(1); err != nil {
		retry := c.reused && !isTimeout(err) && isReplayable(req)
		if c.reused && errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: %w", errServerClosedIdle, err)
		}
		return c.fail(stop, retry, mapReadErr(err))
	}
	resp, err = c.readResponse(req, httptrace.ContextClientTrace(ctx))
	if err != nil {
		return c.fail(stop, false, mapReadErr(err))
	}
	if c.t.headerTimeout > 0 {
		_ = c.conn.SetReadDeadline(time.Time{})
	}
	return c.finishHead(req, resp, stop)
}

// fail ends a failed exchange: the context watch stops, c is closed.
func (c *upConn) fail(stop func() bool, retry bool, err error) (*http.Response, bool, error) {
	if stop != nil {
		stop()
	}
	c.close()
	return nil, retry, err
}

// writeRequest writes the request to c. rb is the body's reader (nil
// without a body), which keeps the body's own read error and an answer
// that came instead of 100 Continue.
func (c *upConn) writeRequest(req *http.Request) (rb *reqBody, err error) {
	hasBody := req.Body != nil && req.Body != http.NoBody
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(c)
	switch {
	case !hasBody && canWriteHead(req):
		err = writeHead(bw, req)
	case hasBody:
		// The body goes through reqBody, which keeps its read error
		// (Request.Write hides it in an unexported type) and does the
		// 100-continue wait.
		rb = &reqBody{c: c, bw: bw, req: req, body: req.Body, expect: expectsContinue(req)}
		r2 := *req
		r2.Body = rb
		err = r2.Write(bw)
	default:
		err = req.Write(bw)
	}
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	writerPool.Put(bw)
	return rb, err
}

// writeFailed ends an exchange whose request could not be written whole
// (err): with the backend's early answer if it sent one, else failed.
func (c *upConn) writeFailed(req *http.Request, rb *reqBody, err error, stop func() bool) (*http.Response, bool, error) {
	hasBody := req.Body != nil && req.Body != http.NoBody
	switch {
	case rb != nil && rb.resp != nil:
		// The backend answered instead of 100 Continue; the body was not
		// sent, so the connection is not reused.
		c.noReuse = true
		return c.finishHead(req, rb.resp, stop)
	case rb != nil && rb.readErr != nil:
		// Reading the request body failed (too large, or the client
		// went away): that error, not the connection's.
		return c.fail(stop, false, rb.readErr)
	case c.werr == nil:
		return c.fail(stop, false, err)
	case c.reused && (c.nwritten == 0 && !hasBody || isReplayable(req)):
		// The backend had closed the reused connection: nothing of
		// the request reached it, or it may be sent again anyway.
		return c.fail(stop, true, err)
	}
	// The backend may have answered early and closed; prefer its answer.
	if c.nwritten > 0 {
		if c.t.headerTimeout > 0 {
			_ = c.conn.SetReadDeadline(time.Now().Add(c.t.headerTimeout))
		}
		if r, rerr := c.readResponse(req, nil); rerr == nil {
			_ = c.conn.SetReadDeadline(time.Time{})
			c.noReuse = true
			return c.finishHead(req, r, stop)
		}
	}
	return c.fail(stop, false, err)
}

// readResponse reads response heads until a final one (or 101), passing
// the others to the trace.
func (c *upConn) readResponse(req *http.Request, trace *httptrace.ClientTrace) (*http.Response, error) {
	c.limit = c.t.maxHeaderBytes
	for {
		resp, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, err
		}
		code := resp.StatusCode
		if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
			if trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
					return nil, err
				}
			}
			c.limit = c.t.maxHeaderBytes
			continue
		}
		c.limit = noLimit
		return resp, nil
	}
}

// finishHead attaches the body that gives c back (or hands it over, for 101).
func (c *upConn) finishHead(req *http.Request, resp *http.Response, stop func() bool) (*http.Response, bool, error) {
	c.limit = noLimit
	if resp.Close || req.Close {
		c.noReuse = true
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if stop != nil && !stop() {
			c.close()
			return nil, false, req.Context().Err()
		}
		_ = c.conn.SetDeadline(time.Time{})
		ub := &upgradeBody{conn: c.conn}
		if c.br.Buffered() > 0 {
			ub.br = c.br
		}
		c.br = nil
		resp.Body = ub
		return resp, false, nil
	}
	if resp.Body == http.NoBody {
		c.release(stop, true)
		return resp, false, nil
	}
	resp.Body = &upBody{c: c, rc: resp.Body, stop: stop}
	return resp, false, nil
}

// release ends an exchange: the connection goes back to the pool if the
// exchange completed and the context watch could be stopped before firing.
func (c *upConn) release(stop func() bool, complete bool) {
	if stop != nil && !stop() {
		complete = false // the context ended: the connection is closed
	}
	if complete {
		c.t.putIdle(c)
	} else {
		c.close()
	}
}

// upBody is a response body; read to the end, its connection is reused.
type upBody struct {
	mu   sync.Mutex
	c    *upConn
	rc   io.ReadCloser
	stop func() bool
	done bool
	err  error
}

var errBodyClosed = errors.New("http: read on closed response body")

func (b *upBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		if b.err != nil {
			return 0, b.err
		}
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.done = true
		if err == io.EOF {
			b.c.release(b.stop, true)
		} else {
			b.err = err
			b.c.release(b.stop, false)
		}
	}
	return n, err
}

// Ready reports whether a Read returns without waiting for the backend:
// bytes of the body are already buffered, or the body has ended. The
// router flushes what it relayed before a Read that would wait.
func (b *upBody) Ready() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.done || (b.c.br != nil && b.c.br.Buffered() > 0)
}

func (b *upBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return nil
	}
	b.done = true
	b.err = errBodyClosed
	// Not read to the end: the rest is not worth waiting for.
	b.c.release(b.stop, false)
	return nil
}

// upgradeBody is the two-way stream after 101 Switching Protocols.
type upgradeBody struct {
	br   *bufio.Reader // bytes that arrived with the response head, until drained
	conn net.Conn
}

func (b *upgradeBody) Read(p []byte) (int, error) {
	if b.br != nil {
		if n := b.br.Buffered(); len(p) > n {
			p = p[:n]
		}
		n, err := b.br.Read(p)
		if b.br.Buffered() == 0 {
			b.br = nil
		}
		return n, err
	}
	return b.conn.Read(p)
}

func (b *upgradeBody) Write(p []byte) (int, error) { return b.conn.Write(p) }
func (b *upgradeBody) Close() error                { return b.conn.Close() }
func (b *upgradeBody) CloseWrite() error {
	if cw, ok := b.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("CloseWrite: %w", http.ErrNotSupported)
}

// reqBody is the outbound request body. It keeps the body's own read
// error apart from the connection's. For an "Expect: 100-continue" request,
// on the first read it sends the head and waits (up to continueTimeout) for
// the backend's 100 Continue; a final answer instead ends the write with
// errEarlyResponse and is kept in resp.
type reqBody struct {
	c       *upConn
	bw      *bufio.Writer
	req     *http.Request
	body    io.ReadCloser
	expect  bool
	readErr error // the body's read error (not io.EOF)
	resp    *http.Response
	waitErr error
}

func (b *reqBody) Read(p []byte) (int, error) {
	if b.expect {
		b.expect = false
		b.waitErr = b.waitContinue()
	}
	if b.waitErr != nil {
		return 0, b.waitErr
	}
	n, err := b.body.Read(p)
	if err != nil && err != io.EOF && b.readErr == nil {
		b.readErr = err
	}
	return n, err
}

func (b *reqBody) waitContinue() error {
	c := b.c
	if err := b.bw.Flush(); err != nil {
		return err
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(c.t.continueTimeout))
	c.limit = c.t.maxHeaderBytes
	_, err := c.br.Peek(1)
	_ = c.conn.SetReadDeadline(time.Time{})
	if err != nil {
		if isTimeout(err) && b.req.Context().Err() == nil {
			return nil // no answer in time: send the body anyway
		}
		return err
	}
	// Something arrived: 100 Continue (send the body), another 1xx (keep
	// waiting), or a final answer (don't send the body).
	trace := httptrace.ContextClientTrace(b.req.Context())
	if c.t.headerTimeout > 0 {
		_ = c.conn.SetReadDeadline(time.Now().Add(c.t.headerTimeout))
		defer func() { _ = c.conn.SetReadDeadline(time.Time{}) }()
	}
	for {
		c.limit = c.t.maxHeaderBytes
		// A final answer's body is the caller's (b.resp) to close; a 1xx has none.
		resp, err := http.ReadResponse(c.br, b.req) //nolint:bodyclose // handed on as b.resp
		c.limit = noLimit
		if err != nil {
			return mapReadErr(err)
		}
		code := resp.StatusCode
		if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
			if trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
					return err
				}
			}
			if code == http.StatusContinue {
				return nil
			}
			continue
		}
		b.resp = resp
		return errEarlyResponse
	}
}

func (b *reqBody) Close() error { return b.body.Close() }

func expectsContinue(req *http.Request) bool {
	for _, v := range req.Header["Expect"] {
		if strings.EqualFold(strings.TrimSpace(v), "100-continue") {
			return true
		}
	}
	return false
}

// mapReadErr turns a deadline expiry while reading the head into the
// header timeout error.
func mapReadErr(err error) error {
	if errors.Is(err, ErrResponseHeadTooLarge) {
		return ErrResponseHeadTooLarge
	}
	if isTimeout(err) {
		return ErrHeaderTimeout
	}
	return err
}

// isReplayable is net/http's rule for sending a request again after a
// reused connection failed.
func isReplayable(r *http.Request) bool {
	bodyAgain := r.Body == nil || r.Body == http.NoBody || r.GetBody != nil
	return bodyAgain && (SafeMethod(r.Method) || HasIdempotencyKey(r.Header))
}

func closeReqBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// validateOutbound applies http.Transport's checks: scheme, host, method,
// header field names and values.
func validateOutbound(req *http.Request) error {
	if req.URL == nil {
		return errors.New("http: nil Request.URL")
	}
	if req.Header == nil {
		return errors.New("http: nil Request.Header")
	}
	if req.URL.Scheme != "http" {
		return fmt.Errorf("unsupported protocol scheme %q", req.URL.Scheme)
	}
	if req.URL.Host == "" {
		return errors.New("http: no Host in request URL")
	}
	if req.Method != "" && !allToken(req.Method) {
		return fmt.Errorf("net/http: invalid method %q", req.Method)
	}
	for k, vv := range req.Header {
		if k == "" || !allToken(k) {
			return fmt.Errorf("net/http: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !allFieldValue(v) {
				return fmt.Errorf("net/http: invalid header field value for %q", k)
			}
		}
	}
	return nil
}

var tokenTable = alnumPlus("!#$%&'*+-.^_`|~")

// alnumPlus is a byte set of ASCII letters and digits plus extra.
func alnumPlus(extra string) (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for _, c := range extra {
		t[c] = true
	}
	return t
}
