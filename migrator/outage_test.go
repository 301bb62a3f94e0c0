package migrator

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"
)

// TestIsOutage: lost or refused connections and a server shutting down or
// starting up are outages to ride out; anything the data or the fence
// says is not — and only the copy and the catch-up ride them out.
func TestIsOutage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		phase Phase
		want  bool
	}{
		{"admin shutdown (pgconn)", fmt.Errorf("re-read: %w", &pgconn.PgError{Code: "57P01"}), PhaseCatchUp, true},
		{"starting up (lib/pq)", fmt.Errorf("source database: %w", &pq.Error{Code: "57P03"}), PhaseCopy, true},
		{"connection failure class 08", &pq.Error{Code: "08006"}, PhaseCopy, true},
		{"refused", fmt.Errorf("dial: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}), PhaseCatchUp, true},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), PhaseCopy, true},
		{"bad conn", driver.ErrBadConn, PhaseCopy, true},
		{"the fence", &pq.Error{Code: "P0001"}, PhaseCatchUp, false},
		{"a constraint", &pgconn.PgError{Code: "23503"}, PhaseCopy, false},
		{"plain", errors.New("schema differs"), PhaseCopy, false},
		{"an outage in the switch", &pgconn.PgError{Code: "57P01"}, PhaseSwitch, false},
		{"an outage in the preflight", &pgconn.PgError{Code: "57P01"}, PhasePreflight, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rideable(tc.phase, tc.err); got != tc.want {
				t.Fatalf("rideable(%s, %v) = %v, want %v", tc.phase, tc.err, got, tc.want)
			}
		})
	}
}
