package migrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/switchyard/switchyard/catalog"
)

// ErrTenantBusy: the tenant has a move under way (or another hold): a
// hold of it is refused and nothing changes.
var ErrTenantBusy = errors.New("tenant is busy")

// HoldRequest asks for a hold of a tenant where it is (no move): the same
// freeze, router acknowledgements and write fence a cutover's pause uses,
// around Swap.
type HoldRequest struct {
	Tenant string
	// Reason goes into the freeze announcement (where a cutover puts its
	// move id), e.g. "restore:<backup id>".
	Reason string
	// DB is the tenant's database (its target); Tables its tenant tables.
	DB        *sqlx.DB
	Tables    []Table
	KeyColumn string
	// Budget bounds the hold, from the freeze to the unfreeze (default:
	// the cutover's SwitchBudget default).
	Budget time.Duration
	// Swap runs while the routers hold the tenant's requests and its
	// writes are fenced on DB. Its error undoes the hold (nothing else).
	Swap func(ctx context.Context) error
}

// HoldResult says how long the tenant was held.
type HoldResult struct {
	Hold  time.Duration
	Epoch uint64
}

// HoldTenant holds the tenant where it is and runs req.Swap: under the
// tenant's move lock (ErrLocked if a migrator has it; ErrTenantBusy if a
// move of it is not finished), it installs the tenant's write guard on
// req.DB, then, inside req.Budget, freezes the tenant in the catalog,
// waits for every live router's acknowledgement (they hold its new
// requests and have none in flight), fences its writes, runs Swap,
// unfences and unfreezes; the guard is removed afterwards. Any failure
// unfences and unfreezes: the tenant is served as before.
func (mg *Migrator) HoldTenant(ctx context.Context, req HoldRequest) (res HoldResult, err error) {
	if req.Budget <= 0 {
		req.Budget = 1500 * time.Millisecond
	}
	lock, err := mg.client.LockOpts(mg.lockOptions(req.Tenant))
	if err != nil {
		return res, fmt.Errorf("lock: %w", err)
	}
	lost, err := lock.Lock(ctx.Done())
	if err != nil {
		return res, fmt.Errorf("lock: %w", err)
	}
	if lost == nil {
		return res, fmt.Errorf("%w: %w", ErrTenantBusy, ErrLocked)
	}
	defer func() { _ = lock.Unlock() }()
	if err := mg.refuseOpenMoves(ctx, req.Tenant); err != nil {
		return res, err
	}
	if err := installGuard(ctx, req.DB, req.Tables, req.KeyColumn, req.Tenant, "fence"); err != nil {
		return res, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if rerr := removeGuard(rctx, req.DB, req.Tables, req.Tenant); rerr != nil {
			mg.log.Warn("hold: remove guard", "tenant", req.Tenant, "err", rerr)
		}
	}()
	return mg.hold(ctx, req)
}

// hold is HoldTenant's frozen part.
func (mg *Migrator) hold(ctx context.Context, req HoldRequest) (res HoldResult, err error) {
	budget, cancel := context.WithTimeout(ctx, req.Budget)
	defer cancel()
	start := time.Now()
	frozen, err := mg.catalog.FreezeTenant(budget, req.Tenant, req.Reason, func(t *catalog.Tenant) error {
		if t.State != catalog.StateActive {
			return fmt.Errorf("%w: tenant is %s, not active", ErrTenantBusy, t.State)
		}
		t.State = catalog.StateFrozen
		return nil
	})
	if err != nil {
		if !errors.Is(err, ErrTenantBusy) && !errors.Is(err, catalog.ErrNotFound) {
			// A freeze whose answer was lost may have committed: undo
			// whatever freeze the catalog shows (we hold the lock).
			uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer ucancel()
			err = errors.Join(err, mg.release(uctx, req, catalog.Tenant{}))
		}
		return res, err
	}
	res.Epoch = frozen.Epoch
	defer func() {
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer ucancel()
		if uerr := mg.release(uctx, req, frozen); uerr != nil {
			err = errors.Join(err, uerr)
		}
		res.Hold = time.Since(start)
	}()
	if err := mg.waitAcks(budget, req.Tenant, frozen.Epoch); err != nil {
		return res, err
	}
	if err := fence(budget, req.DB, req.Tenant, req.Reason); err != nil {
		return res, err
	}
	if err := req.Swap(budget); err != nil {
		return res, fmt.Errorf("hold of %s: %w", req.Tenant, err)
	}
	return res, nil
}

// release ends a hold: unfence, then the tenant (still frozen at our
// epoch; any epoch if frozen.Epoch is 0) is active again and the freeze is
// withdrawn; routers release the held requests.
func (mg *Migrator) release(ctx context.Context, req HoldRequest, frozen catalog.Tenant) error {
	var errs []error
	if err := unfence(ctx, req.DB, req.Tenant); err != nil {
		errs = append(errs, err)
	}
	_, err := mg.catalog.UpdateTenant(ctx, req.Tenant, func(t *catalog.Tenant) error {
		if t.State != catalog.StateFrozen || frozen.Epoch != 0 && t.Epoch != frozen.Epoch {
			return errNoChange
		}
		t.State = catalog.StateActive
		return nil
	})
	if err != nil && !errors.Is(err, errNoChange) {
		errs = append(errs, err)
	}
	if err := mg.catalog.ClearFreeze(ctx, req.Tenant); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// refuseOpenMoves refuses a hold of a tenant with a move that has not
// switched yet (a retained or finished move is no obstacle).
func (mg *Migrator) refuseOpenMoves(ctx context.Context, tenant string) error {
	moves, err := mg.moves.list(ctx)
	if err != nil {
		return err
	}
	for _, m := range moves {
		if m.Tenant == tenant && !m.Terminal() && m.Phase != PhaseRetained {
			return fmt.Errorf("%w: move %s of tenant %s is %s", ErrTenantBusy, m.ID, tenant, m.Phase)
		}
	}
	return nil
}

// waitAcks waits until every live router acknowledged epoch for tenant
// (routers whose lease lapsed excepted), within ctx.
func (mg *Migrator) waitAcks(ctx context.Context, tenant string, epoch uint64) error {
	var missing []string
	var polled time.Time
	var index uint64
	for {
		got, next, err := mg.missingAcks(ctx, tenant, epoch, index)
		switch {
		case err == nil && len(got) == 0:
			return nil
		case err == nil:
			missing, index = got, next
			if polled.IsZero() {
				polled = time.Now()
			}
		case ctx.Err() == nil:
			return err
		}
		if ctx.Err() != nil {
			return mg.ackTimeout(missing, polled, ctx.Err())
		}
		// No sleep: the next read blocks until an ack is written.
	}
}
