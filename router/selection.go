package router

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

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
	tenant := ""
	st, _ := req.Context().Value(reqStateKey{}).(*reqState) // the request's state, read once
	if st != nil {
		tenant = st.route.ID
	}
	p := t.upstreams.pool(service)
	tk, err := p.pick(t.upstreams, tenant, nil)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", service, err)
	}
	resp, err := t.try(req, tk, st)
	if err == nil || !retriable(req, err) {
		return resp, err
	}
	tk2, err2 := p.pick(t.upstreams, tenant, tk.up)
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
	return t.try(req, tk2, st)
}

// try sends the request to the ticket's instance and reports the outcome
// to its breakers; st (nil outside the proxy) keeps what modifyResponse needs.
func (t *selectingTransport) try(req *http.Request, tk ticket, st *reqState) (*http.Response, error) {
	req.URL.Host = tk.up.addr
	if st != nil && st.done != nil {
		st.done.instance = tk.up.addr
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		if req.Context().Err() != nil {
			err = fmt.Errorf("%w: %w", errClientGone, err) // nobody is waiting: not the backend's failure
		}
		tk.report(err)
		return nil, err
	}
	tk.report(statusOutcome(resp.StatusCode))
	if v, ok := resp.Header["Proxy-Authenticate"]; ok && st != nil {
		st.proxyAuthenticate = v // ReverseProxy drops it as hop-by-hop; modifyResponse puts it back
	}
	return resp, nil
}

// statusOutcome is what a backend's answer means to its breakers.
func statusOutcome(status int) error {
	switch status {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return errBackendStatus
	}
	return nil
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
