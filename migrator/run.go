package migrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the "postgres" driver

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/internal/retry"
)

// errAbortRequested: an operator asked for an abort while the move ran.
var errAbortRequested = errors.New("abort requested")

// run is one migrator's work on one move while it holds the tenant's lock.
type run struct {
	mg       *Migrator
	m        *Move
	from, to catalog.Target
	srcDSN   string
	dstDSN   string
	src, dst *sqlx.DB
	tables   []Table
	// changed collects the keys applied since the last full verification
	// (then since the switch's pre-check); the switch verifies those rows.
	changed  map[string][]json.RawMessage
	verified bool
	lastSave time.Time
	// ap applies captured changes (one per run: it keeps its connections).
	ap *applier
	// conv follows the capture's and the apply's rates.
	conv       *convergence
	convPhase  Phase
	lastSample time.Time
	// prep is what the switch measured before its freeze.
	prep switchPrep
	// mu serialises the copy streams' use of the move, the applier, the
	// hooks and saving (the rows themselves stream in parallel).
	mu sync.Mutex
}

func (mg *Migrator) newRun(ctx context.Context, m *Move) (*run, error) {
	r := &run{mg: mg, m: m, changed: map[string][]json.RawMessage{}}
	var err error
	if r.from, _, err = mg.catalog.GetTarget(ctx, m.From); err != nil {
		return nil, fmt.Errorf("source target: %w", err)
	}
	if r.to, _, err = mg.catalog.GetTarget(ctx, m.To); err != nil {
		return nil, fmt.Errorf("destination target: %w", err)
	}
	if r.srcDSN, err = r.from.DSNFor(m.Tenant); err != nil {
		return nil, err
	}
	if r.dstDSN, err = r.to.DSNFor(m.Tenant); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *run) close() {
	if r.ap != nil {
		r.ap.close()
		r.ap = nil
	}
	if r.src != nil {
		r.src.Close()
	}
	if r.dst != nil {
		r.dst.Close()
	}
}

func openDB(ctx context.Context, dsn string) (*sqlx.DB, error) {
	db, err := sqlx.Open("postgres", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	db.SetConnMaxIdleTime(time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// open connects to the source and (once provisioned) the target, and
// discovers the tenant tables.
func (r *run) open(ctx context.Context, needTarget bool) error {
	var err error
	if r.src == nil {
		if r.src, err = openDB(ctx, r.srcDSN); err != nil {
			r.src = nil
			return fmt.Errorf("source database: %w", err)
		}
	}
	if r.tables == nil {
		if r.tables, err = DiscoverTables(ctx, r.src, r.m.Options.KeyColumn); err != nil {
			return err
		}
	}
	if needTarget && r.dst == nil {
		if r.dst, err = openDB(ctx, r.dstDSN); err != nil {
			r.dst = nil
			return fmt.Errorf("target database: %w", err)
		}
	}
	return nil
}

// save persists the move. If an operator changed it meanwhile (an abort),
// it picks that up and returns errAbortRequested.
func (r *run) save(ctx context.Context) error {
	err := r.mg.moves.save(ctx, r.m)
	if !errors.Is(err, catalog.ErrConflict) {
		r.lastSave = time.Now()
		return err
	}
	fresh, gerr := r.mg.moves.get(ctx, r.m.ID)
	if gerr != nil {
		return errors.Join(err, gerr)
	}
	r.m.modifyIndex = fresh.modifyIndex
	if fresh.Status == StatusAborting {
		r.m.Status = StatusAborting
		return errAbortRequested
	}
	return r.mg.moves.save(ctx, r.m)
}

// saveProgress persists at most twice a second.
func (r *run) saveProgress(ctx context.Context) error {
	if time.Since(r.lastSave) < 500*time.Millisecond {
		return nil
	}
	return r.save(ctx)
}

// drive runs phases until the move finishes, pauses or must wait.
func (r *run) drive(ctx context.Context) error {
	log := r.mg.log.With("move", r.m.ID, "tenant", r.m.Tenant)
	if r.m.Phase == PhaseSwitch {
		// Crashed inside the switch: finish it if the flip happened,
		// otherwise undo the freeze and fence and catch up again.
		if err := r.recoverSwitch(ctx); err != nil {
			return r.failed(ctx, PhaseSwitch, err)
		}
		r.m.Switching = false // reconciled: flipped, or back to the catch-up
		if err := r.save(ctx); err != nil {
			return r.failed(ctx, PhaseSwitch, err)
		}
	}
	for {
		if r.m.Status == StatusAborting {
			return r.abort(ctx)
		}
		if r.m.Status == StatusPaused || r.m.Terminal() {
			return nil
		}
		start := time.Now()
		phase := r.m.Phase
		err := r.mg.cfg.Hooks.call(r.mg.cfg.Hooks.BeforePhase, r.m)
		if err == nil {
			err = r.step(ctx)
		}
		if errors.Is(err, errAbortRequested) {
			continue
		}
		if err != nil {
			return r.failed(ctx, phase, fmt.Errorf("%s: %w", phase, err))
		}
		if r.m.Phase == PhaseRetained && phase == PhaseRetained {
			return nil // waiting out the retention window
		}
		if r.m.Took == nil {
			r.m.Took = map[Phase]time.Duration{}
		}
		r.m.Took[phase] += time.Since(start)
		log.Info("move phase done", "phase", phase, "next", r.m.Phase, "took", time.Since(start).Round(time.Millisecond))
		if err := r.save(ctx); err != nil {
			if errors.Is(err, errAbortRequested) {
				continue
			}
			return r.failed(ctx, phase, err)
		}
	}
}

// failed ends a drive on err: the caller's context ended; an outage to
// ride out (driveThrough rebuilds the run); or a failure, which pauses the
// move for an operator.
func (r *run) failed(ctx context.Context, phase Phase, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if rideable(phase, err) {
		return fmt.Errorf("%w: %w", errOutage, err)
	}
	return r.mg.pause(ctx, r.m, err)
}

// step runs the move's current phase and moves it on.
func (r *run) step(ctx context.Context) error {
	phases := map[Phase]func(context.Context) error{
		PhasePreflight: r.preflightPhase,
		PhaseProvision: r.provisionPhase,
		PhaseCapture:   r.capturePhase,
		PhaseCopy:      r.copyPhase,
		PhaseCatchUp:   r.catchUpPhase,
		PhaseSwitch:    r.switchPhase,
		PhaseRetained:  r.retainedPhase,
	}
	if f := phases[r.m.Phase]; f != nil {
		return f(ctx)
	}
	return nil
}

func (r *run) preflightPhase(ctx context.Context) error {
	req := Request{Tenant: r.m.Tenant, To: r.m.To, Options: r.m.Options}
	report, err := r.mg.preflight(ctx, req, true)
	if err != nil {
		return err
	}
	if !report.OK {
		return report.Err()
	}
	r.m.Phase = PhaseProvision
	return nil
}

func (r *run) provisionPhase(ctx context.Context) error {
	if err := r.open(ctx, false); err != nil {
		return err
	}
	if err := r.provision(ctx); err != nil {
		return err
	}
	r.m.Phase = PhaseCapture
	return nil
}

func (r *run) capturePhase(ctx context.Context) error {
	if err := r.open(ctx, true); err != nil {
		return err
	}
	if err := installGuard(ctx, r.src, r.tables, r.m.Options.KeyColumn, r.m.Tenant, "capture"); err != nil {
		return err
	}
	r.m.Fingerprint = fingerprint(r.tables)
	r.m.Phase = PhaseCopy
	return nil
}

func (r *run) copyPhase(ctx context.Context) error {
	if err := r.open(ctx, true); err != nil {
		return err
	}
	if err := r.checkDDL(ctx); err != nil {
		return err
	}
	if !r.m.Resync && retainedBy(ctx, r.dst, r.m.Tenant) != "" {
		r.m.Resync = true
	}
	copyAll := r.copyAll
	if r.m.Resync {
		copyAll = r.resync
	}
	if err := copyAll(ctx); err != nil {
		return err
	}
	r.m.Phase = PhaseCatchUp
	return nil
}

func (r *run) catchUpPhase(ctx context.Context) error {
	if err := r.open(ctx, true); err != nil {
		return err
	}
	if err := r.catchUp(ctx); err != nil {
		return err
	}
	r.m.Phase = PhaseSwitch
	return nil
}

// switchPhase runs the switch. A switch that rolled back goes back to
// catch-up, up to MaxSwitchAttempts.
func (r *run) switchPhase(ctx context.Context) error {
	if err := r.open(ctx, true); err != nil {
		return err
	}
	if err := r.mg.cfg.Hooks.call(r.mg.cfg.Hooks.BeforeSwitch, r.m); err != nil {
		return err
	}
	err := r.cutover(ctx)
	r.m.Switching = false // flipped or rolled back: the next save says so
	if err == nil {
		r.m.Phase = PhaseRetained
		return nil
	}
	if errors.Is(err, ErrDDL) || errors.Is(err, errAbortRequested) || errors.Is(err, errRollbackFailed) || ctx.Err() != nil {
		return err // paused in the switch phase: recoverSwitch reconciles on retry
	}
	r.m.Attempts += r.mg.attemptCost(ctx, err) // a stalled router's lapse is no failed attempt
	r.mg.log.Warn("switch rolled back", "move", r.m.ID, "attempt", r.m.Attempts, "err", err)
	if r.m.Attempts >= r.m.Options.MaxSwitchAttempts {
		// %v, not %w: exhausted attempts pause the move even when the
		// last one met an outage (rideable would retry it forever).
		return fmt.Errorf("switch failed %d times, last: %v", r.m.Attempts, err) //nolint:errorlint // see above
	}
	r.m.Phase = PhaseCatchUp
	return nil
}

// retainedPhase waits out the retention window, then deletes the source's
// copy.
func (r *run) retainedPhase(ctx context.Context) error {
	if wait := time.Until(r.m.RetainUntil); wait > 0 {
		if wait > time.Minute {
			return nil // ResumeAll comes back for it
		}
		if err := retry.Sleep(ctx, wait); err != nil {
			return err
		}
	}
	if err := r.open(ctx, false); err != nil {
		return err
	}
	if err := r.cleanupSource(ctx); err != nil {
		return err
	}
	r.m.Phase, r.m.Status = PhaseDone, StatusDone
	return nil
}

func (h *Hooks) call(f func(*Move) error, m *Move) error {
	if f == nil {
		return nil
	}
	return f(m)
}

// resync brings a retained copy on the destination up to date by
// difference: rows gone from the source are deleted (children first), rows
// missing or different are upserted (parents first). Only what changed since
// the earlier move is written.
func (r *run) resync(ctx context.Context) error {
	a := r.applier()
	key := r.m.Options.KeyColumn
	r.m.Tables = make([]TableProgress, len(r.tables))
	diffs := make([][]json.RawMessage, len(r.tables))
	gone := make([][]json.RawMessage, len(r.tables))
	for i, t := range r.tables {
		src, err := keyHashes(ctx, r.src, t, key, r.m.Tenant, nil)
		if err != nil {
			return err
		}
		dst, err := keyHashes(ctx, r.dst, t, key, r.m.Tenant, nil)
		if err != nil {
			return err
		}
		for k, h := range src {
			if dst[k] != h {
				diffs[i] = append(diffs[i], json.RawMessage(k))
			}
		}
		for k := range dst {
			if _, ok := src[k]; !ok {
				gone[i] = append(gone[i], json.RawMessage(k))
			}
		}
		r.m.Tables[i] = TableProgress{Table: t.Key(), TotalRows: int64(len(src))}
	}
	apply := func(i int, keys []json.RawMessage) error {
		for len(keys) > 0 {
			n := min(len(keys), 500)
			err := a.sync(ctx, map[string][]json.RawMessage{r.tables[i].Key(): keys[:n]})
			if isFKViolation(err) {
				// Rows whose parents were written after the parents'
				// diff: those parents are in the change capture.
				if err = r.applyDone(ctx, i); err == nil {
					err = a.sync(ctx, map[string][]json.RawMessage{r.tables[i].Key(): keys[:n]})
				}
			}
			if err != nil {
				return err
			}
			r.m.Tables[i].Rows += int64(n)
			keys = keys[n:]
		}
		return nil
	}
	for i := len(r.tables) - 1; i >= 0; i-- {
		if err := apply(i, gone[i]); err != nil {
			return err
		}
	}
	for i := range r.tables {
		if err := apply(i, diffs[i]); err != nil {
			return err
		}
		r.m.Tables[i].Rows, r.m.Tables[i].Done = r.m.Tables[i].TotalRows, true
	}
	r.mg.log.Info("re-synced the retained copy by difference", "move", r.m.ID, "changed", sumLens(diffs), "gone", sumLens(gone))
	return nil
}

// applyDone applies the captured changes of the tables before index i
// (the parents, already re-synced or copied), up to the high-water mark of
// now: writers adding parents meanwhile cannot keep it going.
func (r *run) applyDone(ctx context.Context, i int) error {
	a := r.applier()
	only := []string{}
	for _, t := range r.tables[:i] {
		only = append(only, t.Key())
	}
	hwm, err := a.highWater(ctx)
	if err != nil {
		return err
	}
	n, err := a.applyTo(ctx, hwm, only, nil)
	r.mg.log.Debug("applied the parents' captured changes", "move", r.m.ID, "changes", n, "high_water", hwm)
	return err
}

func sumLens(x [][]json.RawMessage) int {
	n := 0
	for _, v := range x {
		n += len(v)
	}
	return n
}

func (r *run) applier() *applier {
	if r.ap == nil || r.ap.src != r.src || r.ap.dst != r.dst {
		if r.ap != nil {
			r.ap.close()
		}
		r.ap = &applier{src: r.src, dst: r.dst, srcDSN: r.srcDSN, dstDSN: r.dstDSN, tables: r.tables,
			keyColumn: r.m.Options.KeyColumn, tenant: r.m.Tenant, batch: r.m.Options.ApplyBatch}
		if h := r.mg.cfg.Hooks; h != nil && h.BeforeApply != nil {
			r.ap.before = func(n int) error { return h.BeforeApply(r.m, n) }
		}
	}
	return r.ap
}

// catchUp brings the backlog down, runs a full verification, and brings
// down what was captured meanwhile, so the switch starts with a small one.
func (r *run) catchUp(ctx context.Context) error {
	if err := r.converge(ctx); err != nil {
		return err
	}
	if err := r.checkDDL(ctx); err != nil {
		return err
	}
	if err := r.verifyFull(ctx); err != nil {
		return err
	}
	return r.converge(ctx)
}

// converge applies captured changes in rounds until the backlog is at most
// CatchUpBacklog. Each round works up to the high-water mark taken when it
// starts, so every round ends; between batches it measures the capture and
// apply rates and says (Converging, Message) when the backlog stops
// shrinking. It does not give up by itself: an operator may abort.
func (r *run) converge(ctx context.Context) error {
	a := r.applier()
	lastDDLCheck := time.Now()
	each := func(_ int, keys map[string][]json.RawMessage) error {
		r.note(keys)
		if err := r.mg.cfg.Hooks.call(r.mg.cfg.Hooks.AfterApply, r.m); err != nil {
			return err
		}
		if time.Since(lastDDLCheck) > 2*time.Second {
			if err := r.checkDDL(ctx); err != nil {
				return err
			}
			lastDDLCheck = time.Now()
		}
		if err := r.sample(ctx, false); err != nil {
			return err
		}
		return r.saveProgress(ctx)
	}
	for {
		hwm, err := a.highWater(ctx)
		if err != nil {
			return err
		}
		if _, err := a.applyTo(ctx, hwm, nil, each); err != nil {
			return err
		}
		if err := r.sample(ctx, true); err != nil {
			return err
		}
		if r.m.Backlog <= r.switchBacklog() {
			return r.saveProgress(ctx)
		}
		if err := r.saveProgress(ctx); err != nil {
			return err
		}
	}
}

// sample measures the backlog and the rates (at most once a second unless
// forced) and updates the move's progress: backlog, rates, ETA, and during
// catch-up whether it converges.
func (r *run) sample(ctx context.Context, force bool) error {
	if !force && time.Since(r.lastSample) < time.Second {
		return nil
	}
	a := r.applier()
	backlog, err := a.backlog(ctx)
	if err != nil {
		return fmt.Errorf("backlog: %w", err)
	}
	r.lastSample = time.Now()
	if r.conv == nil || r.convPhase != r.m.Phase {
		// The backlog grows during the copy by design: judge the
		// catch-up on its own samples.
		r.conv, r.convPhase = &convergence{window: r.mg.cfg.ConvergenceWindow}, r.m.Phase
	}
	st := r.conv.observe(convSample{at: r.lastSample, backlog: int64(backlog), applied: a.applied, busy: a.busy})
	r.m.Backlog, r.m.CapturePerS, r.m.ApplyPerS = backlog, round1(st.CapturePerS), round1(st.ApplyPerS)
	r.m.Converging, r.m.StalledSince = nil, time.Time{}
	if r.m.Phase == PhaseCatchUp && st.Known {
		conv := st.Converging || backlog <= r.switchBacklog()
		r.m.Converging = &conv
		if !conv {
			r.m.StalledSince = st.StalledSince
			r.m.Message = st.message()
			if r.lastSample.Sub(st.StalledSince) < r.conv.window+time.Second {
				r.mg.log.Warn("catch-up is not converging", "move", r.m.ID, "tenant", r.m.Tenant, "why", r.m.Message)
			}
		} else if r.m.Message != "" && r.m.Phase == PhaseCatchUp {
			r.m.Message = ""
		}
	}
	r.m.ETA = r.eta()
	return nil
}

// switchBacklog is the backlog small enough to start the switch: the
// CatchUpBacklog option, or what apply handles in 100 ms if that is more
// (the floor of a catch-up under steady writers is what they write while
// one round runs; the switch's own apply takes it within its budget).
func (r *run) switchBacklog() int {
	return max(r.m.Options.CatchUpBacklog, int(r.m.ApplyPerS/10))
}

func round1(x float64) float64 { return float64(int64(x*10)) / 10 }

// eta is the time until the switch can start, counting the copy still to
// do and the backlog; "" when it cannot be said.
func (r *run) eta() string {
	var left int64
	var rate float64
	for _, t := range r.m.Tables {
		if !t.Done {
			left += max(0, t.TotalRows-t.Rows)
			if t.RowsPerS > 0 {
				rate = t.RowsPerS
			}
		}
	}
	if r.m.Phase != PhaseCopy {
		left = 0
	}
	d, ok := etaToCutover(left, rate, int64(r.m.Backlog), r.m.CapturePerS, r.m.ApplyPerS)
	if !ok {
		return ""
	}
	return d.String()
}

// verifyFull compares every row while writers run: a row may differ only
// because a write to it is still in the change queue. Differences on keys
// with no pending change are real, and stop the move, named.
func (r *run) verifyFull(ctx context.Context) error {
	a := r.applier()
	for attempt := 0; ; attempt++ {
		r.changed = map[string][]json.RawMessage{}
		mismatches, _, err := verifyAll(ctx, r.src, r.dst, r.tables, r.m.Options.KeyColumn, r.m.Tenant, 0)
		if err != nil {
			return err
		}
		pending, err := a.pendingKeys(ctx)
		if err != nil {
			return err
		}
		real := unexcused(mismatches, pending)
		if len(real) == 0 {
			r.verified = true
			return nil
		}
		if attempt >= 2 {
			return fmt.Errorf("%w: %s", ErrVerify, describe(real))
		}
		// Look once more after applying what is queued now (a change may
		// have been captured between the two reads).
		hwm, err := a.highWater(ctx)
		if err != nil {
			return err
		}
		if _, err := a.applyTo(ctx, hwm, nil, func(_ int, keys map[string][]json.RawMessage) error { r.note(keys); return nil }); err != nil {
			return err
		}
	}
}

// unexcused keeps the differing keys that have no captured change pending
// (up to 20 per table): those differences are real.
func unexcused(mismatches []Mismatch, pending map[string]map[string]bool) []Mismatch {
	var real []Mismatch
	for _, mm := range mismatches {
		var keys []string
		for _, k := range mm.Keys {
			if !pending[mm.Table][k] {
				keys = append(keys, k)
			}
		}
		if len(keys) > 0 {
			mm.Keys = keys[:min(len(keys), 20)]
			real = append(real, mm)
		}
	}
	return real
}

// note remembers keys applied since the last full verification.
func (r *run) note(keys map[string][]json.RawMessage) {
	for t, ks := range keys {
		r.changed[t] = append(r.changed[t], ks...)
	}
}

func describe(ms []Mismatch) string {
	s := ""
	for i, m := range ms {
		if i > 0 {
			s += "; "
		}
		s += m.String()
	}
	return s
}

// checkDDL stops the move if a tenant table's shape changed. Source and
// target are read at the same time (it runs inside the switch).
func (r *run) checkDDL(ctx context.Context) error {
	if r.m.Fingerprint == "" {
		return nil
	}
	var dt []Table
	var derr error
	var wg sync.WaitGroup
	if r.dst != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dt, derr = DiscoverTables(ctx, r.dst, r.m.Options.KeyColumn)
		}()
	}
	tables, err := DiscoverTables(ctx, r.src, r.m.Options.KeyColumn)
	wg.Wait()
	if err != nil {
		return err
	}
	if fp := fingerprint(tables); fp != r.m.Fingerprint {
		return fmt.Errorf("%w on the source (fingerprint %s, was %s): finish the schema change on both sides, then abort and start the move again",
			ErrDDL, fp, r.m.Fingerprint)
	}
	if r.dst == nil {
		return nil
	}
	if derr != nil {
		return derr
	}
	if err := SameShape(tables, dt); err != nil {
		return fmt.Errorf("%w on the target: %w", ErrDDL, err)
	}
	return nil
}
