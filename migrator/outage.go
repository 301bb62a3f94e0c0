package migrator

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"

	"github.com/switchyard/switchyard/internal/retry"
)

// A PostgreSQL restart or failover under a move is routine: the copy and
// the catch-up ride it out — the run is rebuilt from the move's last saved
// state and carries on where it was — for up to outageWindow, and only
// then does the move pause for an operator. The switch is not ridden out
// here for a database: it rolls back and retries under its own attempts.
//
// A Consul election is ridden out in every phase, the switch included:
// while no leader answers nothing can be read or saved (not even a pause),
// so the run keeps the move's lock (its monitor rides the election too)
// and is rebuilt from the move's saved state once Consul answers; a switch
// it interrupted is reconciled by recoverSwitch. Giving up instead would
// release nothing (the unlock needs a leader too) and leave the move
// locked by its own abandoned session until that lapses.
const outageWindow = time.Minute

// errOutage: a step lost its database connection (or could not get one),
// or Consul had no leader to answer.
var errOutage = errors.New("database or catalog unavailable")

// rideable reports whether a failure of phase is an outage to ride out.
func rideable(phase Phase, err error) bool {
	return isConsulOutage(err) || (phase == PhaseCopy || phase == PhaseCatchUp) && isOutage(err)
}

// isConsulOutage reports whether err is Consul failing to answer: a 5xx
// (no cluster leader, the RPC to the leader failed) or the agent
// unreachable. Conflicts, not-found and bad requests are not outages.
func isConsulOutage(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code >= 500
	}
	var ue *url.Error
	return errors.As(err, &ue)
}

// isOutage reports whether err is a lost or refused database connection:
// SQLSTATE class 08, the server shutting down or starting up (57P01–57P03),
// a broken or refused socket.
func isOutage(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return outageCode(pgErr.Code)
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return outageCode(string(pqErr.Code))
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func outageCode(code string) bool {
	return len(code) == 5 && code[:2] == "08" || code == "57P01" || code == "57P02" || code == "57P03"
}

// driveThrough drives the move, rebuilding the run after a database
// outage (a fresh read of the move, fresh connections) until it passes or
// has lasted outageWindow; then the move pauses. outer is the caller's
// context (a pause is recorded with it).
func (mg *Migrator) driveThrough(ctx, outer context.Context, m *Move) error {
	var since time.Time
	wait := 250 * time.Millisecond
	for {
		err := mg.driveOnce(ctx, outer, m)
		if !errors.Is(err, errOutage) {
			return err
		}
		if since.IsZero() {
			since = time.Now()
		}
		if time.Since(since) > outageWindow {
			return mg.pause(outer, m, err)
		}
		mg.log.Warn("move: database unreachable; riding it out", "move", m.ID, "tenant", m.Tenant, "for", time.Since(since).Round(time.Millisecond), "err", err)
		if retry.Sleep(ctx, wait) != nil {
			return ctx.Err()
		}
		wait = min(2*wait, 2*time.Second)
		fresh, err := mg.moves.get(ctx, m.ID)
		if err != nil && !isConsulOutage(err) {
			return err
		}
		if err == nil { // else: try again with what we have; newRun reads again
			m = fresh
			m.Options.setDefaults()
		}
	}
}

// driveOnce builds a run for m and drives it.
func (mg *Migrator) driveOnce(ctx, outer context.Context, m *Move) error {
	r, err := mg.newRun(ctx, m)
	if err != nil {
		if rideable(m.Phase, err) {
			return fmt.Errorf("%w: %w", errOutage, err)
		}
		return mg.pause(outer, m, err)
	}
	defer r.close()
	return r.drive(ctx)
}
