package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
)

// Who caused a failed exchange, and what the client is told: the one place
// both engines turn an error into an answer and into breaker accounting.
//
// The rule, in the README's words: only what the backend did counts
// against it. A client's broken, stalled, oversized or abandoned body
// counts nowhere. A backend's HTTP answers (5xx included) and the failures
// of one tenant's requests on an instance (no answer in time, a connection
// dropped after the request was sent, a malformed or oversized response
// head) are that tenant's: they count against the
// (tenant, instance) breaker only. An instance's breaker, which every
// tenant shares, opens on failures to connect, and on the per-request
// failures above only when they come from different tenants one after
// another (so one tenant cannot open it alone).

// fault is who caused a failed exchange.
type fault uint8

const (
	faultNone     fault = iota // the backend answered
	faultClient                // the client: bad, stalled, oversized or abandoned body, hang-up
	faultTenant                // this tenant's request failed on the instance: timeout, dropped, malformed or oversized answer
	faultInstance              // the instance could not be reached: dial failed or refused
)

// Client-side failures of a request, on either engine.
var (
	// errBodyMalformed: the request body's framing is broken (chunked).
	errBodyMalformed = errors.New("the request body is malformed")
	// errBodyStalled: the body sent nothing for the body idle timeout, or
	// did not finish within the body timeout.
	errBodyStalled = errors.New("the request body did not arrive in time")
	// errClientGone: the client closed or reset its connection.
	errClientGone = errors.New("the client closed its connection")
	// errClientWrite: writing the answer to the client failed.
	errClientWrite = errors.New("writing to the client failed")
	// errBackendStatus marks a 502, 503 or 504 answered by the backend.
	errBackendStatus = errors.New("backend answered 502, 503 or 504")
	// errNotCounted is reported to a breaker for an outcome that is
	// neither a success nor a failure of the backend.
	errNotCounted = errors.New("outcome not counted against the backend")
)

// clientBodyError is a failure reading a client's request body: kind is one
// of errBodyMalformed, errBodyStalled, errClientGone or the body size limit.
type clientBodyError struct {
	kind error
	err  error // the reader's own error
}

func (e *clientBodyError) Error() string { return e.kind.Error() + ": " + e.err.Error() }

// Unwrap exposes both the kind and the reader's error to errors.Is/As.
func (e *clientBodyError) Unwrap() []error { return []error{e.kind, e.err} }

// bodyReadError classifies an error reading a request body from the
// client (nil and io.EOF pass through).
func bodyReadError(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var cbe *clientBodyError
	if errors.As(err, &cbe) {
		return err
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return &clientBodyError{kind: errBodyTooLargeKind, err: err}
	case errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err):
		return &clientBodyError{kind: errBodyStalled, err: err}
	case connectionLost(err):
		return &clientBodyError{kind: errClientGone, err: err}
	}
	return &clientBodyError{kind: errBodyMalformed, err: err}
}

// errBodyTooLargeKind: the body is over the router's limit.
var errBodyTooLargeKind = errors.New("the request body exceeds the router's limit")

// connectionLost: the peer closed or reset the connection.
func connectionLost(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, context.Canceled)
}

// classify says who caused err, the failure of an exchange with a backend.
func classify(err error) fault {
	switch {
	case err == nil:
		return faultNone
	case errors.Is(err, errBackendStatus):
		return faultTenant
	case isClientFault(err):
		return faultClient
	case isConnectError(err):
		return faultInstance
	}
	return faultTenant
}

// withClientGone marks err, the failure of an exchange whose request
// context (ctx) has ended, as the client's: nobody waits for the answer,
// so it is not the backend's failure. Errors of the router's own choosing
// (no healthy instance, breakers open) are left as they are.
func withClientGone(ctx context.Context, err error) error {
	if ctx.Err() == nil || errors.Is(err, ErrNoHealthyBackend) || breakerOpen(err) {
		return err
	}
	return fmt.Errorf("%w: %w", errClientGone, err)
}

func isClientFault(err error) bool {
	var cbe *clientBodyError
	return errors.As(err, &cbe) || errors.Is(err, errClientGone) || errors.Is(err, errClientWrite) ||
		errors.Is(err, context.Canceled)
}

// answerFor is the router's answer to a request that failed with err (a
// client fault, a breaker, or the backend). nil means nobody is there to
// answer: the client went away (499 in metrics).
func answerFor(err error) *routeError {
	var cbe *clientBodyError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &cbe) && cbe.kind == errBodyMalformed:
		return errBadBody
	case errors.As(err, &cbe) && cbe.kind == errBodyStalled:
		return errBodyTimeout
	case errors.As(err, &tooLarge) || errors.Is(err, errBodyTooLargeKind):
		return errBodyTooLarge
	case isClientFault(err):
		return nil
	case errors.Is(err, ErrNoHealthyBackend):
		return errNoHealthyBackend
	case breakerOpen(err):
		return errBreakerOpen
	case isTimeout(err):
		return errUpstreamTimeout
	}
	return errUpstreamFailed
}

// closesConnection: after this answer the client connection cannot carry
// another request (the body's bytes are unread or broken).
func closesConnection(e *routeError) bool {
	return e == errBadBody || e == errBodyTimeout || e == errBodyTooLarge
}
