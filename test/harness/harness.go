// Package harness is the tests' view of internal/devstack: the Consul
// agents and PostgreSQL servers it launches, with testing.T helpers that
// stop them when the test ends (ConsulT, PostgresT, …), the binaries taken
// from $SWITCHYARD_CONSUL and $SWITCHYARD_PG_BIN when set, and a
// fault-injecting TCP proxy (FaultProxy).
package harness

import (
	"context"
	"os"

	"github.com/switchyard/switchyard/internal/devstack"
)

// The devstack's types and helpers, under the names the tests use.
type (
	// Consul is a running consul agent.
	Consul = devstack.Consul
	// ConsulCluster is a running n-server consul cluster.
	ConsulCluster = devstack.ConsulCluster
	// ConsulOptions configures StartConsul and StartConsulCluster.
	ConsulOptions = devstack.ConsulOptions
	// Postgres is a running PostgreSQL server.
	Postgres = devstack.Postgres
	// PostgresOptions configures StartPostgres.
	PostgresOptions = devstack.PostgresOptions
)

// FreePort returns a loopback TCP port that was free when probed.
func FreePort() (int, error) { return devstack.FreePort() }

// StartConsul starts a consul agent; an unnamed binary is taken from
// $SWITCHYARD_CONSUL when it is set.
func StartConsul(ctx context.Context, opts ConsulOptions) (*Consul, error) {
	return devstack.StartConsul(ctx, consulFromEnv(opts))
}

// StartConsulCluster starts an n-server consul cluster; an unnamed binary
// is taken from $SWITCHYARD_CONSUL when it is set.
func StartConsulCluster(ctx context.Context, n int, opts ConsulOptions) (*ConsulCluster, error) {
	return devstack.StartConsulCluster(ctx, n, consulFromEnv(opts))
}

// StartPostgres starts a PostgreSQL server; an unnamed binary directory is
// taken from $SWITCHYARD_PG_BIN when it is set.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	if opts.BinDir == "" {
		opts.BinDir = os.Getenv("SWITCHYARD_PG_BIN")
	}
	return devstack.StartPostgres(ctx, opts)
}

func consulFromEnv(opts ConsulOptions) ConsulOptions {
	if opts.Binary == "" {
		opts.Binary = os.Getenv("SWITCHYARD_CONSUL")
	}
	return opts
}
