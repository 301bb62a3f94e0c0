package orders

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the app's Prometheus series, on a registry of its own so
// several servers can live in one process. No tenant id is ever a label:
// tenants are unbounded, routes and operations are not.
type metrics struct {
	registry  *prometheus.Registry
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	dbSeconds *prometheus.HistogramVec
}

func newMetrics(pools *pools) *metrics {
	r := prometheus.NewRegistry()
	m := &metrics{
		registry: r,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_orders_http_requests_total",
			Help: "HTTP requests answered, by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchyard_orders_http_request_seconds",
			Help:    "Time to answer HTTP requests, by method and route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method", "route"}),
		dbSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchyard_orders_db_seconds",
			Help:    "Database latency per store operation (create, get, list, update, delete) and outcome (ok, not_found, error).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"op", "outcome"}),
	}
	r.MustRegister(m.requests, m.duration, m.dbSeconds,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchyard_orders_db_pools",
			Help: "Database connection pools open (one per database DSN in use).",
		}, func() float64 { return float64(pools.len()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}
