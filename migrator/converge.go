package migrator

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// defaultConvergenceWindow is how long the backlog may fail to shrink before
// catch-up says it is not converging.
const defaultConvergenceWindow = 10 * time.Second

// convSample is one observation of the change capture.
type convSample struct {
	at      time.Time
	backlog int64         // captured changes not applied
	applied int64         // changes applied so far (cumulative)
	busy    time.Duration // time spent applying them (cumulative)
}

// convergence follows the change capture: how fast writers add changes,
// how fast the migrator applies them, and whether the backlog shrinks over
// a window. It is pure bookkeeping: the caller feeds observations.
type convergence struct {
	window       time.Duration
	samples      []convSample // oldest first; one at least window old kept
	stalledSince time.Time
}

// convStatus is what the observations say.
type convStatus struct {
	Backlog     int64
	CapturePerS float64 // changes captured per second
	ApplyPerS   float64 // changes applied per second of applying (0: not measured)
	// Known: the samples span a whole window, so Converging means something.
	Known        bool
	Converging   bool
	StalledSince time.Time
}

// observe records a sample and returns the status over the window.
func (c *convergence) observe(s convSample) convStatus {
	c.samples = append(c.samples, s)
	// Keep the newest sample at least a window old, drop older ones.
	for len(c.samples) > 1 && s.at.Sub(c.samples[1].at) >= c.window {
		c.samples = c.samples[1:]
	}
	st := convStatus{Backlog: s.backlog}
	old := c.samples[0]
	if dt := s.at.Sub(old.at).Seconds(); dt > 0 {
		captured := (s.backlog - old.backlog) + (s.applied - old.applied)
		st.CapturePerS = math.Max(0, float64(captured)/dt)
	}
	if busy := (s.busy - old.busy).Seconds(); busy > 0 {
		st.ApplyPerS = float64(s.applied-old.applied) / busy
	}
	if s.at.Sub(old.at) < c.window {
		return st
	}
	st.Known = true
	st.Converging = s.backlog < old.backlog || s.backlog == 0
	if st.Converging {
		c.stalledSince = time.Time{}
	} else if c.stalledSince.IsZero() {
		c.stalledSince = old.at
	}
	st.StalledSince = c.stalledSince
	return st
}

// message says in words why a backlog does not shrink.
func (st convStatus) message() string {
	if !st.Known || st.Converging {
		return ""
	}
	growth := st.CapturePerS - st.ApplyPerS
	if st.ApplyPerS == 0 {
		return fmt.Sprintf("backlog %s not shrinking: writers add %s/s and nothing was applied in the last window",
			thousands(st.Backlog), thousands(int64(st.CapturePerS)))
	}
	if growth > 0 {
		return fmt.Sprintf("backlog %s growing at %s/s: writers (%s/s) outpace apply (%s/s)",
			thousands(st.Backlog), thousands(int64(growth)), thousands(int64(st.CapturePerS)), thousands(int64(st.ApplyPerS)))
	}
	return fmt.Sprintf("backlog %s not shrinking: writers (%s/s) keep pace with apply (%s/s)",
		thousands(st.Backlog), thousands(int64(st.CapturePerS)), thousands(int64(st.ApplyPerS)))
}

// etaToCutover estimates the time until the switch can start: the rest of
// the copy at its rate, then the backlog (grown by the capture meanwhile)
// applied at what apply gains on the writers. ok is false when it cannot be
// said: a copy with no rate yet, or a backlog that apply does not outrun
// (or whose apply rate is not measured yet).
func etaToCutover(copyLeft int64, copyPerS float64, backlog int64, capturePerS, applyPerS float64) (time.Duration, bool) {
	var copyS float64
	if copyLeft > 0 {
		if copyPerS <= 0 {
			return 0, false
		}
		copyS = float64(copyLeft) / copyPerS
	}
	projected := float64(backlog) + capturePerS*copyS
	var catchS float64
	if projected > 0 {
		if applyPerS <= capturePerS {
			return 0, false
		}
		catchS = projected / (applyPerS - capturePerS)
	}
	d := time.Duration((copyS + catchS) * float64(time.Second))
	if d < time.Second && (copyLeft > 0 || backlog > 0) {
		d = time.Second // something is still waiting: never "0s"
	}
	return d.Round(time.Second), true
}

// thousands formats n with comma separators (12,000).
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}
