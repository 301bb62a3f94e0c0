package harness

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// ConsulT starts a dev consul agent for the test and stops it when the test
// ends. The agent's output goes to a file in t.TempDir(); if the test fails,
// the tail of it is logged. A missing consul binary fails the test (run
// `make tools`).
func ConsulT(t testing.TB) *Consul {
	t.Helper()
	out, path := testLogFile(t, "consul.log")
	c, err := StartConsul(t.Context(), ConsulOptions{LogOutput: out})
	if err != nil {
		t.Fatalf("start consul: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("consul %s log tail (full log: %s):\n%s", c.NodeName(), path, c.LogTail())
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stop consul: %v", err)
		}
	})
	return c
}

// ConsulClusterT starts an n-server consul cluster for the test (see
// StartConsulCluster) and stops it when the test ends, logging every node's
// log tail if the test failed.
func ConsulClusterT(t testing.TB, n int) *ConsulCluster {
	t.Helper()
	out, path := testLogFile(t, "consul-cluster.log")
	cc, err := StartConsulCluster(t.Context(), n, ConsulOptions{LogOutput: out})
	if err != nil {
		t.Fatalf("start consul cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range cc.Nodes {
				t.Logf("consul %s log tail (full log: %s):\n%s", c.NodeName(), path, c.LogTail())
			}
		}
		if err := cc.Stop(); err != nil {
			t.Errorf("stop consul cluster: %v", err)
		}
	})
	return cc
}

// PostgresT starts a PostgreSQL server with a temporary data directory for
// the test and stops it (removing the data) when the test ends, logging the
// server's log tail if the test failed.
func PostgresT(t testing.TB) *Postgres {
	t.Helper()
	p, err := startPostgresT(t, "postgres.log")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// PostgresN starts n PostgreSQL servers in parallel, as PostgresT does.
func PostgresN(t testing.TB, n int) []*Postgres {
	t.Helper()
	servers := make([]*Postgres, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			servers[i], errs[i] = startPostgresT(t, fmt.Sprintf("postgres-%d.log", i))
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return servers
}

// startPostgresT starts one server and registers its cleanup; it does not
// call t.Fatal, so it may run on any goroutine.
func startPostgresT(t testing.TB, logName string) (*Postgres, error) {
	out, path := testLogFile(t, logName)
	p, err := StartPostgres(t.Context(), PostgresOptions{LogOutput: out})
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postgres %s log tail (full log: %s):\n%s", p.Addr(), path, p.LogTail())
		}
		if err := p.Stop(); err != nil {
			t.Errorf("stop postgres: %v", err)
		}
	})
	return p, nil
}

// testLogFile creates a log file in t.TempDir(), closed at cleanup. Errors
// are reported with t.Error so this is safe on any goroutine; output then
// falls back to being discarded.
func testLogFile(t testing.TB, name string) (io.Writer, string) {
	path := filepath.Join(t.TempDir(), name)
	f, err := os.Create(path)
	if err != nil {
		t.Errorf("create log file: %v", err)
		return io.Discard, path
	}
	t.Cleanup(func() { _ = f.Close() })
	return f, path
}
