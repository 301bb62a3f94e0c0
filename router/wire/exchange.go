package wire

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The fast path's exchange with a backend: send the request head the
// handler built (and the client's body), wait for the answer while
// checking the client is still there, relay the response head and body
// with their framing checked, and keep or drop the backend connection.

// Request is what an exchange needs of the request: the head to send and
// how the client's side is framed. A handler keeps one per connection.
type Request struct {
	// Head is the request head to send to the backend, blank line included.
	Head []byte
	// ContentLength is the client's body length (< 0: no body).
	ContentLength int64
	// HeadMethod: a HEAD request, whose response has no body.
	HeadMethod bool
	// Replayable: bodiless and safe to send again on a fresh connection.
	Replayable bool
	// ClientClose: the client asked to close after this request.
	ClientClose bool
	// BodyRead is set once the client's body has been read whole.
	BodyRead bool
	// OnHead, if not nil, gets the time from sending the request to its
	// response head.
	OnHead func(time.Duration)
	// BeforeFlush, if not nil, is called once the whole response is
	// relayed into the client's write buffer, just before its last flush:
	// work that must be over before the client can see the response end
	// (the router counts the request out of flight there).
	BeforeFlush func()
	// BytesOut is set by Forward: the response body's bytes written to the
	// client (as sent: chunk framing included).
	BytesOut int64
}

const maxUpstreamAttempts = 3

// Forward does the request's exchange with the backend at addr through
// tr, on a pooled connection, or on a fresh one when a reused connection
// turns out stale, and relays the answer. status is what the client got
// (0: nothing was written to it, the caller answers err); keep says the
// client connection can carry another request. err is why the exchange
// failed (a dial error is tr's dialer's, so a caller can tell it apart).
func (fc *Conn) Forward(tr *Transport, addr string, req *Request) (status int, keep bool, err error) {
	fresh := false
	for attempt := 0; ; attempt++ {
		c, err := tr.getConn(context.Background(), addr, fresh, false)
		if err != nil {
			return 0, false, err
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
		return st, keep, err
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
func (fc *Conn) waitBackend() error {
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
			return ErrClientGone
		}
	}
}

// clientGone reports whether the client closed or reset its connection
// (a non-consuming, non-blocking peek at its socket; over TLS, where a
// close_notify alert precedes the end of file, the socket's TCP state).
func (fc *Conn) clientGone() bool {
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
		gone = peerGone(fd) || fc.tc != nil && peerClosed(fd)
		return true
	})
	return gone
}

// exchange does one request/response on c. st is the status relayed to the
// client (0 if nothing was written to it, so the caller answers with an
// error); retry says the request never reached the backend's application
// and may be sent again on a fresh connection.
func (fc *Conn) exchange(tr *Transport, c *upConn, req *Request) (st int, keep, retry bool, err error) {
	start := time.Now()
	waitErr, retry, err := fc.sendRequest(tr, c, req)
	if err != nil {
		return 0, false, retry, err
	}
	cw := fc.writer()
	defer fc.putWriter(cw)
	if st, retry, err := fc.responseHead(c, req, cw, waitErr); err != nil {
		return st, false, retry, err
	}
	_ = c.conn.SetReadDeadline(time.Time{})
	if req.OnHead != nil {
		req.OnHead(time.Since(start))
	}
	st, keep, err = fc.relayResponse(c, req, cw)
	return st, keep, false, err
}

// sendRequest sends the request on c and waits until the answer can be
// read (waitErr: that wait failed). On err c is closed; retry says the
// request may be sent again on a fresh connection. A failed write to the
// backend is no error when some of the request went out: the backend may
// have answered early and closed (fc.x.werr keeps it).
func (fc *Conn) sendRequest(tr *Transport, c *upConn, req *Request) (waitErr error, retry bool, err error) {
	c.limit = noLimit
	x := &fc.x
	*x = exchangeState{tr: tr, c: c, req: req, first: true}
	if c.raw == nil {
		if c.reused && !c.alive() {
			c.close()
			return nil, false, errServerClosedIdle
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
			return nil, false, errServerClosedIdle
		}
	}
	switch {
	case x.bodyErr != nil && c.werr == nil:
		// The client's body stopped short or stalled: the backend
		// exchange ends here (the handler answers 408, or nobody).
		c.close()
		return nil, false, x.bodyErr
	case x.werr != nil && c.reused && req.Replayable:
		c.close()
		return nil, true, x.werr
	case x.werr != nil && c.nwritten == 0:
		c.close()
		return nil, false, x.werr
	}
	return waitErr, false, nil
}

// responseHead reads the backend's final response head into fc.resp,
// passing interim (1xx) ones to the client through cw. On err c is closed
// and st is the interim status the client got, if any; retry as for
// exchange.
func (fc *Conn) responseHead(c *upConn, req *Request, cw *bufio.Writer, waitErr error) (st int, retry bool, err error) {
	interim := false
	for {
		n, err := 0, waitErr
		waitErr = nil
		if err == nil {
			n, err = readUpstreamHead(c.br)
			if errors.Is(err, ErrResponseHeadTooLarge) {
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
			if c.reused && req.Replayable && !isTimeout(err) && !partial && !errors.Is(err, ErrClientGone) {
				return 0, true, err
			}
			return 0, false, mapReadErr(err)
		}
		buf, _ := c.br.Peek(n)
		if err := parseResponseHead(buf, &fc.resp); err != nil {
			c.close()
			return 0, false, err
		}
		s := fc.resp.status
		if s < 100 || s > 199 {
			_, _ = c.br.Discard(n)
			return 0, false, nil
		}
		if s == http.StatusSwitchingProtocols {
			c.close()
			return 0, false, ErrBadResponseHead // not asked for
		}
		// Interim responses (103 Early Hints) go to the client as they are.
		writeResponseHead(cw, &fc.resp, false, false)
		cw.WriteString("\r\n")
		_, _ = c.br.Discard(n)
		interim = true
		if err := cw.Flush(); err != nil {
			c.close()
			return s, false, ErrClientWrite
		}
	}
}

// relayResponse relays the response whose head is in fc.resp, with the
// framing the client gets, and gives c back to the pool or closes it.
func (fc *Conn) relayResponse(c *upConn, req *Request, cw *bufio.Writer) (st int, keep bool, err error) {
	r, werr := &fc.resp, fc.x.werr
	bodiless := req.HeadMethod || r.status == http.StatusNoContent || r.status == http.StatusNotModified
	untilClose := !bodiless && r.contentLength < 0 && !r.chunked
	closeClient := untilClose || req.ClientClose || fc.s.closing.Load() || werr != nil
	if werr != nil && req.ContentLength > 0 {
		fc.linger = true // the backend stopped reading the body: the rest is unread
	}
	writeResponseHead(cw, r, closeClient, true)
	cw.WriteString(fc.s.fields)
	cw.WriteString("\r\n")
	bodyStart := fc.written() + int64(cw.Buffered()) // the head is still in cw
	defer func() { req.BytesOut = fc.written() + int64(cw.Buffered()) - bodyStart }()

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
	if copyErr != nil {
		c.close()
		if errors.Is(copyErr, ErrClientGone) || errors.Is(copyErr, ErrClientWrite) {
			return 499, false, copyErr
		}
		_ = cw.Flush()
		return r.status, false, copyErr
	}
	if req.BeforeFlush != nil {
		req.BeforeFlush()
	}
	if err := cw.Flush(); err != nil {
		closeClient = true
	}
	if r.close || werr != nil {
		c.noReuse = true
	}
	c.release(nil, true)
	return r.status, !closeClient, nil
}

// exchangeState is one exchange's progress, kept in the connection so the
// poller callback needs no allocation.
type exchangeState struct {
	tr           *Transport
	c            *upConn
	req          *Request
	first, stale bool
	headDeadline time.Time // the backend's head must have arrived by then (zero: no limit)
	bodyErr      error     // reading the client's body failed
	werr         error     // writing to the backend failed
}

// sendStep is the callback of the backend connection's RawRead: the first
// call checks a reused connection (one non-blocking read: a backend that
// closed it, or sent bytes nobody asked for, makes it unusable) and sends
// the request; returning false then waits for the answer to be readable.
func (fc *Conn) sendStep(fd uintptr) bool {
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
func (fc *Conn) send() {
	x := &fc.x
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(x.c)
	_, _ = bw.Write(x.req.Head)
	if x.req.ContentLength > 0 {
		// A backend that stops reading the body must not hold the
		// request forever: each write gets the header timeout.
		x.c.writeTimeout = x.tr.headerTimeout
		if err := relayN(bw, fc.br, x.req.ContentLength, fc.waitBodyFn); err != nil {
			x.bodyErr = BodyReadError(err)
		}
		x.req.BodyRead = x.bodyErr == nil
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
func (fc *Conn) awaitHead() error {
	c, deadline := fc.x.c, fc.x.headDeadline
	for {
		if fc.clientGone() {
			return ErrClientGone
		}
		now := time.Now()
		if !deadline.IsZero() && !now.Before(deadline) {
			return ErrHeaderTimeout
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
func (fc *Conn) waitBody() error {
	d := time.Now().Add(fc.s.cfg.BodyIdleTimeout)
	if fc.bodyDeadline.Before(d) {
		d = fc.bodyDeadline
	}
	_ = fc.conn.SetReadDeadline(d)
	_, err := fc.br.Peek(1)
	return BodyReadError(err)
}

// readUpstreamHead waits for a complete response head in br and returns
// its length.
func readUpstreamHead(br *bufio.Reader) (int, error) {
	n, err := bufferHead(br, nil)
	if errors.Is(err, errHeadFull) {
		return 0, ErrResponseHeadTooLarge
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

// writeResponseHead writes a response head for the client, all but its
// blank line: the backend's status and end-to-end fields, the router's
// framing, Date if missing. Interim (1xx) heads are not final and get no
// framing.
func writeResponseHead(w *bufio.Writer, r *respHead, closeConn, final bool) {
	w.WriteString("HTTP/1.1 ")
	w.WriteString(StatusText(r.status))
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
}

// relayN copies n bytes (n < 0: up to end of file) from src to dst,
// flushing dst whenever src has nothing more buffered, so a slow stream
// reaches its reader as it comes. wait, if not nil, waits for src to have
// more (see Conn.waitBackend).
func relayN(dst *bufio.Writer, src *bufio.Reader, n int64, wait func() error) error {
	for n != 0 {
		if src.Buffered() == 0 {
			if err := dst.Flush(); err != nil {
				return ErrClientWrite
			}
			var err error
			if wait != nil {
				err = wait()
			} else {
				_, err = src.Peek(1)
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
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
			return ErrClientWrite
		}
		_, _ = src.Discard(int(k))
		if n > 0 {
			n -= k
		}
	}
	return nil
}

// WriteJSON answers the request with a JSON body the caller built (an
// error of its own; never cached). retryAfter > 0 adds Retry-After. It
// reports whether the write succeeded.
func (fc *Conn) WriteJSON(status int, body []byte, retryAfter int, closeConn bool) bool {
	w := fc.writer()
	defer fc.putWriter(w)
	w.WriteString("HTTP/1.1 ")
	w.WriteString(StatusText(status))
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
	w.WriteString("\r\n")
	w.WriteString(fc.s.fields)
	w.WriteString("\r\n")
	w.Write(body)
	return w.Flush() == nil
}

var frontWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

func (fc *Conn) writer() *bufio.Writer {
	w := frontWriters.Get().(*bufio.Writer)
	fc.out.w = fc.io
	w.Reset(&fc.out) // counted: the response body's size (relayResponse)
	return w
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// written is how many bytes went to the client through writer so far.
func (fc *Conn) written() int64 { return fc.out.n }

func (fc *Conn) putWriter(w *bufio.Writer) {
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
