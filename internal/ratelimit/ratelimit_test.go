package ratelimit

import (
	"math"
	"testing"
)

const sec = int64(1e9)

func TestBucketTake(t *testing.T) {
	type step struct {
		at   int64 // ns
		ok   bool
		wait float64 // when refused
	}
	cases := []struct {
		name        string
		rate, burst float64
		steps       []step
	}{
		{"burst then refused", 10, 3, []step{{0, true, 0}, {0, true, 0}, {0, true, 0}, {0, false, 0.1}}},
		{"refills at the rate", 10, 1, []step{{0, true, 0}, {sec / 20, false, 0.05}, {sec / 10, true, 0}}},
		{"never above the burst", 100, 2, []step{{0, true, 0}, {10 * sec, true, 0}, {10 * sec, true, 0}, {10 * sec, false, 0.01}}},
		{"zero rate never refills", 0, 1, []step{{0, true, 0}, {100 * sec, false, math.Inf(1)}}},
		{"clock going back refills nothing", 1, 1, []step{{5 * sec, true, 0}, {4 * sec, false, 1}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b Bucket
			for i, s := range c.steps {
				ok, wait := b.Take(s.at, c.rate, c.burst)
				if ok != s.ok || (!ok && math.Abs(wait-s.wait) > 1e-9 && !(math.IsInf(wait, 1) && math.IsInf(s.wait, 1))) {
					t.Fatalf("step %d at %dns: ok %v wait %v, want %v %v", i, s.at, ok, wait, s.ok, s.wait)
				}
			}
		})
	}
}

// TestBucketRate: over a long run a bucket admits rate × time + burst.
func TestBucketRate(t *testing.T) {
	var b Bucket
	admitted := 0
	for at := int64(0); at < 10*sec; at += sec / 1000 { // 1000 tries a second against 50/s
		if ok, _ := b.Take(at, 50, 5); ok {
			admitted++
		}
	}
	if admitted < 500 || admitted > 506 {
		t.Fatalf("admitted %d in 10 s at 50/s burst 5, want 500–505", admitted)
	}
}

func TestBucketIdle(t *testing.T) {
	cases := []struct {
		name        string
		taken       int     // tokens taken at 0
		at, minIdle int64   // when asked, and the least idle time
		rate, burst float64 //
		want        bool
	}{
		{"unused", 0, 0, 0, 1, 1, true},
		{"full again and idle long enough", 5, 10 * sec, sec, 1, 5, true},
		{"not refilled yet", 5, 2 * sec, sec, 1, 5, false},
		{"refilled but not idle long enough", 1, sec, 60 * sec, 10, 5, false},
		{"no rate: never refills", 1, 100 * sec, sec, 0, 5, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b Bucket
			for i := 0; i < c.taken; i++ {
				b.Take(0, c.rate, c.burst)
			}
			if got := b.Idle(c.at, c.rate, c.burst, c.minIdle); got != c.want {
				t.Fatalf("Idle = %v, want %v", got, c.want)
			}
		})
	}
}

func TestFraction(t *testing.T) {
	cases := []struct {
		name    string
		limit   float64
		d       Demand
		routers int
		want    float64
	}{
		{"no demand: static share", 100, Demand{}, 4, 0.25},
		{"one router", 100, Demand{Self: 500, Total: 500}, 1, 1},
		{"no routers counts as one", 100, Demand{Self: 5, Total: 5}, 0, 1},
		{"within the limit: demand plus headroom", 100, Demand{Self: 40, Total: 60}, 2, 0.6},
		{"within the limit, idle router", 100, Demand{Self: 0, Total: 60}, 2, 0.2},
		{"flood here, others idle", 100, Demand{Self: 1000, Total: 1000}, 3, (1000 + 5.0/3) / (1000 + 5)},
		{"flood elsewhere", 100, Demand{Self: 0, Total: 1000}, 3, (5.0 / 3) / (1000 + 5)},
		{"over the limit: proportional", 100, Demand{Self: 150, Total: 300}, 2, (150 + 2.5) / (300 + 5)},
		{"inconsistent report: static share", 100, Demand{Self: 10, Total: 5}, 2, 0.5},
		{"no limit: static share", 0, Demand{Self: 10, Total: 10}, 2, 0.5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Fraction(c.limit, c.d, c.routers); math.Abs(got-c.want) > 1e-12 {
				t.Fatalf("Fraction = %v, want %v", got, c.want)
			}
		})
	}
}

// TestFractionsAddUp: the routers' fractions, from the same reports, add
// up to the whole limit whatever the demand.
func TestFractionsAddUp(t *testing.T) {
	for _, demands := range [][]float64{{0, 0, 0}, {10, 0, 0}, {1000, 0, 0}, {30, 30, 30}, {500, 20, 1}, {50, 49.5, 0.5}} {
		total := 0.0
		for _, d := range demands {
			total += d
		}
		sum := 0.0
		for _, d := range demands {
			sum += Fraction(100, Demand{Self: d, Total: total}, len(demands))
		}
		if math.Abs(sum-1) > 1e-9 {
			t.Fatalf("demands %v: fractions add up to %v", demands, sum)
		}
	}
}

func TestShare(t *testing.T) {
	cases := []struct{ limit, fraction, min, want float64 }{
		{100, 0.5, 1, 50},
		{2, 0.1, 1, 1},
		{0, 0.5, 0, 0},
	}
	for _, c := range cases {
		if got := Share(c.limit, c.fraction, c.min); got != c.want {
			t.Fatalf("Share(%v, %v, %v) = %v, want %v", c.limit, c.fraction, c.min, got, c.want)
		}
	}
}
