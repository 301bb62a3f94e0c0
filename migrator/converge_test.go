package migrator

import (
	"strings"
	"testing"
	"time"
)

func TestConvergence(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tests := []struct {
		name        string
		samples     []convSample
		known, conv bool
		capture     float64
		apply       float64
		message     string
	}{
		{name: "one sample says nothing", samples: []convSample{{at: at(0), backlog: 500}}},
		{name: "shrinking", known: true, conv: true, capture: 100, apply: 1000, samples: []convSample{
			{at: at(0), backlog: 5000}, {at: at(5), backlog: 2000, applied: 3500, busy: 3500 * time.Millisecond}, {at: at(10), backlog: 500, applied: 5500, busy: 5500 * time.Millisecond}}},
		{name: "growing", known: true, capture: 1100, apply: 800, message: "backlog 12,000 growing at 300/s: writers (1,100/s) outpace apply (800/s)", samples: []convSample{
			{at: at(0), backlog: 9000}, {at: at(10), backlog: 12000, applied: 8000, busy: 10 * time.Second}}},
		{name: "flat", known: true, capture: 1000, apply: 1000, message: "not shrinking: writers (1,000/s) keep pace with apply (1,000/s)", samples: []convSample{
			{at: at(0), backlog: 4000}, {at: at(10), backlog: 4000, applied: 10000, busy: 10 * time.Second}}},
		{name: "nothing applied", known: true, capture: 100, message: "nothing was applied", samples: []convSample{
			{at: at(0), backlog: 4000}, {at: at(10), backlog: 5000}}},
		{name: "empty backlog converges", known: true, conv: true, samples: []convSample{
			{at: at(0), backlog: 0}, {at: at(10), backlog: 0}}},
		{name: "window slides: old shrinkage forgotten", known: true, capture: 200, apply: 100, message: "growing", samples: []convSample{
			{at: at(0), backlog: 9000}, {at: at(10), backlog: 1000, applied: 9000, busy: 9 * time.Second},
			{at: at(20), backlog: 2000, applied: 10000, busy: 19 * time.Second}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &convergence{window: 10 * time.Second}
			var st convStatus
			for _, s := range tc.samples {
				st = c.observe(s)
			}
			if st.Known != tc.known || st.Converging != tc.conv {
				t.Fatalf("known %v converging %v, want %v %v", st.Known, st.Converging, tc.known, tc.conv)
			}
			if int(st.CapturePerS) != int(tc.capture) || int(st.ApplyPerS) != int(tc.apply) {
				t.Fatalf("rates %.1f/%.1f, want %.1f/%.1f", st.CapturePerS, st.ApplyPerS, tc.capture, tc.apply)
			}
			if msg := st.message(); !strings.Contains(msg, tc.message) || (tc.message == "") != (msg == "") {
				t.Fatalf("message %q, want %q", msg, tc.message)
			}
			if tc.known && !tc.conv && st.StalledSince.IsZero() {
				t.Fatal("no stalled-since time")
			}
		})
	}
}

func TestETAToCutover(t *testing.T) {
	tests := []struct {
		name           string
		copyLeft       int64
		copyRate       float64
		backlog        int64
		capture, apply float64
		want           time.Duration
		ok             bool
	}{
		{name: "nothing left", ok: true},
		{name: "copy only, no writers", copyLeft: 1000, copyRate: 100, ok: true, want: 10 * time.Second},
		{name: "copy then backlog", copyLeft: 1000, copyRate: 100, backlog: 500, capture: 50, apply: 150, ok: true,
			want: 10*time.Second + 10*time.Second}, // 500+50*10 = 1000 at 100/s net
		{name: "copy without a rate", copyLeft: 10},
		{name: "backlog apply not measured", backlog: 10},
		{name: "writers outpace apply", backlog: 1000, capture: 200, apply: 100},
		{name: "small backlog is never 0s", backlog: 3, apply: 20000, ok: true, want: time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := etaToCutover(tc.copyLeft, tc.copyRate, tc.backlog, tc.capture, tc.apply)
			if ok != tc.ok || (ok && got != tc.want) {
				t.Fatalf("eta %s %v, want %s %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 12000: "12,000", 1234567: "1,234,567", -4500: "-4,500"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%d) = %q, want %q", in, got, want)
		}
	}
}
