package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/switchyard/switchyard/router/wire"
)

func TestClassify(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, c := range []struct {
		name   string
		err    error
		fault  fault
		answer *routeError
	}{
		{"answered", nil, faultNone, nil},
		{"backend 503", errBackendStatus, faultTenant, errUpstreamFailed},
		{"malformed chunked body", wire.BodyReadError(errors.New("malformed chunked encoding")), faultClient, errBadBody},
		{"stalled body", wire.BodyReadError(os.ErrDeadlineExceeded), faultClient, errBodyTimeout},
		{"body cut short", wire.BodyReadError(io.ErrUnexpectedEOF), faultClient, nil},
		{"body too large", wire.BodyReadError(&http.MaxBytesError{Limit: 10}), faultClient, errBodyTooLarge},
		{"client gone", fmt.Errorf("x: %w", wire.ErrClientGone), faultClient, nil},
		{"client context cancelled", context.Canceled, faultClient, nil},
		{"response head too large", wire.ErrResponseHeadTooLarge, faultTenant, errUpstreamFailed},
		{"dial refused", dial, faultInstance, errUpstreamFailed},
		{"header timeout", wire.ErrHeaderTimeout, faultTenant, errUpstreamTimeout},
		{"reset after send", syscall.ECONNRESET, faultTenant, errUpstreamFailed},
		{"bad framing", wire.ErrBadChunk, faultTenant, errUpstreamFailed},
		{"no instance", ErrNoHealthyBackend, faultTenant, errNoHealthyBackend},
		{"breakers open", ErrBreakerOpen, faultTenant, errBreakerOpen},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := classify(c.err); got != c.fault {
				t.Errorf("classify = %d, want %d", got, c.fault)
			}
			if c.err == nil {
				return
			}
			if got := answerFor(c.err); got != c.answer {
				t.Errorf("answerFor = %+v, want %+v", got, c.answer)
			}
		})
	}
}

// testPool is a pool of two instances with the default breaker settings.
func testPool(t *testing.T) (*Upstreams, *pool) {
	cfg := Config{}
	cfg.SetDefaults()
	u := NewUpstreams(nil, cfg.Breaker, slog.New(slog.NewTextHandler(io.Discard, nil)), NewMetrics())
	p := &pool{service: "app"}
	empty := []*upstream{}
	p.instances.Store(&empty)
	u.setInstances(p, []string{"127.0.0.1:1", "127.0.0.1:2"})
	return u, p
}

// run sends n requests of tenant through p, each failing with err, and
// returns how many were refused by a breaker.
func run(t *testing.T, u *Upstreams, p *pool, tenant string, n int, err error) (refused int) {
	t.Helper()
	for i := 0; i < n; i++ {
		tk, perr := p.pick(u, tenant, nil)
		if perr != nil {
			if !errors.Is(perr, ErrBreakerOpen) {
				t.Fatalf("pick: %v", perr)
			}
			refused++
			continue
		}
		tk.report(err)
	}
	return refused
}

func TestBreakersOneTenantCannotTripTheInstance(t *testing.T) {
	timeout := wire.ErrHeaderTimeout
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, c := range []struct {
		name string
		err  error
	}{
		{"backend answers 503", errBackendStatus},
		{"backend never answers", timeout},
		{"backend drops the connection", syscall.ECONNRESET},
		{"backend head too large", wire.ErrResponseHeadTooLarge},
		{"client bodies broken", wire.BodyReadError(errors.New("malformed chunked encoding"))},
	} {
		t.Run(c.name, func(t *testing.T) {
			u, p := testPool(t)
			refused := run(t, u, p, "attacker", 40, c.err)
			if c.err != nil && classify(c.err) == faultTenant && refused == 0 {
				t.Errorf("the failing tenant's own breakers never opened")
			}
			if classify(c.err) == faultClient && refused != 0 {
				t.Errorf("client faults opened a breaker (%d refused)", refused)
			}
			if n := run(t, u, p, "neighbour", 20, nil); n != 0 {
				t.Errorf("neighbour refused %d times", n)
			}
			for _, up := range *p.instances.Load() {
				if s := up.breaker.State().String(); s != "closed" {
					t.Errorf("instance %s breaker %s", up.addr, s)
				}
			}
		})
	}
	t.Run("instance unreachable opens it for everyone", func(t *testing.T) {
		u, p := testPool(t)
		run(t, u, p, "a", 20, dial)
		if n := run(t, u, p, "b", 1, nil); n != 1 {
			t.Errorf("after dial failures, neighbour refused %d of 1", n)
		}
	})
	t.Run("timeouts of several tenants open the instance", func(t *testing.T) {
		u, p := testPool(t)
		for i := 0; i < 20; i++ {
			run(t, u, p, fmt.Sprintf("t%d", i), 1, timeout)
		}
		if n := run(t, u, p, "other", 1, nil); n != 1 {
			t.Errorf("after timeouts from 20 tenants, a new tenant refused %d of 1", n)
		}
	})
	t.Run("a healed tenant's breaker is dropped", func(t *testing.T) {
		u, p := testPool(t)
		run(t, u, p, "a", 4, errBackendStatus)
		run(t, u, p, "a", 4, nil)
		for _, up := range *p.instances.Load() {
			if _, ok := up.tenants.m.Load("a"); ok {
				t.Errorf("instance %s keeps a healthy tenant's breaker", up.addr)
			}
		}
	})
}

// The one retry rule both engines share (attempt): after a connect failure
// a retriable request goes once to the other instance, and nothing else is
// sent again.
func TestAttemptRetriesOnceOnAnotherInstance(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, c := range []struct {
		name      string
		retriable bool
		outcomes  []error // of each send, in order
		sends     int
		retries   float64
	}{
		{"answered", true, []error{nil}, 1, 0},
		{"dial failed, retriable", true, []error{dial, nil}, 2, 1},
		{"dial failed twice", true, []error{dial, dial}, 2, 1},
		{"dial failed, not retriable", false, []error{dial}, 1, 0},
		{"timeout is not retried", true, []error{wire.ErrHeaderTimeout}, 1, 0},
		{"reset after send is not retried", true, []error{syscall.ECONNRESET}, 1, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			u, p := testPool(t)
			u.view.Store(&map[string]*pool{"app": p})
			retries := prometheus.NewCounter(prometheus.CounterOpts{Name: "retries"})
			a, err := startAttempt(u, retries, "app", "acme", c.retriable)
			if err != nil {
				t.Fatal(err)
			}
			var addrs []string
			for i := 0; ; i++ {
				if i >= len(c.outcomes) {
					t.Fatalf("sent %d times, want %d", i+1, c.sends)
				}
				addrs = append(addrs, a.addr())
				status := 200
				if c.outcomes[i] != nil {
					status = 0
				}
				if !a.end(status, c.outcomes[i]) {
					break
				}
			}
			if len(addrs) != c.sends {
				t.Errorf("sent %d times (%v), want %d", len(addrs), addrs, c.sends)
			}
			if len(addrs) == 2 && addrs[0] == addrs[1] {
				t.Errorf("retried on the same instance %s", addrs[0])
			}
			var m dto.Metric
			if err := retries.Write(&m); err != nil {
				t.Fatal(err)
			}
			if got := m.GetCounter().GetValue(); got != c.retries {
				t.Errorf("retries counted %v, want %v", got, c.retries)
			}
		})
	}
}

// The connection loop's refusals get their answers from the same map.
func TestAnswerForRefusals(t *testing.T) {
	for _, c := range []struct {
		err  error
		want *routeError
	}{
		{wire.ErrHeadTimeout, errHeadTimeout},
		{wire.ErrAmbiguousFraming, errAmbiguousFraming},
		{wire.ErrObsFold, errObsFold},
	} {
		if got := answerFor(c.err); got != c.want {
			t.Errorf("answerFor(%v) = %+v, want %+v", c.err, got, c.want)
		}
	}
}
