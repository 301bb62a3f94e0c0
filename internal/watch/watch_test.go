package watch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/retry"
)

// step is one scripted query answer.
type step struct {
	next  uint64
	err   error
	panic bool
}

// call is what the loop did around one query: the index it asked with and
// the wait it took after the previous one.
type call struct {
	index uint64
	wait  time.Duration
}

// runScript runs a Loop whose queries answer script in order (then the
// context ends) and returns the calls it made and the outcomes it reported.
func runScript(t *testing.T, script []step) ([]call, []error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls []call
	var results []error
	var waited time.Duration
	l := &Loop{
		Name:        "test",
		Backoff:     retry.Backoff{Min: 100 * time.Millisecond, Max: 400 * time.Millisecond},
		MinInterval: time.Hour, // a query returns well within it: the whole of it is waited
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnResult:    func(err error) { results = append(results, err) },
		sleep: func(_ context.Context, d time.Duration) error {
			waited += d
			return nil
		},
		Fetch: func(_ context.Context, index uint64) (uint64, error) {
			calls = append(calls, call{index: index, wait: waited})
			waited = 0
			if len(calls) > len(script) {
				cancel()
				return index, context.Canceled
			}
			s := script[len(calls)-1]
			if s.panic {
				panic("boom")
			}
			return s.next, s.err
		},
	}
	l.Run(ctx)
	return calls, results
}

func TestLoop(t *testing.T) {
	errDown := errors.New("consul down")
	cases := []struct {
		name    string
		script  []step
		indexes []uint64 // the index of each query, the one after the script included
		// waits: the wait before each query after the first; -1: a backoff
		// (jittered), checked against the failures in a row.
		waits []time.Duration
	}{
		{
			name:    "follows a moving index without waiting",
			script:  []step{{next: 5}, {next: 7}, {next: 9}},
			indexes: []uint64{0, 5, 7, 9},
			waits:   []time.Duration{0, 0, 0},
		},
		{
			name:    "rate-limits a query whose index did not move",
			script:  []step{{next: 5}, {next: 5}, {next: 6}},
			indexes: []uint64{0, 5, 5, 6},
			waits:   []time.Duration{0, time.Hour, 0},
		},
		{
			name:    "resets to zero when the index goes backwards",
			script:  []step{{next: 50}, {next: 3}, {next: 4}},
			indexes: []uint64{0, 50, 0, 4},
			waits:   []time.Duration{0, 0, 0},
		},
		{
			name:    "backs off on errors and resets the index",
			script:  []step{{next: 8}, {err: errDown}, {err: errDown}, {err: errDown}, {next: 9}, {err: errDown}},
			indexes: []uint64{0, 8, 0, 0, 0, 9, 0},
			waits:   []time.Duration{0, -1, -1, -1, 0, -1},
		},
		{
			name:    "a panicking query is an error",
			script:  []step{{next: 8}, {panic: true}, {next: 9}},
			indexes: []uint64{0, 8, 0, 9},
			waits:   []time.Duration{0, -1, 0},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			calls, results := runScript(t, c.script)
			if len(calls) != len(c.indexes) {
				t.Fatalf("%d queries, want %d: %v", len(calls), len(c.indexes), calls)
			}
			failures := 0
			for i, cl := range calls {
				if cl.index != c.indexes[i] {
					t.Errorf("query %d at index %d, want %d (%v)", i, cl.index, c.indexes[i], calls)
				}
				if i == 0 {
					continue
				}
				want := c.waits[i-1]
				if want >= 0 {
					// A rate-limit wait is MinInterval less the query's (tiny) time.
					if cl.wait > want || want-cl.wait > time.Second {
						t.Errorf("query %d after %s, want %s", i, cl.wait, want)
					}
					failures = 0
					continue
				}
				failures++
				ceiling := min(100*time.Millisecond<<(failures-1), 400*time.Millisecond)
				if cl.wait < ceiling/2 || cl.wait > ceiling {
					t.Errorf("query %d after %s, want a backoff in [%s, %s]", i, cl.wait, ceiling/2, ceiling)
				}
			}
			for i, s := range c.script {
				failed := s.err != nil || s.panic
				if (results[i] != nil) != failed {
					t.Errorf("result %d = %v, want failed=%v", i, results[i], failed)
				}
				if s.panic && !strings.Contains(results[i].Error(), "panic: boom") {
					t.Errorf("panic reported as %v", results[i])
				}
			}
		})
	}
}

func TestLoopStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	l := &Loop{Name: "blocked", Fetch: func(ctx context.Context, index uint64) (uint64, error) {
		<-ctx.Done()
		return index, ctx.Err()
	}}
	go func() { l.Run(ctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestLoopRealSleepRateLimits(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	start := time.Now()
	l := &Loop{Name: "idle", MinInterval: 20 * time.Millisecond, Fetch: func(context.Context, uint64) (uint64, error) {
		n++
		if n == 6 {
			cancel()
		}
		return 1, nil
	}}
	l.Run(ctx)
	// Five waits of MinInterval between six queries whose index stayed at 1.
	if el := time.Since(start); el < 80*time.Millisecond {
		t.Fatalf("6 idle queries took %s, want at least ~100ms", el)
	}
}
