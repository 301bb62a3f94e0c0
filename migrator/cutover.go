package migrator

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/internal/retry"
)

// cutover is the switch. Each step has a deadline inside SwitchBudget, and
// any failure before the flip rolls back: unfence, unfreeze, the tenant stays
// on the source and keeps serving.
//
//  1. freeze the tenant in the catalog (new epoch) and announce it;
//  2. wait for every live router to acknowledge: it holds the tenant's new
//     requests and has none in flight;
//  3. fence the tenant on the source and drain the writers that got past
//     the fence check before it;
//  4. apply the last captured changes;
//  5. verify the rows the final apply wrote (those applied between the full
//     verification and the freeze were verified before it; no row counts:
//     see verifyKeys);
//  6. move the target's sequences past the source's;
//  7. flip the placement with CAS (still frozen at our epoch → active on the
//     target); routers release the held requests to the new target.
func (r *run) cutover(ctx context.Context) (err error) {
	m := r.m
	log := r.mg.log.With("move", m.ID, "tenant", m.Tenant)
	if !r.verified {
		// Resumed straight into the switch: verify everything first.
		if err := r.catchUp(ctx); err != nil {
			return err
		}
	}
	if err := r.checkDDL(ctx); err != nil {
		return err
	}
	// Bring the backlog down to what writers add in one short round, and
	// compare the rows applied since the full verification before the
	// freeze: the fence then applies and compares only the last few.
	if err := r.topUp(ctx, 3); err != nil {
		return err
	}
	if err := r.verifyChanged(ctx); err != nil {
		return err
	}
	if err := r.topUp(ctx, 1); err != nil { // what came during the check
		return err
	}
	budget, cancel := context.WithTimeout(ctx, m.Options.SwitchBudget)
	defer cancel()
	start := time.Now()
	steps := map[string]time.Duration{}
	mark := func(name string, since time.Time) { steps[name] = time.Since(since) }

	// 1. Freeze. The rollback is armed first: a freeze whose answer was
	// lost may still have committed.
	t0 := time.Now()
	fenced, flipUnknown := false, false
	defer func() {
		if err == nil || flipUnknown {
			return // a flip that may have committed is never rolled back blind
		}
		// Roll back with a fresh context: the budget may be spent.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer rcancel()
		if m.FreezeEpoch == 0 {
			// Did the freeze commit although it reported an error?
			if t, gerr := r.mg.catalog.GetTenant(rctx, m.Tenant); gerr == nil && t.State == catalog.StateFrozen && t.Target == m.From {
				m.FreezeEpoch = t.Epoch
			}
		}
		if rerr := r.rollbackSwitch(rctx, fenced); rerr != nil {
			err = errors.Join(err, fmt.Errorf("%w: %v", errRollbackFailed, rerr))
		}
	}()
	frozen, err := r.mg.catalog.UpdateTenant(budget, m.Tenant, func(t *catalog.Tenant) error {
		if t.Target != m.From {
			return fmt.Errorf("tenant is on %s, not %s: %w", t.Target, m.From, catalog.ErrConflict)
		}
		switch t.State {
		case catalog.StateActive:
			t.State = catalog.StateFrozen
		case catalog.StateFrozen:
			// Frozen by an earlier attempt of this move (one move per
			// tenant holds the lock): adopt it.
		default:
			return fmt.Errorf("tenant is %s, not active: %w", t.State, catalog.ErrConflict)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("freeze: %w", err)
	}
	m.FreezeEpoch = frozen.Epoch
	if err := r.mg.catalog.PutFreeze(budget, catalog.Freeze{Tenant: m.Tenant, Epoch: frozen.Epoch, Move: m.ID}); err != nil {
		return err
	}
	mark("freeze", t0)

	// 2. Every live router acknowledges.
	t0 = time.Now()
	if err := r.waitAcks(budget, frozen.Epoch); err != nil {
		return err
	}
	mark("acks", t0)

	// 3. Fence and drain.
	t0 = time.Now()
	fenced = true
	if err := fence(budget, r.src, m.Tenant, m.ID); err != nil {
		return err
	}
	if err := r.mg.cfg.Hooks.call(r.mg.cfg.Hooks.AfterFence, m); err != nil {
		return err
	}
	mark("fence", t0)

	// 4.–6. The last changes, their verification, the DDL check and the
	// sequences (the last two alongside the first two).
	if err := r.settle(budget, steps); err != nil {
		return err
	}

	// A retained copy we re-synced is still fenced: let it take writes
	// (its guard, DDL, is removed after the flip).
	if m.Resync {
		t0 = time.Now()
		if err := unfence(budget, r.dst, m.Tenant); err != nil {
			return err
		}
		mark("unfence-target", t0)
	}

	// 7. Flip.
	t0 = time.Now()
	flipped, err := r.mg.catalog.UpdateTenant(budget, m.Tenant, func(t *catalog.Tenant) error {
		if t.State != catalog.StateFrozen || t.Epoch != frozen.Epoch || t.Target != m.From {
			return fmt.Errorf("tenant changed during the switch (epoch %d, state %s): %w", t.Epoch, t.State, catalog.ErrConflict)
		}
		t.Target, t.Tier, t.State = m.To, m.ToTier, catalog.StateActive
		return nil
	})
	if err != nil && !errors.Is(err, catalog.ErrConflict) {
		// The answer was lost, not the write perhaps: only the catalog can
		// say. Until it does, the source stays fenced and the tenant frozen
		// (routers' holds expire into 503 + Retry-After).
		t, gerr := r.readFlip(ctx)
		switch {
		case gerr != nil:
			flipUnknown = true
			return fmt.Errorf("%w: flip outcome unknown (%v), catalog unreadable: %v", errRollbackFailed, err, gerr)
		case t.Target == m.To && t.State == catalog.StateActive && t.Epoch > frozen.Epoch:
			flipped, err = t, nil
		}
	}
	if err != nil {
		return fmt.Errorf("flip: %w", err)
	}
	mark("flip", t0)
	m.FlipEpoch = flipped.Epoch
	m.Switched = time.Now().UTC()
	m.Pause = time.Since(start)
	m.PauseSteps = steps
	m.RetainUntil = m.Switched.Add(m.Options.Retention)
	log.Info("switched", "pause", m.Pause, "steps", fmtSteps(steps), "epoch", flipped.Epoch)

	// After the flip nothing can fail the move: what is left is tidying.
	post, pcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer pcancel()
	if err := r.mg.catalog.ClearFreeze(post, m.Tenant); err != nil {
		log.Warn("clear freeze", "err", err)
	}
	// The source keeps refusing the tenant's writes (fence mode), without
	// capturing them, until the retention cleanup.
	if err := installGuard(post, r.src, r.tables, m.Options.KeyColumn, m.Tenant, "fence"); err != nil {
		log.Warn("switch source guard to fence mode", "err", err)
	}
	if _, err := r.src.ExecContext(post, `DELETE FROM switchyard.changes WHERE tenant_id = $1`, m.Tenant); err != nil {
		log.Warn("drop captured changes", "err", err)
	}
	if m.Resync {
		if err := removeGuard(post, r.dst, r.tables, m.Tenant); err != nil {
			log.Warn("remove the guard of the re-synced copy", "err", err)
		}
		_ = dropGuardSchemaIfUnused(post, r.dst)
		r.supersede(post)
	}
	return nil
}

// settle runs the switch's steps 4 to 6 with the source fenced: the final
// apply then the verification of the rows it wrote, and meanwhile the DDL
// check and the sequences (other connections; none depends on the others).
func (r *run) settle(ctx context.Context, steps map[string]time.Duration) error {
	var ddlErr, seqErr error
	var ddlTook, seqTook time.Duration
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		t0 := time.Now()
		ddlErr, ddlTook = r.checkDDL(ctx), time.Since(t0)
	}()
	go func() {
		defer wg.Done()
		t0 := time.Now()
		seqErr, seqTook = r.advanceSequences(ctx), time.Since(t0)
	}()
	err := r.finalApply(ctx, steps)
	wg.Wait()
	steps["ddl"], steps["sequences"] = ddlTook, seqTook
	return errors.Join(ddlErr, err, seqErr)
}

// finalApply applies the last captured changes (writers are fenced and
// drained, so the high-water mark taken now covers every change there will
// be) and verifies the rows it wrote: r.changed is empty after
// verifyChanged, so it holds exactly those (see verifyKeys: no counts).
func (r *run) finalApply(ctx context.Context, steps map[string]time.Duration) error {
	t0 := time.Now()
	n, err := r.applyNoted(ctx, r.applier())
	if err != nil {
		return err
	}
	steps["drain"] = time.Since(t0)
	r.m.Message = fmt.Sprintf("the switch applied the last %d captured changes", n)
	t0 = time.Now()
	mismatches, err := verifyKeys(ctx, r.src, r.dst, r.tables, r.m.Options.KeyColumn, r.m.Tenant, r.changed, 20)
	if err != nil {
		return err
	}
	if len(mismatches) > 0 {
		return fmt.Errorf("%w: %s", ErrVerify, describe(mismatches))
	}
	steps["verify"] = time.Since(t0)
	return nil
}

// applyNoted applies the captured changes up to the high-water mark taken
// now, noting the keys it wrote for the next verification, and returns
// how many it applied.
func (r *run) applyNoted(ctx context.Context, a *applier) (int, error) {
	hwm, err := a.highWater(ctx)
	if err != nil {
		return 0, err
	}
	return a.applyTo(ctx, hwm, nil, func(_ int, keys map[string][]json.RawMessage) error { r.note(keys); return nil })
}

// topUp applies captured changes in up to rounds rounds (each up to the
// high-water mark of its start) until a round finds at most half the
// CatchUpBacklog: catch-up stops at what apply does in 100 ms, and
// what is left at the freeze is applied inside the pause.
func (r *run) topUp(ctx context.Context, rounds int) error {
	a := r.applier()
	for round := 0; round < rounds; round++ {
		n, err := r.applyNoted(ctx, a)
		if err != nil {
			return err
		}
		if n <= r.m.Options.CatchUpBacklog/2 {
			return nil
		}
	}
	return nil
}

// verifyChanged compares, outside the fence, the rows applied since the
// full verification. A row may differ only because a later write to it is
// still queued: the switch's final apply brings it, and the fence verifies
// it then. Any other difference stops the move, named. Afterwards
// r.changed starts empty, so the switch compares only what it applies.
func (r *run) verifyChanged(ctx context.Context) error {
	mismatches, err := verifyKeys(ctx, r.src, r.dst, r.tables, r.m.Options.KeyColumn, r.m.Tenant, r.changed, 0)
	if err != nil {
		return err
	}
	pending := map[string]map[string]bool{}
	if len(mismatches) > 0 {
		if pending, err = r.applier().pendingKeys(ctx); err != nil {
			return err
		}
	}
	if real := unexcused(mismatches, pending); len(real) > 0 {
		return fmt.Errorf("%w: %s", ErrVerify, describe(real))
	}
	r.changed = map[string][]json.RawMessage{}
	return nil
}

// supersede closes the earlier move whose retained copy this move took
// back into service: its cleanup must never run.
func (r *run) supersede(ctx context.Context) {
	moves, err := r.mg.moves.list(ctx)
	if err != nil {
		return
	}
	for _, old := range moves {
		if old.ID == r.m.ID || old.Tenant != r.m.Tenant || old.Phase != PhaseRetained || old.From != r.m.To {
			continue
		}
		old.Phase, old.Status = PhaseDone, StatusDone
		old.Error = "superseded: the tenant moved back onto its retained copy in move " + r.m.ID
		if err := r.mg.moves.save(ctx, old); err != nil {
			r.mg.log.Warn("close superseded move", "move", old.ID, "err", err)
		}
	}
}

func fmtSteps(steps map[string]time.Duration) string {
	names := make([]string, 0, len(steps))
	for n := range steps {
		names = append(names, n)
	}
	sort.Strings(names)
	s := ""
	for _, n := range names {
		s += fmt.Sprintf("%s=%s ", n, steps[n].Round(10*time.Microsecond))
	}
	return s
}

// waitAcks waits until every live router acknowledged the freeze epoch,
// but for routers whose lease has lapsed (routerClock).
func (r *run) waitAcks(ctx context.Context, epoch uint64) error {
	var missing []string
	var polled time.Time // the first poll's end: keys seen since moved during the wait
	for {
		got, err := r.mg.missingAcks(ctx, r.m.Tenant, epoch)
		switch {
		case err == nil && len(got) == 0:
			return nil
		case err == nil:
			missing = got
			if polled.IsZero() {
				polled = time.Now()
			}
		case ctx.Err() == nil:
			return err
		}
		select {
		case <-ctx.Done(): // the deadline, often inside a read: judged on the last answer
			return r.mg.ackTimeout(missing, polled, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// advanceSequences sets every target sequence past the source's value (and
// past the largest value already on the target).
func (r *run) advanceSequences(ctx context.Context) error {
	var seqs []string
	for _, t := range r.tables {
		seqs = append(seqs, t.Sequences...)
	}
	if len(seqs) == 0 {
		return nil
	}
	// One round trip per side: every sequence's last value on the source
	// (NULL if never used), then every one the destination has set past
	// it (setval and pg_sequence_last_value of a missing one are NULL).
	src, dst := make([]string, len(seqs)), make([]string, len(seqs))
	args := make([]any, len(seqs))
	for i, seq := range seqs {
		src[i] = fmt.Sprintf("pg_sequence_last_value(to_regclass($%d))", i+1)
		args[i] = seq
	}
	last := make([]sql.NullInt64, len(seqs))
	dests := make([]any, len(seqs))
	for i := range last {
		dests[i] = &last[i]
	}
	if err := r.src.QueryRowContext(ctx, "SELECT "+strings.Join(src, ", "), args...).Scan(dests...); err != nil {
		return fmt.Errorf("read sequences %v: %w", seqs, err)
	}
	dargs := make([]any, 0, 2*len(seqs))
	for i, seq := range seqs {
		dst[i] = fmt.Sprintf("setval(to_regclass($%[1]d), GREATEST(pg_sequence_last_value(to_regclass($%[1]d)), $%[2]d::bigint))", 2*i+1, 2*i+2)
		dargs = append(dargs, seq, last[i])
	}
	if _, err := r.dst.ExecContext(ctx, "SELECT "+strings.Join(dst, ", "), dargs...); err != nil {
		return fmt.Errorf("advance sequences %v: %w", seqs, err)
	}
	return nil
}

// readFlip reads the tenant with a consistent read, again and again (with
// backoff) until the catalog answers or ctx ends: whether a flip whose
// answer was lost committed decides everything after it.
func (r *run) readFlip(ctx context.Context) (catalog.Tenant, error) {
	ctx = catalog.Consistent(ctx)
	wait := 50 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		t, err := r.mg.catalog.GetTenant(rctx, r.m.Tenant)
		cancel()
		if err == nil {
			return t, nil
		}
		r.mg.log.Warn("switch: flip outcome unknown, catalog unreadable; staying fenced and frozen", "tenant", r.m.Tenant, "err", err)
		if serr := retry.Sleep(ctx, wait); serr != nil {
			return catalog.Tenant{}, errors.Join(err, serr)
		}
		wait = min(2*wait, time.Second)
	}
}

// rollbackSwitch undoes a switch that did not flip: unfence the source,
// unfreeze the tenant if we froze it, and withdraw the freeze.
func (r *run) rollbackSwitch(ctx context.Context, fenced bool) error {
	var errs []error
	if fenced || r.m.FreezeEpoch != 0 {
		if err := unfence(ctx, r.src, r.m.Tenant); err != nil {
			errs = append(errs, err)
		}
	}
	if r.m.FreezeEpoch != 0 {
		_, err := r.mg.catalog.UpdateTenant(ctx, r.m.Tenant, func(t *catalog.Tenant) error {
			if t.State == catalog.StateFrozen && t.Epoch == r.m.FreezeEpoch && t.Target == r.m.From {
				t.State = catalog.StateActive
				return nil
			}
			return errNoChange
		})
		if err != nil && !errors.Is(err, errNoChange) {
			errs = append(errs, err)
		}
	}
	if err := r.mg.catalog.ClearFreeze(ctx, r.m.Tenant); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...) // keep FreezeEpoch: the next run finishes the rollback
	}
	r.m.FreezeEpoch = 0
	return nil
}

// errRollbackFailed marks a switch that could not be undone completely; the
// move then stays in the switch phase so the next run reconciles it.
var errRollbackFailed = errors.New("rollback incomplete")

var errNoChange = errors.New("no change needed")

// recoverSwitch decides, after a crash inside the switch, which side of the
// flip the move is on: the catalog is the truth.
func (r *run) recoverSwitch(ctx context.Context) error {
	t, err := r.mg.catalog.GetTenant(catalog.Consistent(ctx), r.m.Tenant)
	if err != nil {
		return err
	}
	if err := r.open(ctx, true); err != nil {
		return err
	}
	if t.Target == r.m.To && t.Epoch >= r.m.FreezeEpoch {
		// The flip committed: finish the tidying the crash interrupted.
		r.m.Phase = PhaseRetained
		if r.m.Switched.IsZero() {
			r.m.Switched = time.Now().UTC()
			r.m.RetainUntil = r.m.Switched.Add(r.m.Options.Retention)
			r.m.FlipEpoch = t.Epoch
		}
		_ = r.mg.catalog.ClearFreeze(ctx, r.m.Tenant)
		if err := installGuard(ctx, r.src, r.tables, r.m.Options.KeyColumn, r.m.Tenant, "fence"); err != nil {
			return err
		}
		if err := fence(ctx, r.src, r.m.Tenant, r.m.ID); err != nil {
			return err
		}
		_, err := r.src.ExecContext(ctx, `DELETE FROM switchyard.changes WHERE tenant_id = $1`, r.m.Tenant)
		return err
	}
	r.mg.log.Info("rolling back an interrupted switch", "move", r.m.ID, "tenant", r.m.Tenant)
	if t.State == catalog.StateFrozen && r.m.FreezeEpoch == 0 {
		r.m.FreezeEpoch = t.Epoch // froze, crashed before saving the epoch
	}
	if err := r.rollbackSwitch(ctx, true); err != nil {
		return err
	}
	r.m.Phase = PhaseCatchUp
	return nil
}
