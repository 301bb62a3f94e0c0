package controller

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/migrator"
)

// campaign competes for the leader lock until ctx ends; while it holds the
// lock it runs the scheduler. A replica that loses the lock (or dies) leaves
// its moves to the next leader, which resumes them.
func (s *Server) campaign(ctx context.Context) {
	for ctx.Err() == nil {
		lock, err := s.client.LockOpts(&api.LockOptions{
			Key: s.store.Keys().ControllerLeader(), Value: []byte(s.cfg.ID),
			SessionOpts: &api.SessionEntry{Name: "switchyard-controller-" + s.cfg.ID, TTL: s.cfg.LeaderTTL.String(),
				LockDelay: time.Millisecond, Behavior: api.SessionBehaviorRelease},
			LockWaitTime: time.Second,
		})
		if err != nil {
			s.log.Warn("leader lock", "err", err)
			if retry.Sleep(ctx, time.Second) != nil {
				return
			}
			continue
		}
		lost, err := lock.Lock(ctx.Done())
		if err != nil || lost == nil {
			if err != nil {
				s.log.Warn("leader election", "err", err)
				_ = retry.Sleep(ctx, time.Second)
			}
			continue
		}
		s.leader.Store(true)
		s.metrics.leader.Set(1)
		s.log.Info("this replica is the leader")
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-lost:
				s.log.Warn("lost leadership")
			case <-lctx.Done():
			}
			cancel()
		}()
		s.schedule(lctx)
		cancel()
		s.leader.Store(false)
		s.metrics.leader.Set(0)
		_ = lock.Unlock()
	}
}

// stopTimeout bounds how long a leader stepping down (shutdown, or the
// lock lost) waits for its move runners: a runner inside a switch finishes
// or rolls back (the migrator's rollback takes at most 10 s) before the
// leader lock is released.
const stopTimeout = 30 * time.Second

// schedule runs unfinished moves, at most MaxConcurrentMoves at a time,
// and cleans up retained ones whose window is over. It owns its
// goroutines (housekeeping, move runners): when ctx ends it returns only
// once they have stopped, or stopTimeout passed.
func (s *Server) schedule(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var owned sync.WaitGroup
	defer s.join(&owned)
	owned.Add(1)
	go func() { defer owned.Done(); s.housekeep(ctx) }()
	for {
		if err := s.scheduleOnce(ctx, &owned); err != nil && ctx.Err() == nil {
			s.log.Warn("scheduler", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// housekeep runs the leader's periodic chores until ctx ends: tenant data
// sizes for the planner (measured off the request path), offboarded tenants
// past retention, expired idempotency records.
func (s *Server) housekeep(ctx context.Context) {
	var swept time.Time
	for {
		if err := s.measureBytes(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("measuring tenant sizes", "err", err)
		}
		if err := s.removeOffboarded(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("removing offboarded tenants", "err", err)
		}
		if err := s.scheduledBackups(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("scheduled backups", "err", err)
		}
		if err := s.purgeRetainedRestores(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("purging retained restore copies", "err", err)
		}
		if time.Since(swept) >= s.idem.sweepEvery() {
			n, err := s.idem.Sweep(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				s.log.Warn("sweeping expired idempotency records", "err", err)
			case err == nil:
				swept = time.Now()
				if n > 0 {
					s.log.Info("swept expired idempotency records", "deleted", n)
				}
			}
		}
		if retry.Sleep(ctx, s.cfg.HousekeepingEvery) != nil {
			return
		}
	}
}

// join waits for the scheduler's goroutines, at most stopTimeout.
func (s *Server) join(owned *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { owned.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(stopTimeout):
		s.log.Warn("move runners still busy after the stop timeout; stepping down anyway (each move is locked and resumable)", "timeout", stopTimeout)
	}
}

func (s *Server) scheduleOnce(ctx context.Context, owned *sync.WaitGroup) error {
	moves, err := s.migrator.List(ctx)
	if err != nil {
		return err
	}
	counts := map[[2]string]int{}
	for _, m := range moves {
		counts[[2]string{string(m.Phase), string(m.Status)}]++
	}
	s.metrics.moves.Reset()
	for k, n := range counts {
		s.metrics.moves.WithLabelValues(k[0], k[1]).Set(float64(n))
	}
	// Oldest first.
	for i := len(moves) - 1; i >= 0; i-- {
		m := moves[i]
		if m.Terminal() || m.Status == migrator.StatusPaused {
			continue
		}
		if m.Phase == migrator.PhaseRetained && time.Now().Before(m.RetainUntil) {
			continue
		}
		s.mu.Lock()
		busy := len(s.running)
		already := s.running[m.ID]
		if already || busy >= s.cfg.MaxConcurrentMoves {
			s.mu.Unlock()
			continue
		}
		s.running[m.ID] = true
		s.mu.Unlock()
		owned.Add(1)
		go func() { defer owned.Done(); s.runMove(ctx, m.ID) }()
	}
	return nil
}

func (s *Server) runMove(ctx context.Context, id string) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("move runner panicked", "move", id, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
		s.mu.Lock()
		delete(s.running, id)
		s.mu.Unlock()
	}()
	err := s.migrator.Run(ctx, id)
	switch {
	case err == nil, errors.Is(err, migrator.ErrLocked), ctx.Err() != nil:
	default:
		s.log.Warn("move stopped", "move", id, "err", err)
		s.auditMoveRefusal(context.WithoutCancel(ctx), id, err)
	}
	if m, gerr := s.migrator.Get(context.WithoutCancel(ctx), id); gerr == nil && (m.Phase == migrator.PhaseRetained || m.Phase == migrator.PhaseAborted) {
		action := "move.switched"
		if m.Phase == migrator.PhaseAborted {
			action = "move.aborted"
		}
		s.audit(context.WithoutCancel(ctx), auditEntry{Actor: "controller:" + s.cfg.ID, Action: action, Tenant: m.Tenant, Move: m.ID,
			Detail: fmt.Sprintf("%s → %s, pause %s", m.From, m.To, m.Pause.Round(time.Millisecond))})
	}
}
