package router

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the router's Prometheus series. No tenant id is ever a label
// value: tenants are unbounded, tiers and targets are not.
type Metrics struct {
	Registry         *prometheus.Registry
	requests         *prometheus.CounterVec
	upstreamLatency  *prometheus.HistogramVec
	breakerState     *prometheus.GaugeVec
	healthyInstances *prometheus.GaugeVec
	holds            *prometheus.CounterVec
	holdSeconds      prometheus.Histogram
	retries          prometheus.Counter
	tenantTrips      *prometheus.CounterVec
	acks             prometheus.Counter
	connections      *prometheus.CounterVec

	// Children of requests and upstreamLatency, cached by label values.
	requestChildren sync.Map // requestKey → prometheus.Counter
	latencyChildren sync.Map // latencyKey → prometheus.Observer
}

// NewMetrics registers the router's series, plus the Go and process
// collectors, on a fresh registry.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_router_requests_total",
			Help: "Requests answered, by tier, target and status code (target and tier are empty when no tenant was found).",
		}, []string{"tier", "target", "code"}),
		upstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchyard_router_upstream_seconds",
			Help:    "Time from forwarding a request to the backend's response headers, by tier and target.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"tier", "target"}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_router_breaker_state",
			Help: "Circuit breaker state per backend instance: 0 closed, 1 half-open, 2 open.",
		}, []string{"service", "instance"}),
		healthyInstances: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_router_healthy_instances",
			Help: "Passing instances per backend service, from Consul health.",
		}, []string{"service"}),
		holds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_router_holds_total",
			Help: "Requests held for a frozen tenant, by outcome (released, expired, cancelled).",
		}, []string{"outcome"}),
		holdSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "switchyard_router_hold_seconds",
			Help:    "How long requests were held for a frozen tenant.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2, 5},
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_router_upstream_retries_total",
			Help: "Idempotent requests retried on another instance after a connect failure.",
		}),
		tenantTrips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_router_tenant_breaker_trips_total",
			Help: "Per-(tenant, instance) circuit breakers opened, by backend service (a tenant's own failures; the instance stays open to the others).",
		}, []string{"service"}),
		acks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_router_cutover_acks_total",
			Help: "Cutover freezes this router acknowledged (tenant held, nothing in flight).",
		}),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_router_connections_total",
			Help: "Client connections by listener (plain, tls) and by what served them (fast: the fast path; net_http: net/http, as HTTP/2 (h2, h2c) and requests the fast path hands off; a connection handed off after fast-path requests counts in both).",
		}, []string{"listener", "path"}),
	}
	r.MustRegister(m.connections, m.acks, m.requests, m.upstreamLatency, m.breakerState, m.healthyInstances, m.holds, m.holdSeconds, m.retries, m.tenantTrips,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
