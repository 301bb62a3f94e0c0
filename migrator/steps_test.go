package migrator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

// The driver runs steps in order up to the first failure, arms a step's
// undo when the step starts (so a failed step is undone too), runs the
// armed undos newest first and all of them whatever fails, and times every
// step, including those run alongside another.
func TestStepRunner(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name     string
		failAt   string // the step whose do fails
		failUndo string // the step whose undo fails
		wantRan  []string
		wantUndo []string
	}{
		{name: "all pass", wantRan: []string{"a", "b", "c", "c-side"}},
		{name: "first fails, its own undo runs", failAt: "a", wantRan: []string{"a"}, wantUndo: []string{"undo-a"}},
		{name: "later fails, undos newest first", failAt: "c", wantRan: []string{"a", "b", "c", "c-side"}, wantUndo: []string{"undo-c", "undo-a"}},
		{name: "an undo fails, the others still run", failAt: "c", failUndo: "c", wantRan: []string{"a", "b", "c", "c-side"}, wantUndo: []string{"undo-c", "undo-a"}},
		{name: "a side step fails", failAt: "c-side", wantRan: []string{"a", "b", "c", "c-side"}, wantUndo: []string{"undo-c", "undo-a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var undone []string
			mk := func(name string, undo bool) step {
				s := step{name: name, do: func(context.Context) error {
					if name == tc.failAt {
						return boom
					}
					return nil
				}}
				if undo {
					s.undo = func(context.Context) error {
						undone = append(undone, "undo-"+name)
						if name == tc.failUndo {
							return boom
						}
						return nil
					}
				}
				return s
			}
			c := mk("c", true)
			c.with = []step{mk("c-side", false)}
			sr := &stepRunner{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			err := sr.run(context.Background(), []step{mk("a", true), mk("b", false), c})
			if (err != nil) != (tc.failAt != "") || err != nil && (!errors.Is(err, boom) || !strings.HasPrefix(err.Error(), tc.failAt+": ")) {
				t.Fatalf("run: %v", err)
			}
			var ran []string
			for _, st := range sr.timeline() {
				ran = append(ran, st.Step)
			}
			slices.Sort(ran)
			if !slices.Equal(ran, tc.wantRan) {
				t.Fatalf("timed %v, want %v", ran, tc.wantRan)
			}
			if err == nil {
				return
			}
			uerr := sr.undo(context.Background())
			if !slices.Equal(undone, tc.wantUndo) {
				t.Fatalf("undid %v, want %v", undone, tc.wantUndo)
			}
			if (uerr != nil) != (tc.failUndo != "") {
				t.Fatalf("undo: %v", uerr)
			}
		})
	}
}
