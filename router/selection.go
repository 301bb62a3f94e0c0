package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// Errors from backend selection; they become 503 responses.
var (
	ErrNoHealthyBackend = errors.New("no healthy backend instance")
	ErrBreakerOpen      = errors.New("circuit breaker open for every backend instance")
)

// pick returns the next instance, round-robin, whose breaker lets a request
// through, skipping exclude. done must be called with the outcome.
func (p *pool) pick(exclude *upstream) (*upstream, func(error), error) {
	if p == nil {
		return nil, nil, ErrNoHealthyBackend
	}
	list := *p.instances.Load()
	n := len(list)
	if n == 0 {
		return nil, nil, ErrNoHealthyBackend
	}
	start := p.next.Add(1)
	sawCandidate := false
	for i := 0; i < n; i++ {
		up := list[(int(start)+i)%n]
		if up == exclude {
			continue
		}
		sawCandidate = true
		done, err := up.breaker.Allow()
		if err == nil {
			return up, done, nil
		}
	}
	if !sawCandidate {
		return nil, nil, ErrNoHealthyBackend
	}
	return nil, nil, ErrBreakerOpen
}

// selectingTransport picks a backend instance of the service named in the
// request URL's host, runs the request through that instance's breaker, and
// retries an idempotent request once on another instance when the
// connection to the first failed before anything was sent.
type selectingTransport struct {
	upstreams *Upstreams
	next      http.RoundTripper
	retries   prometheus.Counter
}

var _ http.RoundTripper = (*selectingTransport)(nil)

func (t *selectingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	service := req.URL.Host
	p := t.upstreams.pool(service)
	up, done, err := p.pick(nil)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", service, err)
	}
	resp, err := t.try(req, up, done)
	if err == nil || !retriable(req, err) {
		return resp, err
	}
	up2, done2, err2 := p.pick(up)
	t.retries.Inc()
	if err2 != nil {
		return nil, err
	}
	if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
		body, berr := req.GetBody()
		if berr != nil {
			return nil, err
		}
		req.Body = body
	}
	return t.try(req, up2, done2)
}

func (t *selectingTransport) try(req *http.Request, up *upstream, done func(error)) (*http.Response, error) {
	req.URL.Host = up.addr
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil && errors.Is(ctxErr, context.Canceled) {
			done(context.Canceled) // the client went away: not the backend's fault
		} else {
			done(err)
		}
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		done(fmt.Errorf("backend answered %d", resp.StatusCode))
	default:
		done(nil)
	}
	return resp, nil
}

// retriable: the request is idempotent and the failure was connecting, so
// the first backend cannot have acted on it.
func retriable(req *http.Request, err error) bool {
	if !idempotentMethod(req.Method) && !hasIdempotencyKey(req.Header) {
		return false
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	if req.Header.Get("Upgrade") != "" {
		return false
	}
	return isConnectError(err)
}

// The retry rules, shared by both engines: a safe method's request may be
// sent again on a fresh connection; an idempotent one may go to another
// instance after a connect failure; an idempotency key makes any method both.

// safeMethod: GET, HEAD, OPTIONS, TRACE ("" is GET).
func safeMethod(m string) bool {
	switch m {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// idempotentMethod: a safe method, PUT or DELETE.
func idempotentMethod(m string) bool {
	return safeMethod(m) || m == http.MethodPut || m == http.MethodDelete
}

func hasIdempotencyKey(h http.Header) bool {
	_, a := h["Idempotency-Key"]
	_, b := h["X-Idempotency-Key"]
	return a || b
}

func isConnectError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// breakerOpen reports whether err came from an open breaker.
func breakerOpen(err error) bool {
	return errors.Is(err, ErrBreakerOpen) || errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests)
}
