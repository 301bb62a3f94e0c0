package migrator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// step is one named step of the switch, as Ghostferry's cutover is a
// sequence of named calls. Its undo, if any, is armed when the step
// starts (a step whose answer was lost may have taken effect anyway) and
// runs, newest first, when this or a later step fails.
type step struct {
	name string
	do   func(ctx context.Context) error
	undo func(ctx context.Context) error
	// with are steps run alongside do, on other connections (none depends
	// on another or on do); each is timed under its own name.
	with []step
}

// StepTime is one step of a switch attempt as it ran: its name, how long
// it took, and its error if it failed.
type StepTime struct {
	Step  string        `json:"step"`
	Took  time.Duration `json:"took_ns"`
	Error string        `json:"error,omitempty"`
}

// SwitchStepSeconds is the time of each step of the switch (label step;
// outcome ok or error), for operators to see where a pause goes. The
// controller registers it with its metrics.
var SwitchStepSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "switchyard_migrator_switch_step_seconds",
	Help:    "Time of each named step of a move's switch (the pause is freeze to flip).",
	Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
}, []string{"step", "outcome"})

// stepRunner runs steps in order, times each, and remembers the armed
// undos. One per switch attempt.
type stepRunner struct {
	log   *slog.Logger
	mu    sync.Mutex
	times []StepTime
	armed []step
}

// run runs steps in order and stops at the first that fails, returning
// its error prefixed with its name.
func (sr *stepRunner) run(ctx context.Context, steps []step) error {
	for _, s := range steps {
		if s.undo != nil {
			sr.armed = append(sr.armed, s)
		}
		if err := sr.one(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// one runs a step with the steps it runs alongside.
func (sr *stepRunner) one(ctx context.Context, s step) error {
	errs := make([]error, len(s.with)+1)
	var wg sync.WaitGroup
	for i, w := range s.with {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i+1] = sr.timed(ctx, w.name, w.do)
		}()
	}
	errs[0] = sr.timed(ctx, s.name, s.do)
	wg.Wait()
	return errors.Join(errs...)
}

// tidy runs steps that may not fail the move (after the flip): a failure
// is logged and the next step runs.
func (sr *stepRunner) tidy(ctx context.Context, steps []step) {
	for _, s := range steps {
		if err := sr.one(ctx, s); err != nil {
			sr.log.Warn("switch: tidying after the flip", "err", err)
		}
	}
}

// undo runs the armed undos, newest first, every one whatever the others
// do, and joins their errors.
func (sr *stepRunner) undo(ctx context.Context) error {
	var errs []error
	for i := len(sr.armed) - 1; i >= 0; i-- {
		if err := sr.timed(ctx, "undo-"+sr.armed[i].name, sr.armed[i].undo); err != nil {
			errs = append(errs, err)
		}
	}
	sr.armed = nil
	return errors.Join(errs...)
}

func (sr *stepRunner) timed(ctx context.Context, name string, do func(context.Context) error) error {
	t0 := time.Now()
	err := do(ctx)
	took := time.Since(t0)
	st, outcome := StepTime{Step: name, Took: took}, "ok"
	if err != nil {
		st.Error, outcome = err.Error(), "error"
	}
	sr.mu.Lock()
	sr.times = append(sr.times, st)
	sr.mu.Unlock()
	SwitchStepSeconds.WithLabelValues(name, outcome).Observe(took.Seconds())
	sr.log.Debug("switch step", "step", name, "took", took, "err", err)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// since returns the times of the steps run from index i on, by name.
func (sr *stepRunner) since(i int) map[string]time.Duration {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	out := map[string]time.Duration{}
	for _, st := range sr.times[i:] {
		out[st.Step] += st.Took
	}
	return out
}

// ran is how many step times are recorded.
func (sr *stepRunner) ran() int {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	return len(sr.times)
}

// String lists the steps in the order they ran, with their times.
func (sr *stepRunner) String() string {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	parts := make([]string, len(sr.times))
	for i, st := range sr.times {
		parts[i] = fmt.Sprintf("%s=%s", st.Step, st.Took.Round(10*time.Microsecond))
	}
	return strings.Join(parts, " ")
}

// timeline returns a copy of the step times, in the order they ran.
func (sr *stepRunner) timeline() []StepTime {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	return append([]StepTime(nil), sr.times...)
}
