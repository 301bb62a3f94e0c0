package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router"
)

// addObserveFlags adds the router's metering, request id and access log
// flags. The returned function opens the access log once the flags are
// parsed, and gives back the function that closes it.
func addObserveFlags(fs *flag.FlagSet, c *router.ObserveConfig) func() (func(), error) {
	fs.BoolVar(&c.DisableUsage, "no-usage", false, "turn usage metering off")
	fs.DurationVar(&c.UsageFlushEvery, "usage-flush", 5*time.Second, "how often usage is published to Consul")
	fs.DurationVar(&c.UsageRetention, "usage-retention", catalog.DefaultUsageRetention, "how long published usage is kept")
	fs.BoolVar(&c.DisableRequestIDs, "no-request-id", false, "do not send X-Request-Id upstream")
	fs.BoolVar(&c.TrustRequestID, "trust-request-id", false, "keep a client's own X-Request-Id (else it is replaced)")
	path := fs.String("access-log", "", `access log: a file, "-" for stdout (off when empty)`)
	fs.Float64Var(&c.AccessLogSample, "access-log-sample", 1, "fraction of requests the access log records (0 < f <= 1)")
	return func() (func(), error) {
		if c.AccessLogSample <= 0 || c.AccessLogSample > 1 {
			return nil, fmt.Errorf("-access-log-sample %v: must be in (0, 1]", c.AccessLogSample)
		}
		switch *path {
		case "":
			return func() {}, nil
		case "-":
			c.AccessLog = os.Stdout
			return func() {}, nil
		}
		f, err := os.OpenFile(*path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("access log: %w", err)
		}
		c.AccessLog = f
		return func() { _ = f.Close() }, nil
	}
}

// usageFlags are the range of `switchyard tenants usage`.
type usageFlags struct{ from, to, step *string }

func addUsageFlags(fs *flag.FlagSet) usageFlags {
	return usageFlags{
		from: fs.String("from", "", "usage: start, RFC 3339 or Unix seconds (default: an hour ago)"),
		to:   fs.String("to", "", "usage: end, RFC 3339 or Unix seconds (default: now)"),
		step: fs.String("step", "", "usage: step such as 5m, 1h, 1d (default 1h)"),
	}
}

// cliUsagePoint is one step of GET /v1/tenants/{id}/usage.
type cliUsagePoint struct {
	Start    time.Time         `json:"start"`
	Requests uint64            `json:"requests"`
	ByClass  map[string]uint64 `json:"by_status_class"`
	BytesIn  uint64            `json:"bytes_in"`
	BytesOut uint64            `json:"bytes_out"`
	Upstream float64           `json:"upstream_ms"`
}

// tenantUsage: switchyard tenants usage <id>.
func tenantUsage(ctx context.Context, c *apiClient, id string, f usageFlags) error {
	q := url.Values{}
	for k, v := range map[string]string{"from": *f.from, "to": *f.to, "step": *f.step} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var res struct {
		Points []cliUsagePoint `json:"points"`
		Total  cliUsagePoint   `json:"total"`
	}
	if _, err := c.do(ctx, "GET", "/v1/tenants/"+url.PathEscape(id)+"/usage?"+q.Encode(), nil, &res); err != nil {
		return err
	}
	c.print(res, "START\tREQUESTS\t2XX\t4XX\t5XX\tBYTES IN\tBYTES OUT\tUPSTREAM MS", func(w io.Writer) {
		row := func(label string, p cliUsagePoint) {
			fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f\n", label, p.Requests, p.ByClass["2xx"], p.ByClass["4xx"], p.ByClass["5xx"], p.BytesIn, p.BytesOut, p.Upstream)
		}
		for _, p := range res.Points {
			row(p.Start.Format(time.RFC3339), p)
		}
		row("total", res.Total)
	})
	return nil
}
