// Package retry holds the one way Switchyard waits between attempts: a
// sleep that ends early when the context does, and the one backoff policy
// (exponential, capped, jittered) that sizes those sleeps.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Sleep waits d, or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Backoff is the wait after a run of failures: Min after the first,
// doubling with each further failure up to Max, and jittered down to no
// less than half of that so that clients failing together do not retry in
// step.
type Backoff struct {
	Min, Max time.Duration
}

// Delay is the wait after the failures-th failure in a row (1 for the
// first). It lies in [d/2, d] where d = min(Min·2^(failures-1), Max).
func (b Backoff) Delay(failures int) time.Duration {
	d := b.Min << min(max(failures-1, 0), 30)
	if d > b.Max || d <= 0 {
		d = b.Max
	}
	if d <= 0 {
		return 0
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// Sleep waits Delay(failures), or until ctx ends.
func (b Backoff) Sleep(ctx context.Context, failures int) error {
	return Sleep(ctx, b.Delay(failures))
}
