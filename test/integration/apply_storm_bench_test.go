package integration

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/switchyard/switchyard/migrator"
)

// BenchmarkApplyUnderStorm: apply's margin over the write rate at the
// orders app's saturation, with a backlog to work on. A tenant of
// SWITCHYARD_LOAD_ROWS rows (100,000) moves pool → pool under 32 writers
// without sleeps; a hook stalls its first catch-up batch for
// SWITCHYARD_STALL_SECONDS (5), so the backlog grows to several full
// batches, and the benchmark watches the change queue (count and largest
// id, every 100 ms) while catch-up drains it. Over the drain it reports
// changes applied per second against changes captured per second, both
// measured in the same window while the storm runs (the move's own apply
// rate mostly sees small catch-up rounds at saturation). Run with
// -benchtime=1x.
func BenchmarkApplyUnderStorm(b *testing.B) {
	rows := envInt(b, "SWITCHYARD_LOAD_ROWS", 100_000)
	stall := time.Duration(envInt(b, "SWITCHYARD_STALL_SECONDS", 5)) * time.Second
	for b.Loop() {
		s := newMoveStack(b)
		s.seedTenantBulk("stormed", rows)
		var stalledUntil atomic.Int64
		var once sync.Once
		hooks := &migrator.Hooks{BeforeApply: func(m *migrator.Move, _ int) error {
			if m.Phase == migrator.PhaseCatchUp {
				once.Do(func() { time.Sleep(stall); stalledUntil.Store(time.Now().UnixNano()) })
			}
			return nil
		}}
		mg := newMigrator(b, s.consul.Client(), migrator.Config{Logger: testLogger(b), Hooks: hooks})
		var samples []queueSample
		m, _ := stormedMove(b, s, mg, "stormed", 0, 2*time.Minute, func() func() {
			queue := watchQueue(b, s.pgPool.DSN("pool"), "stormed")
			return func() { samples = queue.halt() }
		})
		if m.Phase != migrator.PhaseRetained {
			b.Fatalf("the move did not finish: %s %s %s", m.Phase, m.Status, m.Error)
		}
		reportDrain(b, samples, time.Unix(0, stalledUntil.Load()))
	}
}

// queueSample is the change queue of a tenant at one moment.
type queueSample struct {
	at      time.Time
	backlog int64 // changes captured, not applied
	lastID  int64 // the change ids' sequence: captures so far (one tenant is captured)
}

type queueWatch struct {
	mu      sync.Mutex
	samples []queueSample
	stop    chan struct{}
	done    chan struct{}
}

// watchQueue samples tenant's change queue every 100 ms until halt.
func watchQueue(b *testing.B, dsn, tenant string) *queueWatch {
	db, err := sqlx.Connect("postgres", dsn)
	if err != nil {
		b.Fatal(err)
	}
	w := &queueWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer db.Close()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			var q queueSample
			// Before the guard exists the table may not either: no sample.
			err := db.QueryRowContext(context.Background(), `SELECT (SELECT count(*) FROM switchyard.changes WHERE tenant_id = $1), last_value FROM switchyard.changes_id_seq`, tenant).Scan(&q.backlog, &q.lastID)
			if err == nil {
				q.at = time.Now()
				w.mu.Lock()
				w.samples = append(w.samples, q)
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *queueWatch) halt() []queueSample {
	close(w.stop)
	<-w.done
	return w.samples
}

// reportDrain reports apply against capture over the drain: from the
// first sample after the stall ended to the first one whose backlog is at
// most a tenth of the backlog then.
func reportDrain(b *testing.B, samples []queueSample, stallEnd time.Time) {
	start := -1
	for i, q := range samples {
		if q.at.After(stallEnd) {
			start = i
			break
		}
	}
	if start < 0 {
		b.Fatalf("no sample after the stall ended (%d samples)", len(samples))
	}
	s0 := samples[start]
	end := -1
	for i := start + 1; i < len(samples); i++ {
		if samples[i].backlog*10 <= s0.backlog {
			end = i
			break
		}
	}
	if end < 0 {
		b.Fatalf("the backlog of %d never drained to a tenth", s0.backlog)
	}
	s1 := samples[end]
	dt := s1.at.Sub(s0.at).Seconds()
	captured := s1.lastID - s0.lastID
	applied := s0.backlog - s1.backlog + captured
	apply, capture := float64(applied)/dt, float64(captured)/dt
	b.ReportMetric(apply, "apply/s")
	b.ReportMetric(capture, "capture/s")
	b.ReportMetric(apply/max(capture, 1), "apply-vs-capture")
	b.Logf("drained a backlog of %d to %d in %.2f s under the storm: applied %d (%.0f/s), captured %d (%.0f/s): apply %.1fx the capture rate",
		s0.backlog, s1.backlog, dt, applied, apply, captured, capture, apply/max(capture, 1))
}
