// Package watch holds Switchyard's one blocking-query loop, after
// consul-template's watch.View: it runs a Consul blocking query again and
// again from the index the last one returned, starts over at index 0 when
// the index goes backwards (a restored or rebuilt cluster) or after an
// error (the server may not be the one it was watching), backs off with
// jitter while queries fail, rate-limits a query that wakes without the
// index moving, and turns a panic in a query into an error.
package watch

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/switchyard/switchyard/internal/retry"
)

// Fetch runs one blocking query that waits for a change after index and
// returns the index its answer is as of. Its error, if any, is retried.
type Fetch func(ctx context.Context, index uint64) (uint64, error)

// DefaultBackoff is the wait between failed queries: 50 ms doubling to 5 s.
var DefaultBackoff = retry.Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}

// DefaultMinInterval is the least time between two queries whose index did
// not move.
const DefaultMinInterval = 20 * time.Millisecond

// Loop is one blocking-query watch. Zero values take the defaults.
type Loop struct {
	// Name says what is watched, in logs and errors.
	Name string
	// Fetch is the blocking query.
	Fetch Fetch
	// Backoff sizes the wait after failed queries (DefaultBackoff).
	Backoff retry.Backoff
	// MinInterval rate-limits a query that returns without the index
	// moving (DefaultMinInterval).
	MinInterval time.Duration
	// Logger gets a warning per failure and a note on recovery.
	Logger *slog.Logger
	// OnResult, if set, sees every query's outcome: its error (a panic
	// included), or nil after a success.
	OnResult func(err error)

	sleep func(context.Context, time.Duration) error // retry.Sleep; tests swap it
}

// Run runs the loop until ctx ends.
func (l *Loop) Run(ctx context.Context) {
	l.setDefaults()
	var index uint64
	failures := 0
	for ctx.Err() == nil {
		start := time.Now()
		next, err := l.fetch(ctx, index)
		if ctx.Err() != nil {
			return
		}
		if l.OnResult != nil {
			l.OnResult(err)
		}
		var wait time.Duration
		if err != nil {
			failures++
			index = 0
			wait = l.Backoff.Delay(failures)
			l.Logger.Warn("watch failed", "watch", l.Name, "err", err, "retry_in", wait, "failures", failures)
		} else {
			if failures > 0 {
				l.Logger.Info("watch recovered", "watch", l.Name, "after_failures", failures)
				failures = 0
			}
			index, wait = l.advance(index, next, time.Since(start))
		}
		if wait > 0 && l.sleep(ctx, wait) != nil {
			return
		}
	}
}

// advance returns the index of the next query and how long to wait before
// it, after a query at index returned next, taking elapsed.
func (l *Loop) advance(index, next uint64, elapsed time.Duration) (uint64, time.Duration) {
	switch {
	case next < index:
		l.Logger.Info("watch index went backwards; resetting", "watch", l.Name, "from", index, "to", next)
		return 0, 0
	case next == index:
		return index, max(l.MinInterval-elapsed, 0)
	default:
		return next, 0
	}
}

// fetch runs one query, turning a panic into an error.
func (l *Loop) fetch(ctx context.Context, index uint64) (next uint64, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s watch: panic: %v\n%s", l.Name, r, debug.Stack())
		}
	}()
	return l.Fetch(ctx, index)
}

func (l *Loop) setDefaults() {
	if l.Backoff == (retry.Backoff{}) {
		l.Backoff = DefaultBackoff
	}
	if l.MinInterval == 0 {
		l.MinInterval = DefaultMinInterval
	}
	if l.Logger == nil {
		l.Logger = slog.Default()
	}
	if l.sleep == nil {
		l.sleep = retry.Sleep
	}
}
