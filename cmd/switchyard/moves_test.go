package main

import (
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/migrator"
)

// The watch line never says "100% … ETA 0s" while something still waits,
// and says why a catch-up does not converge.
func TestProgressLine(t *testing.T) {
	no, yes := false, true
	tests := []struct {
		name          string
		m             migrator.Move
		want, notWant []string
	}{
		{name: "copy at its last chunk, waiting on parents",
			m: migrator.Move{Phase: migrator.PhaseCopy, Status: migrator.StatusRunning, Backlog: 12000, CapturePerS: 1100,
				Tables:  []migrator.TableProgress{{Table: "public.orders", Rows: 100, TotalRows: 100, Done: true}, {Table: "public.order_events", Rows: 100, TotalRows: 100}},
				Message: "a chunk of public.order_events met rows whose parents are still in the change queue"},
			want: []string{" 99% copy", "backlog 12000", "+1100/s captured", "ETA ?", "parents are still in the change queue"}, notWant: []string{"100%", "ETA 0s"}},
		{name: "catch-up not converging",
			m: migrator.Move{Phase: migrator.PhaseCatchUp, Status: migrator.StatusRunning, Backlog: 12000, CapturePerS: 1100, ApplyPerS: 800,
				Converging: &no, StalledSince: time.Now().Add(-12 * time.Second), Message: "backlog 12,000 growing at 300/s: writers (1,100/s) outpace apply (800/s)"},
			want: []string{"catch-up", "ETA ?", "NOT CONVERGING for 12s", "outpace apply"}},
		{name: "catch-up converging",
			m:    migrator.Move{Phase: migrator.PhaseCatchUp, Status: migrator.StatusRunning, Backlog: 3000, CapturePerS: 1100, ApplyPerS: 22000, Converging: &yes, ETA: "1s"},
			want: []string{"ETA 1s", "22000/s apply"}, notWant: []string{"NOT CONVERGING"}},
		{name: "switched: no ETA",
			m:       migrator.Move{Phase: migrator.PhaseRetained, Status: migrator.StatusRunning},
			notWant: []string{"ETA"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			line := progressLine(&tc.m)
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("%q lacks %q", line, w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(line, w) {
					t.Errorf("%q has %q", line, w)
				}
			}
		})
	}
}
