package wire

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
)

// The failures the wire reports, for its consumer to classify (who caused
// them) and answer. The client's side first.
var (
	// ErrBodyMalformed: the request body's framing is broken (chunked).
	ErrBodyMalformed = errors.New("the request body is malformed")
	// ErrBodyStalled: the body sent nothing for the body idle timeout, or
	// did not finish within the body timeout.
	ErrBodyStalled = errors.New("the request body did not arrive in time")
	// ErrBodyTooLarge: the body is over the limit.
	ErrBodyTooLarge = errors.New("the request body exceeds the router's limit")
	// ErrClientGone: the client closed or reset its connection.
	ErrClientGone = errors.New("the client closed its connection")
	// ErrClientWrite: writing the answer to the client failed.
	ErrClientWrite = errors.New("writing to the client failed")
	// ErrHeadTimeout: the request head did not arrive in time.
	ErrHeadTimeout = errors.New("the request head did not arrive in time")
	// ErrAmbiguousFraming: a request with both Content-Length and
	// Transfer-Encoding (refused, RFC 9112 §6.3).
	ErrAmbiguousFraming = errors.New("the request has both Content-Length and Transfer-Encoding")
	// ErrObsFold: a request header line is folded (refused, RFC 9112 §5.2).
	ErrObsFold = errors.New("a request header line is folded")
)

// The backend's side.
var (
	// ErrResponseHeadTooLarge: the backend's response head is over the limit.
	ErrResponseHeadTooLarge = errors.New("backend response headers exceed the limit")
	// ErrBadResponseHead: the backend broke the protocol in its head.
	ErrBadResponseHead = errors.New("backend sent a malformed response head")
	// ErrBadChunk: the backend broke the chunked framing of its body.
	ErrBadChunk = errors.New("backend sent malformed chunked framing")
	// ErrHeaderTimeout: the backend did not send its response head within
	// the header timeout. It is a net.Error whose Timeout() is true.
	ErrHeaderTimeout error = headerTimeoutError{}
)

// headerTimeoutError is ErrHeaderTimeout's type.
type headerTimeoutError struct{}

func (headerTimeoutError) Error() string   { return "net/http: timeout awaiting response headers" }
func (headerTimeoutError) Timeout() bool   { return true }
func (headerTimeoutError) Temporary() bool { return true }

// ClientBodyError is a failure reading a client's request body: Kind is
// one of ErrBodyMalformed, ErrBodyStalled, ErrClientGone or ErrBodyTooLarge.
type ClientBodyError struct {
	Kind error
	Err  error // the reader's own error
}

func (e *ClientBodyError) Error() string { return e.Kind.Error() + ": " + e.Err.Error() }

// Unwrap exposes both the kind and the reader's error to errors.Is/As.
func (e *ClientBodyError) Unwrap() []error { return []error{e.Kind, e.Err} }

// BodyReadError classifies an error reading a request body from the
// client (nil and io.EOF pass through) as a *ClientBodyError.
func BodyReadError(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	var cbe *ClientBodyError
	if errors.As(err, &cbe) {
		return err
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return &ClientBodyError{Kind: ErrBodyTooLarge, Err: err}
	case errors.Is(err, os.ErrDeadlineExceeded) || IsTimeout(err):
		return &ClientBodyError{Kind: ErrBodyStalled, Err: err}
	case connectionLost(err):
		return &ClientBodyError{Kind: ErrClientGone, Err: err}
	}
	return &ClientBodyError{Kind: ErrBodyMalformed, Err: err}
}

// connectionLost: the peer closed or reset the connection.
func connectionLost(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, context.Canceled)
}

// IsTimeout reports whether err is a timeout (a net.Error saying so).
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isTimeout(err error) bool { return IsTimeout(err) }

// IsConnectError reports a failure to connect (the dialer's *net.OpError,
// Op "dial", or a refused connection): the request cannot have reached
// the backend.
func IsConnectError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}
