package migrator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/internal/retry"
)

// Hooks are called at fixed points of a move; an error returned stops the
// move there as if the process had died (tests use them to inject faults).
type Hooks struct {
	// BeforePhase is called each time the run is about to work on the
	// move's current phase (m.Phase), before it does anything in it.
	BeforePhase func(m *Move) error
	BeforeChunk func(m *Move, table string) error
	AfterChunk  func(m *Move) error
	AfterApply  func(m *Move) error
	// BeforeApply is called before each batch of captured changes is
	// applied, with its size (tests slow the apply down with it).
	BeforeApply  func(m *Move, changes int) error
	BeforeSwitch func(m *Move) error
	AfterFence   func(m *Move) error
}

// Migrator runs moves. Any number of migrators may run; a Consul lock per
// tenant makes sure one at a time works on a tenant's move.
type Migrator struct {
	cfg     Config
	client  *api.Client
	catalog *catalog.Store
	moves   *moveStore
	log     *slog.Logger
	routers routerClock
}

// New returns a migrator.
func New(client *api.Client, cfg Config) (*Migrator, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("migrator config: %w", err)
	}
	return &Migrator{cfg: cfg, client: client, catalog: catalog.NewStore(client, cfg.Prefix),
		moves: &moveStore{client: client, keys: catalog.NewKeys(cfg.Prefix)}, log: cfg.Logger.With("component", "migrator")}, nil
}

// Request asks for one move.
type Request struct {
	Tenant  string  `json:"tenant"`
	To      string  `json:"to"`
	Reason  string  `json:"reason,omitempty"`
	Options Options `json:"options,omitempty"`
}

// Create validates a move request, runs the preflight and stores the move
// (phase preflight, running). Run carries it out.
func (mg *Migrator) Create(ctx context.Context, req Request) (*Move, *PreflightReport, error) {
	req.Options.setDefaults()
	if err := req.Options.Validate(); err != nil {
		return nil, nil, err
	}
	report, err := mg.Preflight(ctx, req)
	if err != nil {
		return nil, report, err
	}
	if !report.OK {
		return nil, report, report.Err()
	}
	t, err := mg.catalog.GetTenant(ctx, req.Tenant)
	if err != nil {
		return nil, report, err
	}
	to, _, err := mg.catalog.GetTarget(ctx, req.To)
	if err != nil {
		return nil, report, err
	}
	now := time.Now().UTC()
	m := &Move{ID: newMoveID(), Tenant: req.Tenant, From: t.Target, To: req.To, FromTier: t.Tier, ToTier: to.Tier,
		Reason: req.Reason, Phase: PhasePreflight, Status: StatusRunning, Created: now, Updated: now, Options: req.Options}
	if err := mg.moves.create(ctx, m); err != nil {
		return nil, report, err
	}
	created, err := mg.moves.get(ctx, m.ID)
	if err != nil {
		return nil, report, err
	}
	mg.log.Info("move created", "move", m.ID, "tenant", m.Tenant, "from", m.From, "to", m.To, "reason", m.Reason)
	return created, report, nil
}

// ActiveMove returns the tenant's unfinished move (one not yet switched or
// aborted), or nil.
func (mg *Migrator) ActiveMove(ctx context.Context, tenant string) (*Move, error) {
	id, err := mg.moves.activeMove(ctx, tenant)
	if err != nil || id == "" {
		return nil, err
	}
	return mg.moves.get(ctx, id)
}

// Get returns a move.
func (mg *Migrator) Get(ctx context.Context, id string) (*Move, error) { return mg.moves.get(ctx, id) }

// List returns every move, newest first.
func (mg *Migrator) List(ctx context.Context) ([]*Move, error) { return mg.moves.list(ctx) }

// Abort asks a move to stop and clean up. Before the switch the tenant stays
// where it was and everything the move created is removed; after it, the
// answer is ErrTooLateToAbort. If no migrator is running the move, Abort
// cleans up itself.
func (mg *Migrator) Abort(ctx context.Context, id string) (*Move, error) {
	for attempt := 0; attempt < 20; attempt++ {
		m, err := mg.waitOutSwitch(ctx, id)
		if err != nil {
			return nil, err
		}
		if m.Phase == PhaseAborted {
			return m, nil
		}
		if m.Phase == PhaseRetained || m.Phase == PhaseDone {
			return m, ErrTooLateToAbort
		}
		if t, err := mg.catalog.GetTenant(ctx, m.Tenant); err == nil && t.Target == m.To {
			return m, ErrTooLateToAbort // flipped, whatever the record says
		}
		m.Status = StatusAborting
		if err := mg.moves.save(ctx, m); err != nil {
			if errors.Is(err, catalog.ErrConflict) {
				continue
			}
			return nil, err
		}
		// If nobody holds the lock, run the abort here.
		err = mg.Run(ctx, id)
		if err != nil && !errors.Is(err, ErrLocked) {
			return nil, err
		}
		return mg.moves.get(ctx, id)
	}
	return nil, catalog.ErrConflict
}

// waitOutSwitch returns the move once it is not inside a switch's pause
// (Move.Switching), or once the switch has had its budget and more (its
// migrator may have died: the abort then goes ahead and the next run
// reconciles the switch first).
func (mg *Migrator) waitOutSwitch(ctx context.Context, id string) (*Move, error) {
	var deadline time.Time
	for {
		m, err := mg.moves.get(ctx, id)
		if err != nil || !m.Switching {
			return m, err
		}
		if deadline.IsZero() {
			m.Options.setDefaults()
			deadline = time.Now().Add(m.Options.SwitchBudget + 10*time.Second)
		}
		if time.Now().After(deadline) {
			return m, nil
		}
		if err := retry.Sleep(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// Retry resumes a paused move.
func (mg *Migrator) Retry(ctx context.Context, id string) (*Move, error) {
	m, err := mg.moves.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if m.Status != StatusPaused || m.Terminal() {
		return m, fmt.Errorf("%w: move %s is %s (%s); only a paused move can be retried", ErrNotPaused, id, m.Phase, m.Status)
	}
	m.Status, m.Error, m.Attempts = StatusRunning, "", 0
	if err := mg.moves.save(ctx, m); err != nil {
		return nil, err
	}
	return m, nil
}

// ResumeAll runs every unfinished move that no other migrator holds, one
// after another, until ctx ends. Moves retained past their window are
// cleaned up. A controller calls it on start and periodically.
func (mg *Migrator) ResumeAll(ctx context.Context) error {
	moves, err := mg.moves.list(ctx)
	if err != nil {
		return err
	}
	for _, m := range moves {
		if m.Terminal() || m.Status == StatusPaused {
			continue
		}
		if m.Phase == PhaseRetained && time.Now().Before(m.RetainUntil) {
			continue
		}
		if err := mg.Run(ctx, m.ID); err != nil && !errors.Is(err, ErrLocked) {
			mg.log.Warn("resumed move stopped", "move", m.ID, "err", err)
		}
	}
	return nil
}

// lockMonitorRetry is the pause between the move lock's checks while
// Consul does not answer.
const lockMonitorRetry = 250 * time.Millisecond

// Run drives a move as far as it can go: to done, to aborted, to paused
// (a step failed), or to retained while its window is open. It holds the
// tenant's Consul lock meanwhile; ErrLocked means another migrator has it.
func (mg *Migrator) Run(ctx context.Context, id string) (err error) {
	m, err := mg.moves.get(ctx, id)
	if err != nil {
		return err
	}
	if m.Terminal() {
		return nil
	}
	lock, err := mg.client.LockOpts(mg.lockOptions(m.Tenant))
	if err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	lost, err := lock.Lock(ctx.Done())
	if err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	if lost == nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return ErrLocked
	}
	defer func() { _ = lock.Unlock() }()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lost:
			mg.log.Warn("lost the move lock; stopping", "move", id)
			cancel()
		case <-rctx.Done():
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("move %s: panic: %v\n%s", id, r, debug.Stack())
		}
	}()
	// Re-read under the lock: another migrator may have moved it on.
	if m, err = mg.moves.get(rctx, id); err != nil {
		return err
	}
	m.Options.setDefaults()
	return mg.driveThrough(rctx, ctx, m)
}

// lockOptions is the tenant's move lock: one move, or one in-place
// restore (HoldTenant), per tenant at a time.
func (mg *Migrator) lockOptions(tenant string) *api.LockOptions {
	return &api.LockOptions{
		Key: mg.moves.lockKey(tenant), Value: []byte(mg.cfg.ID), SessionTTL: mg.cfg.LockTTL.String(),
		SessionOpts: &api.SessionEntry{LockDelay: time.Millisecond, TTL: mg.cfg.LockTTL.String(), Behavior: api.SessionBehaviorRelease},
		LockTryOnce: true, LockWaitTime: 500 * time.Millisecond,
		SessionName: "switchyard-migrator-" + tenant,
		// Ride out a Consul leader election (the session survives it: a
		// new leader restarts every session's timer) instead of abandoning
		// a switch half done. Retries for one TTL: Consul invalidates a
		// session only 2×TTL after its last renewal (renewed every TTL/2),
		// so no other migrator can hold the lock while this one still
		// believes it does.
		MonitorRetries: int(mg.cfg.LockTTL / lockMonitorRetry), MonitorRetryTime: lockMonitorRetry,
	}
}

// pause records a failed step; the tenant keeps being served from where it
// is, and the move waits for retry or abort.
func (mg *Migrator) pause(ctx context.Context, m *Move, cause error) error {
	if ctx.Err() != nil {
		return ctx.Err() // stopped, not failed: resume later
	}
	m.Status = StatusPaused
	m.Error = cause.Error()
	mg.log.Warn("move paused", "move", m.ID, "tenant", m.Tenant, "phase", m.Phase, "err", cause)
	if err := mg.moves.save(ctx, m); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

// Summary is a one-line description of a move for logs and the CLI.
func (m *Move) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s → %s, %s (%s)", m.ID, m.Tenant, m.From, m.To, m.Phase, m.Status)
	if m.Phase == PhaseCopy {
		fmt.Fprintf(&b, " %.0f%%", m.Progress()*100)
	}
	if m.Error != "" {
		fmt.Fprintf(&b, ": %s", m.Error)
	}
	return b.String()
}
