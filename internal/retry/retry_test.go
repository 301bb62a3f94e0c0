package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
		t.Fatalf("cancelled sleep: %v after %s", err, time.Since(start))
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	cases := []struct {
		name     string
		b        Backoff
		failures int
		ceiling  time.Duration
	}{
		{"first failure waits about Min", b, 1, 50 * time.Millisecond},
		{"zero failures count as the first", b, 0, 50 * time.Millisecond},
		{"doubles", b, 2, 100 * time.Millisecond},
		{"doubles again", b, 4, 400 * time.Millisecond},
		{"capped at Max", b, 12, 5 * time.Second},
		{"no overflow after many failures", b, 1000, 5 * time.Second},
		{"zero policy does not wait", Backoff{}, 3, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for range 200 {
				d := c.b.Delay(c.failures)
				if d < c.ceiling/2 || d > c.ceiling {
					t.Fatalf("Delay(%d) = %s, want in [%s, %s]", c.failures, d, c.ceiling/2, c.ceiling)
				}
			}
		})
	}
}

func TestBackoffJitters(t *testing.T) {
	b := Backoff{Min: time.Second, Max: time.Second}
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[b.Delay(1)] = true
	}
	if len(seen) < 2 {
		t.Fatalf("50 delays were all %v: no jitter", seen)
	}
}
