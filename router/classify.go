package router

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/switchyard/switchyard/router/wire"
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

// The router's own outcome markers, reported to breakers.
var (
	// errBackendStatus marks a 502, 503 or 504 answered by the backend.
	errBackendStatus = errors.New("backend answered 502, 503 or 504")
	// errNotCounted is reported to a breaker for an outcome that is
	// neither a success nor a failure of the backend.
	errNotCounted = errors.New("outcome not counted against the backend")
)

// classify says who caused err, the failure of an exchange with a backend.
func classify(err error) fault {
	switch {
	case err == nil:
		return faultNone
	case errors.Is(err, errBackendStatus):
		return faultTenant
	case isClientFault(err):
		return faultClient
	case wire.IsConnectError(err):
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
	return fmt.Errorf("%w: %w", wire.ErrClientGone, err)
}

func isClientFault(err error) bool {
	var cbe *wire.ClientBodyError
	return errors.As(err, &cbe) || errors.Is(err, wire.ErrClientGone) || errors.Is(err, wire.ErrClientWrite) ||
		errors.Is(err, context.Canceled)
}

// answerFor is the router's answer to a request that failed with err (a
// client fault, a breaker, or the backend). nil means nobody is there to
// answer: the client went away (499 in metrics).
func answerFor(err error) *routeError {
	var cbe *wire.ClientBodyError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.Is(err, wire.ErrHeadTimeout):
		return errHeadTimeout
	case errors.Is(err, wire.ErrAmbiguousFraming):
		return errAmbiguousFraming
	case errors.Is(err, wire.ErrObsFold):
		return errObsFold
	case errors.As(err, &cbe) && errors.Is(cbe.Kind, wire.ErrBodyMalformed):
		return errBadBody
	case errors.As(err, &cbe) && errors.Is(cbe.Kind, wire.ErrBodyStalled):
		return errBodyTimeout
	case errors.As(err, &tooLarge) || errors.Is(err, wire.ErrBodyTooLarge):
		return errBodyTooLarge
	case isClientFault(err):
		return nil
	case errors.Is(err, ErrNoHealthyBackend):
		return errNoHealthyBackend
	case breakerOpen(err):
		return errBreakerOpen
	case wire.IsTimeout(err):
		return errUpstreamTimeout
	}
	return errUpstreamFailed
}

// errHeadTimeout: the fast path's answer to a request head too slow
// (net/http's own is its 408).
var errHeadTimeout = &routeError{http.StatusRequestTimeout, "request_timeout", "the request head did not arrive in time", 0}

// closesConnection: after this answer the client connection cannot carry
// another request (the body's bytes are unread or broken).
func closesConnection(e *routeError) bool {
	return e == errBadBody || e == errBodyTimeout || e == errBodyTooLarge
}

// gRPC status codes the router answers with (google.golang.org/grpc/codes).
const (
	grpcInvalidArgument   = 3
	grpcDeadlineExceeded  = 4
	grpcNotFound          = 5
	grpcPermissionDenied  = 7
	grpcResourceExhausted = 8
	grpcUnavailable       = 14
	grpcUnauthenticated   = 16
	grpcInternal          = 13
)

// grpcByStatus is the gRPC status of each answer the router gives itself
// (answerFor and the rest of the routeErrors), by its HTTP status: a gRPC
// client gets a status it can act on, in a trailers-only response, rather
// than an HTTP error page. Unknown tenant → NOT_FOUND; a tenant's limits
// and the router's size limits → RESOURCE_EXHAUSTED; hold expired, no
// healthy instance, breaker open, lease lapsed, backend failed →
// UNAVAILABLE (a client may retry); the backend or a body too slow →
// DEADLINE_EXCEEDED.
var grpcByStatus = map[int]uint32{
	http.StatusBadRequest:                  grpcInvalidArgument,
	http.StatusUnauthorized:                grpcUnauthenticated,
	http.StatusForbidden:                   grpcPermissionDenied,
	http.StatusNotFound:                    grpcNotFound,
	http.StatusRequestTimeout:              grpcDeadlineExceeded,
	http.StatusRequestEntityTooLarge:       grpcResourceExhausted,
	http.StatusMisdirectedRequest:          grpcPermissionDenied,
	http.StatusTooManyRequests:             grpcResourceExhausted,
	http.StatusRequestHeaderFieldsTooLarge: grpcResourceExhausted,
	http.StatusBadGateway:                  grpcUnavailable,
	http.StatusServiceUnavailable:          grpcUnavailable,
	http.StatusGatewayTimeout:              grpcDeadlineExceeded,
}

// grpcStatusFor is the gRPC status of the router's answer e.
func grpcStatusFor(e *routeError) uint32 {
	if c, ok := grpcByStatus[e.status]; ok {
		return c
	}
	return grpcInternal
}
