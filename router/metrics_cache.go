package router

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard/switchyard/router/wire"
)

// The request path counts every request and times every upstream answer.
// CounterVec.WithLabelValues hashes the label values and takes a lock on
// every call; the children are cached here instead. Tiers, targets and
// status codes are bounded, as the vectors' children already are.

type requestKey struct{ tier, target, code string }

type latencyKey struct{ tier, target string }

func (m *Metrics) requestCounter(tier, target, code string) prometheus.Counter {
	k := requestKey{tier, target, code}
	if c, ok := m.requestChildren.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c := m.requests.WithLabelValues(tier, target, code)
	m.requestChildren.Store(k, c)
	return c
}

func (m *Metrics) upstreamObserver(tier, target string) prometheus.Observer {
	k := latencyKey{tier, target}
	if o, ok := m.latencyChildren.Load(k); ok {
		return o.(prometheus.Observer)
	}
	o := m.upstreamLatency.WithLabelValues(tier, target)
	m.latencyChildren.Store(k, o)
	return o
}

// statusText is a status code as a metric label ("other" outside
// 100-599), without allocating.
func statusText(code int) string { return wire.StatusText(code) }
