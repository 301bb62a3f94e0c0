package router

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/catalog"
)

// The fast path's request handling: the same decisions as Proxy.ServeHTTP
// and the ReverseProxy hooks (extraction, lookup, hold, breaker, retry,
// header rewriting, metrics), done on the parsed head and the raw streams.

// fwdReq is what forwarding needs of the request once its head's bytes
// may be gone (the body is read through the same buffer).
type fwdReq struct {
	tenant        string
	route         catalog.Route
	service       string
	contentLength int64
	head          bool // HEAD: the response has no body
	idempotent    bool // may go to another instance after a connect failure
	replayable    bool // bodiless and safe to send again on a fresh connection
	clientClose   bool
	bodyRead      bool // the request body has been read from the client whole
}

const maxUpstreamAttempts = 3

// serveRequest serves the request parsed into fc.head. It reports whether
// the connection can carry another request.
func (fc *frontConn) serveRequest() (keep bool) {
	p, h := fc.p, &fc.head
	cfg := &p.cfg
	tier, target, status := "", "", 0
	done := &fc.obs.done
	path, _, _ := strings.Cut(h.target, "?")
	p.obs.begin(done, h.method, path)
	defer func() {
		fc.requestCounter(tier, target, statusText(status)).Inc()
		done.status = status
		p.completed(done)
	}()

	// A router answer to a request whose body was not read ends the
	// connection: the body's bytes cannot be told from the next request's.
	hasBody := h.contentLength > 0
	answer := func(e *routeError, tenant string) bool {
		status = e.status
		closeConn := hasBody || h.close
		fc.linger = hasBody
		ok := fc.writeRouterError(e.status, e.code, e.msg, tenant, e.retryAfter, closeConn)
		_, _ = fc.br.Discard(h.size) // the request is answered (tenant may point into it: written first)
		return ok && !closeConn
	}
	if h.size > cfg.MaxHeaderBytes {
		return answer(errHeadersTooLarge, "")
	}
	if h.contentLength > cfg.MaxBodyBytes {
		return answer(errBodyTooLarge, "")
	}
	ex, err := p.extract.extract(extractInput{tenantHeader: h.tenant, authorization: h.auth, host: h.host, path: path, remoteAddr: fc.remoteAddr})
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
	defer entry.Leave()
	tier, target = string(route.Tier), route.Target

	req := &fc.req
	*req = fwdReq{tenant: tenant, route: route, service: t.Service, contentLength: h.contentLength,
		head: h.method == http.MethodHead, clientClose: h.close}
	req.idempotent, req.replayable = fastIdempotency(h)
	fc.buildOutHead(h, route, ex.StripPrefix)
	_, _ = fc.br.Discard(h.size)
	status, keep = fc.forward(req)
	if req.bodyRead {
		done.bytesIn = req.contentLength
	}
	return keep && !req.clientClose
}

// fastIdempotency applies the retry rules (selection.go) to a parsed head.
func fastIdempotency(h *reqHead) (idempotent, replayable bool) {
	key := false
	for _, f := range h.fields {
		if equalFold(f.name, "idempotency-key") || equalFold(f.name, "x-idempotency-key") {
			key = true
			break
		}
	}
	idempotent = idempotentMethod(h.method) || key
	replayable = (safeMethod(h.method) || key) && h.contentLength <= 0
	return idempotent, replayable
}

// buildOutHead writes the request head to send to the backend into fc.out:
// the client's fields minus hop-by-hop ones and every router-owned one
// (X-Tenant-*, Forwarded, X-Forwarded-*, in any spelling), then the
// router's own. The same rewrite as Proxy.rewrite.
func (fc *frontConn) buildOutHead(h *reqHead, route catalog.Route, strip string) {
	keepID, dropID := fc.p.obs.fastRequestID(h, &fc.obs.done)
	b := fc.out[:0]
	b = append(b, h.method...)
	b = append(b, ' ')
	if strip != "" {
		rest := h.target[len(strip):]
		if rest == "" || rest[0] != '/' {
			b = append(b, '/')
		}
		b = append(b, rest...)
	} else {
		b = append(b, h.target...)
	}
	b = append(b, " HTTP/1.1\r\n"...)
	for _, f := range h.fields {
		if hopByHopRequest(f.name) || routerOwned(f.name) || dropID && isRequestIDField(f.name) {
			continue
		}
		b = append(b, f.name...)
		b = append(b, ": "...)
		b = append(b, f.value...)
		b = append(b, "\r\n"...)
	}
	if h.contentLength < 0 && (h.method == http.MethodPost || h.method == http.MethodPut || h.method == http.MethodPatch) {
		b = append(b, "Content-Length: 0\r\n"...)
	}
	b = append(b, HeaderTenantID+": "...)
	b = append(b, route.ID...)
	b = append(b, "\r\n"+HeaderTenantTier+": "...)
	b = append(b, route.Tier...)
	b = append(b, "\r\n"+HeaderTenantTarget+": "...)
	b = append(b, route.Target...)
	b = append(b, "\r\n"+HeaderTenantEpoch+": "...)
	b = strconv.AppendUint(b, route.Epoch, 10)
	b = append(b, "\r\n"...)
	b = fc.p.obs.appendRequestIDField(b, &fc.obs.done, keepID)
	b = append(b, "X-Forwarded-For: "...)
	b = append(b, fc.clientIP...)
	b = append(b, "\r\nX-Forwarded-Host: "...)
	b = append(b, h.host...)
	b = append(b, "\r\nX-Forwarded-Proto: http\r\n\r\n"...)
	fc.out = b
}

// forward sends the request to a backend instance and relays the answer.
// It returns the status the client got and whether the client connection
// can be reused.
func (fc *frontConn) forward(req *fwdReq) (int, bool) {
	p := fc.p
	tr := p.fastTransport
	pl := p.upstreams.pool(req.service)
	tk, err := pl.pick(p.upstreams, req.tenant, nil)
	if err != nil {
		return fc.failed(req, err)
	}
	fresh, otherTried := false, false
	for attempt := 0; ; attempt++ {
		fc.obs.done.instance = tk.up.addr
		c, err := tr.getConn(context.Background(), tk.up.addr, fresh, false)
		if err != nil {
			tk.report(err)
			if isConnectError(err) && req.idempotent && !otherTried {
				otherTried = true
				p.metrics.retries.Inc()
				if tk2, err2 := pl.pick(p.upstreams, req.tenant, tk.up); err2 == nil {
					tk = tk2
					continue
				}
			}
			return fc.failed(req, err)
		}
		st, keep, retry, err := fc.exchange(tr, c, req)
		if errors.Is(err, errServerClosedIdle) {
			attempt-- // dropped before use: take the next one
			continue
		}
		if retry && attempt+1 < maxUpstreamAttempts {
			fresh = true // the pool may hold more connections the backend closed
			continue
		}
		if err != nil {
			tk.report(err)
			if st == 0 {
				return fc.failed(req, err)
			}
			return st, false
		}
		tk.report(statusOutcome(st))
		return st, keep
	}
}

// How often the fast path checks that its client is still there while it
// waits for the backend: it reads nothing from the client meanwhile, so a
// client hanging up is otherwise noticed only when the backend sends more.
// Waiting for the head (usually short) it looks often; during a response
// stream gone quiet (SSE may idle for minutes) a little less.
const (
	headCheckInterval   = 250 * time.Millisecond
	clientCheckInterval = 500 * time.Millisecond
)

// waitBackend waits until the backend connection has more of the response.
// Every clientCheckInterval of quiet it checks the client; a client that
// hung up ends the relay (the backend connection is closed, the request
// leaves the in-flight count).
func (fc *frontConn) waitBackend() error {
	c := fc.x.c
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(clientCheckInterval))
		_, err := c.br.Peek(1)
		if err == nil {
			_ = c.conn.SetReadDeadline(time.Time{})
			return nil
		}
		if !isTimeout(err) {
			return err
		}
		if fc.clientGone() {
			return errClientGone
		}
	}
}

// clientGone reports whether the client closed or reset its connection
// (a non-consuming, non-blocking peek at its socket).
func (fc *frontConn) clientGone() bool {
	sc, ok := fc.conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	_ = fc.conn.SetReadDeadline(time.Time{}) // an expired wait deadline would refuse the peek
	gone := false
	_ = rc.Read(func(fd uintptr) bool {
		gone = peerGone(fd)
		return true
	})
	return gone
}

// exchange does one request/response on c. st is the status relayed to the
// client (0 if nothing was written to it, so the caller answers with an
// error); retry says the request never reached the backend's application
// and may be sent again on a fresh connection.
func (fc *frontConn) exchange(tr *syncTransport, c *upConn, req *fwdReq) (st int, keep, retry bool, err error) {
	start := time.Now()
	c.limit = noLimit
	x := &fc.x
	*x = exchangeState{tr: tr, c: c, req: req, first: true}
	var waitErr error
	if c.raw == nil {
		if c.reused && !c.alive() {
			c.close()
			return 0, false, false, errServerClosedIdle
		}
		fc.send()
	} else {
		// One step checks a reused connection, sends the request and
		// waits until the answer can be read: the poller is armed before
		// the request goes out, so no read is tried before the backend
		// can have answered (Go's usual read-then-wait costs a system call
		// that always finds nothing).
		if fc.sendThenWait == nil {
			fc.sendThenWait = fc.sendStep
		}
		waitErr = c.raw.Read(fc.sendThenWait)
		if x.stale {
			c.close()
			return 0, false, false, errServerClosedIdle
		}
	}
	bodyErr, werr := x.bodyErr, x.werr
	if bodyErr != nil && c.werr == nil {
		// The client's body stopped short or stalled: the backend
		// exchange ends here (forward answers 408, or nobody).
		c.close()
		return 0, false, false, bodyErr
	}
	if werr != nil {
		if c.reused && req.replayable {
			c.close()
			return 0, false, true, werr
		}
		if c.nwritten == 0 {
			c.close()
			return 0, false, false, werr
		}
		// The backend may have answered early and closed; relay that.
	}
	// The response head.
	cw := fc.writer()
	defer fc.putWriter(cw)
	interim := false
	for {
		n, err := 0, waitErr
		waitErr = nil
		if err == nil {
			n, err = readUpstreamHead(c.br)
			if errors.Is(err, errResponseHeadTooLarge) {
				n, err = c.readBigHead()
			}
		}
		if isTimeout(err) && c.br.Buffered() == 0 {
			// A quiet backend: keep waiting while the client is there.
			if err = fc.awaitHead(); err == nil {
				continue
			}
		}
		if err != nil {
			partial := c.br.Buffered() > 0 || interim
			c.close()
			if c.reused && req.replayable && !isTimeout(err) && !partial && !errors.Is(err, errClientGone) {
				return 0, false, true, err
			}
			return 0, false, false, mapReadErr(err)
		}
		buf, _ := c.br.Peek(n)
		if err := parseResponseHead(buf, &fc.resp); err != nil {
			c.close()
			return 0, false, false, err
		}
		if s := fc.resp.status; s >= 100 && s <= 199 {
			if s == http.StatusSwitchingProtocols {
				c.close()
				return 0, false, false, errBadResponseHead // not asked for
			}
			// Interim responses (103 Early Hints) go to the client as they are.
			writeResponseHead(cw, &fc.resp, false, false)
			_, _ = c.br.Discard(n)
			interim = true
			if err := cw.Flush(); err != nil {
				c.close()
				return s, false, false, errClientWrite
			}
			continue
		}
		_, _ = c.br.Discard(n)
		break
	}
	_ = c.conn.SetReadDeadline(time.Time{})
	r := &fc.resp
	fc.obs.done.upstream = time.Since(start)
	fc.upstreamObserver(string(req.route.Tier), req.route.Target).Observe(fc.obs.done.upstream.Seconds())

	// Framing of what the client gets.
	bodiless := req.head || r.status == http.StatusNoContent || r.status == http.StatusNotModified
	untilClose := !bodiless && r.contentLength < 0 && !r.chunked
	closeClient := untilClose || req.clientClose || fc.s.closing.Load() || werr != nil
	if werr != nil && req.contentLength > 0 {
		fc.linger = true // the backend stopped reading the body: the rest is unread
	}
	writeResponseHead(cw, r, closeClient, true)
	bodyStart := fc.obs.out.n + int64(cw.Buffered())

	var copyErr error
	switch {
	case bodiless:
	case r.contentLength >= 0:
		copyErr = relayN(cw, c.br, r.contentLength, fc.waitBackendFn)
	case r.chunked:
		copyErr = relayChunked(cw, c.br, fc.waitBackendFn)
	default:
		copyErr = relayN(cw, c.br, -1, fc.waitBackendFn)
		r.close = true // the body ends with the connection
	}
	fc.obs.done.bytesOut = fc.obs.out.n + int64(cw.Buffered()) - bodyStart
	if copyErr != nil {
		c.close()
		if errors.Is(copyErr, errClientGone) || errors.Is(copyErr, errClientWrite) {
			return 499, false, false, copyErr
		}
		_ = cw.Flush()
		return r.status, false, false, copyErr
	}
	if err := cw.Flush(); err != nil {
		closeClient = true
	}
	if r.close || werr != nil {
		c.noReuse = true
	}
	c.release(nil, true)
	return r.status, !closeClient, false, nil
}

// exchangeState is one exchange's progress, kept in the connection so the
// poller callback needs no allocation.
type exchangeState struct {
	tr           *syncTransport
	c            *upConn
	req          *fwdReq
	first, stale bool
	headDeadline time.Time // the backend's head must have arrived by then (zero: no limit)
	bodyErr      error     // reading the client's body failed
	werr         error     // writing to the backend failed
}

// sendStep is the callback of the backend connection's RawRead: the first
// call checks a reused connection (one non-blocking read: a backend that
// closed it, or sent bytes nobody asked for, makes it unusable) and sends
// the request; returning false then waits for the answer to be readable.
func (fc *frontConn) sendStep(fd uintptr) bool {
	x := &fc.x
	if !x.first {
		return true
	}
	x.first = false
	if x.c.reused && !fdIdleAndOpen(fd) {
		x.stale = true
		return true
	}
	fc.send()
	return x.werr != nil || x.bodyErr != nil
}

// send writes the request head and body to the backend, then arms the
// header timeout.
func (fc *frontConn) send() {
	x := &fc.x
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(x.c)
	_, _ = bw.Write(fc.out)
	if x.req.contentLength > 0 {
		// A backend that stops reading the body must not hold the
		// request forever: each write gets the header timeout.
		x.c.writeTimeout = x.tr.headerTimeout
		if err := relayN(bw, fc.br, x.req.contentLength, fc.waitBodyFn); err != nil {
			x.bodyErr = bodyReadError(err)
		}
		x.req.bodyRead = x.bodyErr == nil
	}
	x.werr = bw.Flush()
	bw.Reset(nil)
	writerPool.Put(bw)
	if x.c.writeTimeout > 0 {
		x.c.writeTimeout = 0
		_ = x.c.conn.SetWriteDeadline(time.Time{})
	}
	// The first wait for the head is at most headCheckInterval; then
	// awaitHead checks on the client between waits.
	now := time.Now()
	wait := headCheckInterval
	if x.tr.headerTimeout > 0 {
		x.headDeadline = now.Add(x.tr.headerTimeout)
		wait = min(wait, x.tr.headerTimeout)
	}
	_ = x.c.conn.SetReadDeadline(now.Add(wait))
}

// awaitHead waits for the backend's response head to start arriving, until
// the head deadline, checking every headCheckInterval that the client is
// still there: a client that hangs up ends the exchange (the backend
// connection is closed, which cancels the backend's work) within that.
func (fc *frontConn) awaitHead() error {
	c, deadline := fc.x.c, fc.x.headDeadline
	for {
		if fc.clientGone() {
			return errClientGone
		}
		now := time.Now()
		if !deadline.IsZero() && !now.Before(deadline) {
			return headerTimeoutError{}
		}
		next := now.Add(headCheckInterval)
		if !deadline.IsZero() && deadline.Before(next) {
			next = deadline
		}
		_ = c.conn.SetReadDeadline(next)
		_, err := c.br.Peek(1)
		if err == nil {
			_ = c.conn.SetReadDeadline(deadline) // the rest of the head: the head deadline
			return nil
		}
		if !isTimeout(err) {
			return err
		}
	}
}

// waitBody waits for more of the client's request body: the body idle
// timeout from now, and never past the body deadline.
func (fc *frontConn) waitBody() error {
	d := time.Now().Add(fc.p.cfg.BodyIdleTimeout)
	if fc.bodyDeadline.Before(d) {
		d = fc.bodyDeadline
	}
	_ = fc.conn.SetReadDeadline(d)
	_, err := fc.br.Peek(1)
	return bodyReadError(err)
}

// readUpstreamHead waits for a complete response head in br and returns
// its length.
func readUpstreamHead(br *bufio.Reader) (int, error) {
	n, err := bufferHead(br, nil)
	if errors.Is(err, errHeadFull) {
		return 0, errResponseHeadTooLarge
	}
	return n, err
}

// maxBigResponseHead is the largest response head the fast path takes;
// heads bigger than the pooled read buffer (32 KiB) are read into a buffer
// of this size, once, and the connection is not reused.
const maxBigResponseHead = 1 << 20

// readBigHead rereads a response head that did not fit the pooled buffer
// into a bigger one that replaces it for the rest of the exchange.
func (c *upConn) readBigHead() (int, error) {
	buffered, _ := c.br.Peek(c.br.Buffered())
	big := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(buffered)), c), maxBigResponseHead)
	c.br.Reset(nil)
	if c.br.Size() == bufSize {
		readerPool.Put(c.br)
	}
	c.br = big
	c.noReuse = true // never pool the big reader
	return readUpstreamHead(big)
}

// writeResponseHead writes a response head for the client: the backend's
// status and end-to-end fields, the router's framing, Date if missing.
// Interim (1xx) heads are not final and get no framing.
func writeResponseHead(w *bufio.Writer, r *respHead, closeConn, final bool) {
	w.WriteString("HTTP/1.1 ")
	w.WriteString(statusText(r.status))
	w.WriteByte(' ')
	w.WriteString(r.reason)
	w.WriteString("\r\n")
	for _, f := range r.fields {
		w.WriteString(f.name)
		w.WriteString(": ")
		w.WriteString(f.value)
		w.WriteString("\r\n")
	}
	if final {
		if !r.hasDate {
			w.WriteString("Date: ")
			w.WriteString(httpDate())
			w.WriteString("\r\n")
		}
		switch {
		case r.status == http.StatusNoContent || r.status == http.StatusNotModified:
		case r.chunked:
			w.WriteString("Transfer-Encoding: chunked\r\n")
		case r.contentLength >= 0:
			w.WriteString("Content-Length: ")
			w.Write(strconv.AppendInt(w.AvailableBuffer(), r.contentLength, 10))
			w.WriteString("\r\n")
		}
		if closeConn {
			w.WriteString("Connection: close\r\n")
		}
	}
	w.WriteString("\r\n")
}

// relayN copies n bytes (n < 0: up to end of file) from src to dst,
// flushing dst whenever src has nothing more buffered, so a slow stream
// reaches its reader as it comes. wait, if not nil, waits for src to have
// more (see frontConn.waitBackend).
func relayN(dst *bufio.Writer, src *bufio.Reader, n int64, wait func() error) error {
	for n != 0 {
		if src.Buffered() == 0 {
			if err := dst.Flush(); err != nil {
				return errClientWrite
			}
			var err error
			if wait != nil {
				err = wait()
			} else {
				_, err = src.Peek(1)
			}
			if err != nil {
				if err == io.EOF {
					if n < 0 {
						return nil
					}
					err = io.ErrUnexpectedEOF
				}
				return err
			}
		}
		k := int64(src.Buffered())
		if n > 0 && k > n {
			k = n
		}
		b, _ := src.Peek(int(k))
		if _, err := dst.Write(b); err != nil {
			return errClientWrite
		}
		_, _ = src.Discard(int(k))
		if n > 0 {
			n -= k
		}
	}
	return nil
}

// failed answers a request that was not relayed (a client fault, a
// breaker, or the backend), as Proxy.errorHandler does; the status 499
// means nobody was there to answer.
func (fc *frontConn) failed(req *fwdReq, err error) (int, bool) {
	e := answerFor(err)
	if e == nil {
		return 499, false
	}
	if e == errUpstreamFailed {
		fc.p.log.Warn("upstream request failed", "err", err, "tier", string(req.route.Tier))
	}
	closeConn := req.clientClose || fc.s.closing.Load() || closesConnection(e)
	if req.contentLength > 0 && !req.bodyRead {
		// The body's bytes are still on the connection: they must never
		// be read as a request.
		closeConn, fc.linger = true, true
	}
	ok := fc.writeRouterError(e.status, e.code, e.msg, req.tenant, e.retryAfter, closeConn)
	return e.status, ok && !closeConn
}

// writeRouterError answers with the router's JSON error body (the same as
// writeError). It reports whether the write succeeded.
func (fc *frontConn) writeRouterError(status int, code, msg, tenant string, retryAfter int, closeConn bool) bool {
	body, _ := json.Marshal(apiError{Error: code, Message: msg, Tenant: tenant})
	body = append(body, '\n')
	w := fc.writer()
	defer fc.putWriter(w)
	w.WriteString("HTTP/1.1 ")
	w.WriteString(statusText(status))
	w.WriteByte(' ')
	w.WriteString(http.StatusText(status))
	w.WriteString("\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nDate: ")
	w.WriteString(httpDate())
	if retryAfter > 0 {
		w.WriteString("\r\nRetry-After: ")
		w.WriteString(strconv.Itoa(retryAfter))
	}
	w.WriteString("\r\nContent-Length: ")
	w.WriteString(strconv.Itoa(len(body)))
	if closeConn {
		w.WriteString("\r\nConnection: close")
	}
	w.WriteString("\r\n\r\n")
	w.Write(body)
	return w.Flush() == nil
}

var frontWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

func (fc *frontConn) writer() *bufio.Writer {
	w := frontWriters.Get().(*bufio.Writer)
	w.Reset(fc.obs.out.wrap(fc.io)) // counted: the response body's size (exchange)
	return w
}

func (fc *frontConn) putWriter(w *bufio.Writer) {
	w.Reset(nil)
	frontWriters.Put(w)
}

// httpDate is the current time in the Date header's format, rendered once
// a second.
func httpDate() string {
	now := time.Now().Unix()
	if d := cachedDate.Load(); d != nil && d.sec == now {
		return d.s
	}
	d := &dateString{sec: now, s: time.Unix(now, 0).UTC().Format(http.TimeFormat)}
	cachedDate.Store(d)
	return d.s
}

type dateString struct {
	sec int64
	s   string
}

var cachedDate atomic.Pointer[dateString]
