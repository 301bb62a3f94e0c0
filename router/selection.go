package router

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router/wire"
)

// selectingTransport is the net/http engine's way to its backends: the
// request goes to an instance of the service named in the request URL's
// host through the one breaker and retry accounting both engines share
// (attempt).
type selectingTransport struct {
	upstreams *Upstreams
	next      http.RoundTripper
	retries   prometheus.Counter
	// h2c and h2 reach targets whose backends speak HTTP/2 (edge.go).
	h2c, h2 http.RoundTripper
}

var _ http.RoundTripper = (*selectingTransport)(nil)

func (t *selectingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	service := req.URL.Host
	tenant := ""
	st, _ := req.Context().Value(reqStateKey{}).(*reqState) // the request's state, read once
	if st != nil {
		tenant = st.route.ID
	}
	a, err := startAttempt(t.upstreams, t.retries, service, tenant, retriable(req))
	if err != nil {
		return nil, err
	}
	var prevErr error
	for {
		if prevErr != nil && req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
			body, berr := req.GetBody()
			if berr != nil {
				a.end(0, &wire.ClientBodyError{Kind: wire.ErrBodyMalformed, Err: berr}) // not the instance's doing
				return nil, prevErr
			}
			req.Body = body
		}
		resp, err := t.try(req, a.addr(), st)
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		if !a.end(status, err) {
			return resp, err
		}
		prevErr = err
	}
}

// try sends the request to addr; st (nil outside the proxy) keeps what
// modifyResponse needs.
func (t *selectingTransport) try(req *http.Request, addr string, st *reqState) (*http.Response, error) {
	req.URL.Host = addr
	if st != nil && st.done != nil {
		st.done.instance = addr
	}
	next := t.next
	if st != nil {
		switch st.backend {
		case catalog.BackendH2C:
			next = t.h2c
		case catalog.BackendH2:
			next = t.h2
		}
	}
	resp, err := next.RoundTrip(req)
	if err != nil {
		return nil, withClientGone(req.Context(), err)
	}
	if v, ok := resp.Header["Proxy-Authenticate"]; ok && st != nil {
		st.proxyAuthenticate = v // ReverseProxy drops it; the router relays it (hopByHop): modifyResponse puts it back
	}
	return resp, nil
}

// attempt is one request's way through the instances of its service: the
// one breaker and retry accounting of both engines. It starts at an
// instance whose breakers (the instance's, and the tenant's there) let the
// request through; end reports each outcome to those breakers (the rule is
// in classify.go) and, after a failure to connect, sends a retriable
// request once more, to another instance.
type attempt struct {
	upstreams *Upstreams
	retries   prometheus.Counter
	pool      *pool
	tenant    string
	retriable bool
	retried   bool
	tk        ticket
}

// startAttempt picks the first instance for tenant's request to service.
// retriable says the request may go to another instance after a connect
// failure (idempotent, and its body can be sent again). The error (no
// healthy instance, every breaker open) is the answer.
func startAttempt(u *Upstreams, retries prometheus.Counter, service, tenant string, retriable bool) (attempt, error) {
	p := u.pool(service)
	tk, err := p.pick(u, tenant, nil)
	if err != nil {
		return attempt{}, fmt.Errorf("service %s: %w", service, err)
	}
	return attempt{upstreams: u, retries: retries, pool: p, tenant: tenant, retriable: retriable, tk: tk}, nil
}

// addr is the instance to send the request to.
func (a *attempt) addr() string { return a.tk.up.addr }

// end reports the outcome of sending the request to addr(): status is what
// the backend answered (0: nothing), err why the exchange failed. It
// returns true when the request is to be sent again, to the new addr().
func (a *attempt) end(status int, err error) (again bool) {
	if err == nil {
		err = statusOutcome(status)
	}
	a.tk.report(err)
	if err == nil || !a.retriable || a.retried || !wire.IsConnectError(err) {
		return false
	}
	a.retried = true
	a.retries.Inc()
	tk, perr := a.pool.pick(a.upstreams, a.tenant, a.tk.up)
	if perr != nil {
		return false
	}
	a.tk = tk
	return true
}

// statusOutcome is what a backend's answer means to its breakers.
func statusOutcome(status int) error {
	switch status {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return errBackendStatus
	}
	return nil
}

// retriable: the request is idempotent and can be sent again whole, so
// after a failure to connect (the first instance cannot have acted on it)
// it may go to another instance.
func retriable(req *http.Request) bool {
	if !idempotentMethod(req.Method) && !wire.HasIdempotencyKey(req.Header) {
		return false
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	return req.Header.Get("Upgrade") == ""
}

// The retry rules, shared by both engines: a safe method's request may be
// sent again on a fresh connection (wire.SafeMethod); an idempotent one may
// go to another instance after a connect failure; an idempotency key makes
// any method both.

// idempotentMethod: a safe method, PUT or DELETE.
func idempotentMethod(m string) bool {
	return wire.SafeMethod(m) || m == http.MethodPut || m == http.MethodDelete
}
