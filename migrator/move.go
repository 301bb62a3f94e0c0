// Package migrator moves one tenant's data between any two targets while
// the tenant keeps working: preflight, provision, change capture, copy,
// catch-up, verification, a fenced cutover, a retention window and cleanup.
// Every move is a persisted state machine, resumable after a crash.
package migrator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/catalog"
)

// Phase is where a move is. Phases only go forward, except that a failed
// switch goes back to catch-up.
type Phase string

// The phases of a move, in order.
const (
	PhasePreflight Phase = "preflight"
	PhaseProvision Phase = "provision"
	PhaseCapture   Phase = "capture"
	PhaseCopy      Phase = "copy"
	PhaseCatchUp   Phase = "catch-up"
	PhaseSwitch    Phase = "switch"
	// PhaseRetained: the tenant is served from the target; the source copy
	// stays fenced until RetainUntil, then is deleted in small batches.
	PhaseRetained Phase = "retained"
	PhaseDone     Phase = "done"
	PhaseAborted  Phase = "aborted"
)

// Status says whether a move is making progress.
type Status string

// Move statuses.
const (
	StatusRunning Status = "running"
	// StatusPaused: a step failed; the move waits for retry or abort. The
	// tenant keeps being served from the source.
	StatusPaused   Status = "paused"
	StatusAborting Status = "aborting"
	StatusDone     Status = "done"
	StatusAborted  Status = "aborted"
)

// Sentinel errors callers branch on.
var (
	ErrMoveExists     = errors.New("the tenant already has a move in progress")
	ErrMoveNotFound   = errors.New("move not found")
	ErrLocked         = errors.New("another migrator is running this move")
	ErrPreflight      = errors.New("preflight failed")
	ErrTooLateToAbort = errors.New("the move has switched already; move the tenant back instead")
	// ErrNotPaused: only a paused move can be retried.
	ErrNotPaused = errors.New("move is not paused")
	ErrDDL       = errors.New("schema of a tenant table changed during the move")
	ErrVerify    = errors.New("verification found differences")
)

// TableProgress is the copy progress of one table.
type TableProgress struct {
	Table     string  `json:"table"`
	Rows      int64   `json:"rows"`
	Bytes     int64   `json:"bytes"`
	TotalRows int64   `json:"total_rows"`
	Done      bool    `json:"done"`
	RowsPerS  float64 `json:"rows_per_s"`
	// Streams are the key ranges of a table copied in parallel, each with
	// its position; a resumed copy keeps the ranges.
	Streams []StreamProgress `json:"streams,omitempty"`
}

// StreamProgress is one copy stream: the tenant's rows of a table with keys
// after After (none: from the first) up to UpTo (none: to the copy's
// bound), text form. Last is the largest key committed on the target as
// last saved; a resumed stream starts after the target's largest key in
// its range, which is never behind Last (chunks commit before the save).
type StreamProgress struct {
	After []string `json:"after,omitempty"`
	UpTo  []string `json:"up_to,omitempty"`
	Last  []string `json:"last,omitempty"`
	Rows  int64    `json:"rows"`
	Done  bool     `json:"done"`
}

// Move is one tenant's move, as persisted in Consul.
type Move struct {
	ID       string       `json:"id"`
	Tenant   string       `json:"tenant"`
	From     string       `json:"from"`
	To       string       `json:"to"`
	FromTier catalog.Tier `json:"from_tier"`
	ToTier   catalog.Tier `json:"to_tier"`
	Reason   string       `json:"reason,omitempty"`
	Phase    Phase        `json:"phase"`
	Status   Status       `json:"status"`
	Error    string       `json:"error,omitempty"`

	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`

	// Fingerprint is the tenant tables' shape when the move started.
	Fingerprint string          `json:"fingerprint,omitempty"`
	Tables      []TableProgress `json:"tables,omitempty"`
	// Backlog is the number of captured changes not yet applied (sampled
	// during the copy and the catch-up).
	Backlog int `json:"backlog"`
	// CapturePerS is how fast the tenant's writers add captured changes.
	CapturePerS float64 `json:"capture_per_s,omitempty"`
	// ApplyPerS is how fast the migrator applies them (per second of
	// applying; 0 until something was applied).
	ApplyPerS float64 `json:"apply_per_s,omitempty"`
	// Converging, during catch-up, says whether the backlog shrank over the
	// last convergence window (nil: not known yet, or not catching up).
	Converging *bool `json:"converging,omitempty"`
	// StalledSince is when the backlog stopped shrinking (zero: it shrinks).
	StalledSince time.Time `json:"stalled_since,omitempty"`
	// Message says what the move is doing or waiting for, in words.
	Message string `json:"message,omitempty"`
	// ETA is the estimated time until the switch can start: the rest of the
	// copy and the backlog; empty when it cannot be said (see Message).
	ETA      string `json:"eta,omitempty"`
	Attempts int    `json:"switch_attempts,omitempty"`
	// Resync: the destination held a retained copy of the tenant from an
	// earlier move (a quick move back): the copy phase re-syncs it by
	// difference instead of copying everything.
	Resync bool `json:"resync,omitempty"`
	// Took is the time spent in each phase (by this or earlier runs).
	Took map[Phase]time.Duration `json:"took_ns,omitempty"`

	FreezeEpoch uint64 `json:"freeze_epoch,omitempty"`
	// Switching is set (and saved, a check-and-set that also picks up an
	// abort asked before it) just before the freeze, and cleared once the
	// switch has flipped or rolled back: an abort meanwhile waits for the
	// outcome instead of being accepted and then overtaken by the flip.
	Switching bool          `json:"switching,omitempty"`
	FlipEpoch uint64        `json:"flip_epoch,omitempty"`
	Switched  time.Time     `json:"switched,omitempty"`
	Pause     time.Duration `json:"pause_ns,omitempty"`
	// PauseSteps is the pause by step of the switch (freeze, acks, fence,
	// drain, ddl, verify, sequences, flip).
	PauseSteps map[string]time.Duration `json:"pause_steps_ns,omitempty"`
	// SwitchSteps is the last switch attempt's timeline: its named steps
	// in the order they ran (before the freeze, the pause, the tidying
	// after the flip, or the undos of a rollback), each with its time and
	// the error of the one that failed.
	SwitchSteps []StepTime `json:"switch_steps,omitempty"`
	RetainUntil time.Time  `json:"retain_until,omitempty"`

	Options Options `json:"options"`

	modifyIndex uint64
}

// Options tune one move. Zero values take the defaults.
type Options struct {
	// KeyColumn is the tenant key column (tenant_id).
	KeyColumn string `json:"key_column,omitempty"`
	// ChunkRows is the copy chunk size (250,000).
	ChunkRows int `json:"chunk_rows,omitempty"`
	// RateRows limits the copy to this many rows per second (0: unlimited).
	RateRows float64 `json:"rate_rows,omitempty"`
	// Retention keeps the fenced source copy this long after the switch (24h).
	Retention time.Duration `json:"retention,omitempty"`
	// SwitchBudget bounds the whole frozen part of the cutover (1.5s, under
	// the routers' 2s hold).
	SwitchBudget time.Duration `json:"switch_budget,omitempty"`
	// CatchUpBacklog is the backlog under which the switch starts (200; or
	// what apply handles in 100 ms at the measured rate, if that is more).
	CatchUpBacklog int `json:"catch_up_backlog,omitempty"`
	// ApplyBatch is how many captured changes one apply batch handles (10,000).
	ApplyBatch int `json:"apply_batch,omitempty"`
	// CopyStreams is how many streams copy one table's key ranges in
	// parallel (2); a table gets at most one stream per chunk of rows.
	CopyStreams int `json:"copy_streams,omitempty"`
	// MaxSwitchAttempts before the move pauses (5).
	MaxSwitchAttempts int `json:"max_switch_attempts,omitempty"`
}

func (o *Options) setDefaults() {
	if o.KeyColumn == "" {
		o.KeyColumn = DefaultKeyColumn
	}
	if o.ChunkRows == 0 {
		o.ChunkRows = 250_000
	}
	if o.Retention == 0 {
		o.Retention = 24 * time.Hour
	}
	if o.SwitchBudget == 0 {
		o.SwitchBudget = 1500 * time.Millisecond
	}
	if o.CatchUpBacklog == 0 {
		o.CatchUpBacklog = 200
	}
	if o.CopyStreams == 0 {
		o.CopyStreams = 2
	}
	if o.MaxSwitchAttempts == 0 {
		o.MaxSwitchAttempts = 5
	}
	if o.ApplyBatch == 0 {
		o.ApplyBatch = defaultApplyBatch
	}
}

// Validate reports options that cannot work.
func (o *Options) Validate() error {
	var errs []string
	if !catalog.ValidID(strings.ReplaceAll(o.KeyColumn, "_", "-")) {
		errs = append(errs, fmt.Sprintf("key column %q is not a plain identifier", o.KeyColumn))
	}
	if o.CopyStreams > 16 {
		errs = append(errs, "copy streams must be at most 16")
	}
	if o.ChunkRows < 1 || o.ChunkRows > 10_000_000 {
		errs = append(errs, "chunk rows must be between 1 and 10,000,000")
	}
	if o.RateRows < 0 || o.Retention < 0 || o.SwitchBudget < 0 || o.CatchUpBacklog < 0 || o.MaxSwitchAttempts < 0 || o.ApplyBatch < 0 || o.CopyStreams < 0 {
		errs = append(errs, "figures must not be negative")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", catalog.ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// Terminal reports whether the move has nothing more to do.
func (m *Move) Terminal() bool { return m.Phase == PhaseDone || m.Phase == PhaseAborted }

// Progress is the copy's overall fraction, 0..1. It is 1 only once every
// table is copied: a copy still at work on its last chunk shows 99%.
func (m *Move) Progress() float64 {
	var rows, total int64
	done := true
	for _, t := range m.Tables {
		rows += t.Rows
		total += t.TotalRows
		done = done && t.Done
	}
	if total == 0 {
		if m.Phase == PhaseCopy || m.Phase == PhasePreflight || m.Phase == PhaseProvision || m.Phase == PhaseCapture {
			return 0
		}
		return 1
	}
	p := min(1, float64(rows)/float64(total))
	if !done && p > 0.99 {
		p = 0.99
	}
	return p
}

func newMoveID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b)
}

// moveStore persists moves in Consul KV:
//
//	<prefix>/moves/by-id/<id>        the Move (JSON), written with CAS
//	<prefix>/moves/active/<tenant>   the id of the tenant's unfinished move
//	<prefix>/locks/moves/<tenant>    the lock a running migrator holds
type moveStore struct {
	client *api.Client
	keys   catalog.Keys
}

func (s *moveStore) moveKey(id string) string       { return s.keys.Move(id) }
func (s *moveStore) activeKey(tenant string) string { return s.keys.ActiveMove(tenant) }
func (s *moveStore) lockKey(tenant string) string   { return s.keys.MoveLock(tenant) }

// create stores a new move and marks it the tenant's active one, atomically.
func (s *moveStore) create(ctx context.Context, m *Move) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	ops := api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVCheckNotExists, Key: s.activeKey(m.Tenant)}},
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: s.activeKey(m.Tenant), Value: []byte(m.ID)}},
		{KV: &api.KVTxnOp{Verb: api.KVCheckNotExists, Key: s.moveKey(m.ID)}},
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: s.moveKey(m.ID), Value: data}},
	}
	ok, _, _, err := s.client.Txn().Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("create move: %w", err)
	}
	if !ok {
		return fmt.Errorf("tenant %s: %w", m.Tenant, ErrMoveExists)
	}
	return nil
}

func (s *moveStore) get(ctx context.Context, id string) (*Move, error) {
	pair, _, err := s.client.KV().Get(s.moveKey(id), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("get move: %w", err)
	}
	if pair == nil {
		return nil, fmt.Errorf("move %s: %w", id, ErrMoveNotFound)
	}
	var m Move
	if err := json.Unmarshal(pair.Value, &m); err != nil {
		return nil, fmt.Errorf("move %s: %w", id, err)
	}
	m.modifyIndex = pair.ModifyIndex
	return &m, nil
}

// save writes the move back with CAS; it also drops the active marker once
// the tenant no longer depends on the move (switched or aborted).
func (s *moveStore) save(ctx context.Context, m *Move) error {
	m.Updated = time.Now().UTC()
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	ops := api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: s.moveKey(m.ID), Value: data, Index: m.modifyIndex}}}
	if m.Phase == PhaseRetained || m.Phase == PhaseDone || m.Phase == PhaseAborted {
		if pair, _, err := s.client.KV().Get(s.activeKey(m.Tenant), (&api.QueryOptions{}).WithContext(ctx)); err == nil && pair != nil && string(pair.Value) == m.ID {
			ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDeleteCAS, Key: s.activeKey(m.Tenant), Index: pair.ModifyIndex}})
		}
	}
	ok, resp, _, err := s.client.Txn().Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("save move: %w", err)
	}
	if !ok {
		what := "conflict"
		if resp != nil && len(resp.Errors) > 0 {
			what = resp.Errors[0].What
		}
		return fmt.Errorf("save move %s: %w (%s)", m.ID, catalog.ErrConflict, what)
	}
	if len(resp.Results) > 0 && resp.Results[0].KV != nil {
		m.modifyIndex = resp.Results[0].KV.ModifyIndex
	}
	return nil
}

// list returns every move, newest first.
func (s *moveStore) list(ctx context.Context) ([]*Move, error) {
	pairs, _, err := s.client.KV().List(s.keys.Moves(), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list moves: %w", err)
	}
	var out []*Move
	for _, p := range pairs {
		var m Move
		if err := json.Unmarshal(p.Value, &m); err != nil {
			continue
		}
		m.modifyIndex = p.ModifyIndex
		out = append(out, &m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// activeMove returns the id of the tenant's unfinished move, or "".
func (s *moveStore) activeMove(ctx context.Context, tenant string) (string, error) {
	pair, _, err := s.client.KV().Get(s.activeKey(tenant), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", err
	}
	if pair == nil {
		return "", nil
	}
	return string(pair.Value), nil
}
