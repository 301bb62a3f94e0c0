package router

import (
	"io"
	"net/http"
	"time"

	"github.com/switchyard/switchyard/router/wire"
)

// bodyReader is a client's request body on the net/http engine: the size
// limit, the body idle and total timeouts, and its errors classified as the
// client's (classify.go), so a broken or stalled body is answered 400 or
// 408 and never counts against a backend. The fast path does the same in
// frontConn.waitBody.
type bodyReader struct {
	rc       io.ReadCloser
	ctl      *http.ResponseController
	idle     time.Duration
	deadline time.Time
	ended    bool
	n        int64 // bytes read (metering)
}

var _ io.ReadCloser = (*bodyReader)(nil)

// newBodyReader wraps the body of the request answered through w (the
// server's own writer: the size limit tells it to close gently) and rec,
// and arms the first deadline.
func (p *Proxy) newBodyReader(w http.ResponseWriter, rec *statusRecorder, body io.ReadCloser) *bodyReader {
	b := &bodyReader{
		rc:       http.MaxBytesReader(w, body, p.cfg.MaxBodyBytes),
		ctl:      http.NewResponseController(rec),
		idle:     p.cfg.BodyIdleTimeout,
		deadline: time.Now().Add(p.cfg.BodyTimeout),
	}
	b.arm()
	return b
}

// arm sets the connection's read deadline: the idle timeout from now, never
// past the body's deadline.
func (b *bodyReader) arm() {
	d := time.Now().Add(b.idle)
	if b.deadline.Before(d) {
		d = b.deadline
	}
	_ = b.ctl.SetReadDeadline(d)
}

func (b *bodyReader) Read(buf []byte) (int, error) {
	if b.ended {
		return 0, io.EOF
	}
	b.arm()
	n, err := b.rc.Read(buf)
	b.n += int64(n)
	if err == io.EOF {
		// net/http's own read of the connection (which notices a client
		// hanging up) must not inherit the body's deadline. After any
		// other error the deadline stays: net/http's attempt to read the
		// rest of a stalled body must fail at once, closing the connection.
		_ = b.ctl.SetReadDeadline(time.Time{})
		b.ended = true
	}
	if err != nil {
		return n, wire.BodyReadError(err)
	}
	return n, nil
}

func (b *bodyReader) Close() error { return b.rc.Close() }
