package main

import (
	"flag"
	"fmt"
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
