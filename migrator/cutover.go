package migrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/internal/retry"
)

// cutover is the switch, a sequence of named steps (see step). Before the
// freeze it prepares what the pause then only checks; each step inside the
// pause has a deadline inside SwitchBudget, and any failure before the flip
// runs the armed undos: unfence, unfreeze; the tenant stays on the source
// and keeps serving.
//
// Before the freeze (prepareSteps): read the source's sequences; stamp
// both sides' schemas and check the full shape; top up the backlog and
// verify the rows applied since the full verification; set the target's
// sequences ahead of the source's with headroom; settle: top up and
// verify in rounds until a round is short.
//
// The pause (pauseSteps):
//  1. freeze the tenant in the catalog (new epoch) and announce it;
//  2. wait for every live router to acknowledge: it holds the tenant's new
//     requests and has none in flight;
//  3. fence the tenant on the source and drain the writers that got past
//     the fence check before it;
//  4. apply the last captured changes, and meanwhile compare the schema
//     stamps and check the sequences (other connections);
//  5. verify the rows the final apply wrote (those applied between the full
//     verification and the freeze were verified before it; no row counts:
//     see verifyKeys);
//  6. flip the placement with CAS (still frozen at our epoch → active on the
//     target); routers release the held requests to the new target.
//
// After the flip nothing can fail the move: tidySteps.
func (r *run) cutover(ctx context.Context) error {
	if !r.verified {
		// Resumed straight into the switch: verify everything first.
		if err := r.catchUp(ctx); err != nil {
			return err
		}
	}
	log := r.mg.log.With("move", r.m.ID, "tenant", r.m.Tenant)
	sr := &stepRunner{log: log}
	defer func() { r.m.SwitchSteps = sr.timeline() }()
	if err := sr.run(ctx, r.prepareSteps()); err != nil {
		return err
	}
	// Past this save an abort waits for the switch's outcome; an abort
	// saved before it is seen here (errAbortRequested) and nothing is frozen.
	r.m.Switching = true
	if err := r.save(ctx); err != nil {
		r.m.Switching = false
		return err
	}
	budget, cancel := context.WithTimeout(ctx, r.m.Options.SwitchBudget)
	defer cancel()
	start, first := time.Now(), sr.ran()
	if err := sr.run(budget, r.pauseSteps(ctx)); err != nil {
		return r.rollback(ctx, sr, err)
	}
	r.m.Switched = time.Now().UTC()
	r.m.Pause = time.Since(start)
	r.m.PauseSteps = sr.since(first)
	r.m.RetainUntil = r.m.Switched.Add(r.m.Options.Retention)
	log.Info("switched", "pause", r.m.Pause, "steps", sr.String(), "epoch", r.m.FlipEpoch)
	post, pcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer pcancel()
	sr.tidy(post, r.tidySteps())
	return nil
}

// prepareSteps are the switch's steps before the freeze: they bring the
// backlog down and do, outside the pause, what the pause need only check.
func (r *run) prepareSteps() []step {
	return []step{
		// Never flip to a target no instance can serve: a failure here
		// costs an attempt, not a pause, and the tenant stays where it is.
		{name: "target-healthy", do: r.targetHealthy},
		{name: "sample-sequences", do: r.sampleSequences},
		{name: "check-schema", do: r.stampSchema},
		// Bring the backlog down to what writers add in one short round,
		// and compare the rows applied since the full verification: the
		// fence then applies and compares only the last few.
		{name: "top-up", do: func(ctx context.Context) error { return r.topUp(ctx, 3) }},
		{name: "verify-changed", do: r.verifyChanged},
		{name: "sequences-ahead", do: r.sequencesAhead},
		// What came during the checks: applied and verified in rounds
		// that shrink, so the pause's share does not grow with the tenant.
		{name: "settle", do: r.settle},
	}
}

// settleKeys and settleRounds bound settle: it stops once a round
// verified at most settleKeys rows (a round short enough that writers add
// little during it), or after settleRounds rounds.
const (
	settleKeys   = 100
	settleRounds = 5
)

// settle repeats a top-up and a verification of the rows it applied until
// a round is short. The rows written while the previous check ran (the
// full verification reads every row of the tenant: at 10M rows tens of
// seconds, and thousands of writes) are applied and verified here, outside
// the pause, in rounds that shrink as long as apply and verification
// outrun the writers; the fence then applies and verifies only what came
// during the last, short round, whatever the tenant's size.
func (r *run) settle(ctx context.Context) error {
	for round := 1; ; round++ {
		if err := r.topUp(ctx, 1); err != nil {
			return err
		}
		n := 0
		for _, ks := range r.changed {
			n += len(ks)
		}
		if err := r.verifyChanged(ctx); err != nil {
			return err
		}
		if n <= settleKeys || round >= settleRounds {
			return nil
		}
	}
}

// pauseSteps are the steps from the freeze to the flip. outer is the
// move's context: a flip whose answer was lost is read back under it, not
// under the spent budget.
func (r *run) pauseSteps(outer context.Context) []step {
	steps := []step{
		// The undo is armed before the freeze runs: a freeze whose answer
		// was lost may still have committed.
		{name: "freeze", do: r.freeze, undo: r.unfreeze},
		{name: "acks", do: func(ctx context.Context) error { return r.waitAcks(ctx, r.m.FreezeEpoch) }},
		{name: "fence", do: r.fenceSource, undo: func(ctx context.Context) error { return unfence(ctx, r.src, r.m.Tenant) }},
		{name: "drain", do: r.drain, with: []step{{name: "ddl", do: r.recheckSchema}, {name: "sequences", do: r.checkSequences}}},
	}
	verify := step{name: "verify", do: r.verifyDrained}
	if r.m.Resync {
		// A retained copy we re-synced is still fenced: let it take writes
		// (its guard, DDL, is removed after the flip). Alongside the
		// verification: nothing is routed to it before the flip, and a
		// failed verification leaves it as a failed flip would.
		verify.with = []step{{name: "unfence-target", do: func(ctx context.Context) error { return unfence(ctx, r.dst, r.m.Tenant) }}}
	}
	return append(steps, verify, step{name: "flip", do: func(ctx context.Context) error { return r.flip(ctx, outer) }})
}

// tidySteps run after the flip; a failure is logged, never fails the move.
func (r *run) tidySteps() []step {
	m := r.m
	steps := []step{
		{name: "clear-freeze", do: func(ctx context.Context) error { return r.mg.catalog.ClearFreeze(ctx, m.Tenant) }},
		// The source keeps refusing the tenant's writes (fence mode),
		// without capturing them, until the retention cleanup.
		{name: "source-guard-fence", do: func(ctx context.Context) error {
			return installGuard(ctx, r.src, r.tables, m.Options.KeyColumn, m.Tenant, "fence")
		}},
		{name: "drop-changes", do: func(ctx context.Context) error {
			_, err := r.src.ExecContext(ctx, `DELETE FROM switchyard.changes WHERE tenant_id = $1`, m.Tenant)
			return err
		}},
	}
	if m.Resync {
		steps = append(steps, step{name: "target-guard-remove", do: func(ctx context.Context) error {
			if err := removeGuard(ctx, r.dst, r.tables, m.Tenant); err != nil {
				return err
			}
			_ = dropGuardSchemaIfUnused(ctx, r.dst)
			r.supersede(ctx)
			return nil
		}})
	}
	return steps
}

// rollback undoes a switch attempt that failed before the flip: the armed
// undos run with a fresh context (the budget may be spent). A flip whose
// outcome is unknown is never rolled back blind.
func (r *run) rollback(ctx context.Context, sr *stepRunner, err error) error {
	if errors.Is(err, errOutcomeUnknown) {
		return err
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if rerr := sr.undo(rctx); rerr != nil {
		return errors.Join(err, fmt.Errorf("%w: %w", errRollbackFailed, rerr)) // keep FreezeEpoch: the next run finishes the rollback
	}
	r.m.FreezeEpoch = 0
	return err
}

// freeze freezes the tenant in the catalog at a new epoch (or adopts the
// freeze of an earlier attempt of this move) and announces it to routers,
// in one catalog transaction.
func (r *run) freeze(ctx context.Context) error {
	m := r.m
	frozen, err := r.mg.catalog.FreezeTenant(ctx, m.Tenant, m.ID, func(t *catalog.Tenant) error {
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
		return err
	}
	m.FreezeEpoch = frozen.Epoch
	return nil
}

// unfreeze undoes the freeze: the tenant, if still frozen at our epoch on
// the source, is active again, and the freeze is withdrawn. A freeze that
// reported an error may have committed: the catalog says.
func (r *run) unfreeze(ctx context.Context) error {
	m := r.m
	if m.FreezeEpoch == 0 {
		if t, gerr := r.mg.catalog.GetTenant(ctx, m.Tenant); gerr == nil && t.State == catalog.StateFrozen && t.Target == m.From {
			m.FreezeEpoch = t.Epoch
		}
	}
	var errs []error
	if m.FreezeEpoch != 0 {
		_, err := r.mg.catalog.UpdateTenant(ctx, m.Tenant, func(t *catalog.Tenant) error {
			if t.State == catalog.StateFrozen && t.Epoch == m.FreezeEpoch && t.Target == m.From {
				t.State = catalog.StateActive
				return nil
			}
			return errNoChange
		})
		if err != nil && !errors.Is(err, errNoChange) {
			errs = append(errs, err)
		}
	}
	if err := r.mg.catalog.ClearFreeze(ctx, m.Tenant); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// fenceSource fences the tenant on the source and drains the writers that
// got past the fence check before it.
func (r *run) fenceSource(ctx context.Context) error {
	if err := fence(ctx, r.src, r.m.Tenant, r.m.ID); err != nil {
		return err
	}
	return r.mg.cfg.Hooks.call(r.mg.cfg.Hooks.AfterFence, r.m)
}

// flip moves the placement with CAS: still frozen at our epoch on the
// source → active on the target. When the answer is lost (not a
// conflict), only the catalog can say whether it committed: it is read
// under outer until it answers; until then the source stays fenced and
// the tenant frozen (routers' holds expire into 503 + Retry-After).
func (r *run) flip(ctx, outer context.Context) error {
	m := r.m
	epoch := m.FreezeEpoch
	flipped, err := r.mg.catalog.UpdateTenant(ctx, m.Tenant, func(t *catalog.Tenant) error {
		if t.State != catalog.StateFrozen || t.Epoch != epoch || t.Target != m.From {
			return fmt.Errorf("tenant changed during the switch (epoch %d, state %s): %w", t.Epoch, t.State, catalog.ErrConflict)
		}
		t.Target, t.Tier, t.State = m.To, m.ToTier, catalog.StateActive
		return nil
	})
	if err != nil && !errors.Is(err, catalog.ErrConflict) {
		t, gerr := r.readFlip(outer)
		switch {
		case gerr != nil:
			return fmt.Errorf("%w: flip %w (%w), catalog unreadable: %w", errRollbackFailed, errOutcomeUnknown, err, gerr)
		case t.Target == m.To && t.State == catalog.StateActive && t.Epoch > epoch:
			flipped, err = t, nil
		}
	}
	if err != nil {
		return err
	}
	m.FlipEpoch = flipped.Epoch
	return nil
}

// drain applies the last captured changes: writers are fenced and
// drained, so every change there will be is captured already, and no
// high-water mark need be read (a round trip less inside the pause).
func (r *run) drain(ctx context.Context) error {
	n, err := r.applyUpTo(ctx, r.applier(), math.MaxInt64)
	if err != nil {
		return err
	}
	r.m.Message = fmt.Sprintf("the switch applied the last %d captured changes", n)
	return nil
}

// verifyDrained verifies the rows the final apply wrote: r.changed is
// empty after settle's last verifyChanged, so it holds exactly those (see verifyKeys:
// no counts).
func (r *run) verifyDrained(ctx context.Context) error {
	mismatches, err := verifyKeys(ctx, r.src, r.dst, r.tables, r.m.Options.KeyColumn, r.m.Tenant, r.changed, 20)
	if err != nil {
		return err
	}
	if len(mismatches) > 0 {
		return fmt.Errorf("%w: %s", ErrVerify, describe(mismatches))
	}
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
	return r.applyUpTo(ctx, a, hwm)
}

// applyUpTo applies the captured changes up to hwm, noting the keys it
// wrote for the next verification.
func (r *run) applyUpTo(ctx context.Context, a *applier, hwm int64) (int, error) {
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

// waitAcks waits until every live router acknowledged the freeze epoch,
// but for routers whose lease has lapsed (routerClock).
func (r *run) waitAcks(ctx context.Context, epoch uint64) error {
	return r.mg.waitAcks(ctx, r.m.Tenant, epoch)
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

// rollbackSwitch undoes, after a crash inside the switch, every step of
// the pause that has an undo (each is idempotent), newest first: unfence
// the source, unfreeze the tenant if it is still frozen at our epoch, and
// withdraw the freeze. FreezeEpoch is kept if any fails: the next run
// finishes the rollback.
func (r *run) rollbackSwitch(ctx context.Context) error {
	sr := &stepRunner{log: r.mg.log.With("move", r.m.ID, "tenant", r.m.Tenant)}
	for _, s := range r.pauseSteps(ctx) {
		if s.undo != nil {
			sr.armed = append(sr.armed, s)
		}
	}
	if err := sr.undo(ctx); err != nil {
		return err
	}
	r.m.FreezeEpoch = 0
	return nil
}

// errRollbackFailed marks a switch that could not be undone completely; the
// move then stays in the switch phase so the next run reconciles it.
var errRollbackFailed = errors.New("rollback incomplete")

// errOutcomeUnknown marks a step whose answer was lost and whose effect
// the catalog could not tell (the flip): nothing is undone blind.
var errOutcomeUnknown = errors.New("outcome unknown")

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
	if err := r.rollbackSwitch(ctx); err != nil {
		return err
	}
	r.m.Phase = PhaseCatchUp
	return nil
}

// ErrNoHealthyInstance: the destination's app service has no instance that
// passes its health checks, so a flip would leave the tenant unserved.
var ErrNoHealthyInstance = errors.New("no healthy instance of the destination's app service")

// targetHealthy checks that the destination's app service has at least one
// instance passing its health checks (the routers would have none to send
// the tenant to otherwise), waiting up to targetHealthyWait for one.
func (r *run) targetHealthy(ctx context.Context) error {
	if r.to.Service == "" {
		return nil
	}
	deadline := time.Now().Add(targetHealthyWait)
	for {
		entries, _, err := r.mg.client.Health().Service(r.to.Service, "", true, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("health of %s: %w", r.to.Service, err)
		}
		if len(entries) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: service %s of target %s", ErrNoHealthyInstance, r.to.Service, r.to.ID)
		}
		if err := retry.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// targetHealthyWait is how long the switch waits for the destination's
// first healthy instance before the attempt fails.
const targetHealthyWait = 10 * time.Second
