package migrator

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"
)

// TestIsOutage: lost or refused connections and a server shutting down or
// starting up are outages to ride out; anything the data or the fence
// says is not — and only the copy and the catch-up ride them out. Consul
// without a leader (a 5xx) or unreachable is ridden out in every phase;
// its refusals (403, 409) are not.
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
		{"no Consul leader in the switch", fmt.Errorf("switch: freeze: read manifest: %w", api.StatusError{Code: 500, Body: "No cluster leader"}), PhaseSwitch, true},
		{"no Consul leader in the preflight", fmt.Errorf("get move: %w", api.StatusError{Code: 500}), PhasePreflight, true},
		{"Consul rollback failed", errors.Join(errors.New("freeze"), fmt.Errorf("%w: %w", errRollbackFailed, api.StatusError{Code: 500})), PhaseSwitch, true},
		{"Consul agent unreachable", fmt.Errorf("save: %w", &url.Error{Op: "Put", URL: "http://127.0.0.1:1", Err: syscall.ECONNREFUSED}), PhaseRetained, true},
		{"Consul says no", fmt.Errorf("save: %w", api.StatusError{Code: 403, Body: "Permission denied"}), PhaseSwitch, false},
		{"Consul conflict", fmt.Errorf("freeze: %w", api.StatusError{Code: 409}), PhaseCopy, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rideable(tc.phase, tc.err); got != tc.want {
				t.Fatalf("rideable(%s, %v) = %v, want %v", tc.phase, tc.err, got, tc.want)
			}
		})
	}
}
