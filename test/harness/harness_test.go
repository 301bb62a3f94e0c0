package harness

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/internal/devstack"
)

func TestConsulDev(t *testing.T) {
	t.Parallel()
	c := ConsulT(t)
	kv := c.Client().KV()
	if _, err := kv.Put(&api.KVPair{Key: "tenants/acme", Value: []byte("shard-1")}, nil); err != nil {
		t.Fatal(err)
	}
	pair, _, err := kv.Get("tenants/acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	if pair == nil || string(pair.Value) != "shard-1" {
		t.Fatalf("got %+v, want shard-1", pair)
	}
	// The readiness probe must not leave keys behind.
	keys, _, err := kv.Keys("", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Fatalf("keys = %v, want only tenants/acme", keys)
	}
}

func TestConsulPersistentRestart(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	out, _ := testLogFile(t, "consul.log")
	c, err := StartConsul(ctx, ConsulOptions{DataDir: t.TempDir(), LogOutput: out})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("consul log tail:\n%s", c.LogTail())
		}
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	addr := c.HTTPAddr()
	put(t, c, "k", "v1")

	if err := c.Restart(ctx); err != nil {
		t.Fatalf("graceful restart: %v", err)
	}
	if c.HTTPAddr() != addr {
		t.Fatalf("address changed from %s to %s", addr, c.HTTPAddr())
	}
	if got := get(t, c, "k"); got != "v1" {
		t.Fatalf("after restart: k = %q, want v1", got)
	}

	put(t, c, "k", "v2")
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatalf("restart after kill: %v", err)
	}
	if got := get(t, c, "k"); got != "v2" {
		t.Fatalf("after kill+restart: k = %q, want v2", got)
	}

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := c.Restart(ctx); !errors.Is(err, devstack.ErrStopped) {
		t.Fatalf("Restart after Stop: err = %v, want devstack.ErrStopped", err)
	}
}

func TestConsulClusterSurvivesLeaderLoss(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cc := ConsulClusterT(t, 3)
	if len(cc.Nodes) != 3 {
		t.Fatalf("%d nodes", len(cc.Nodes))
	}
	put(t, cc.Nodes[0], "before", "1")

	leader, err := cc.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	var survivors []*Consul
	for _, n := range cc.Nodes {
		if n != leader {
			survivors = append(survivors, n)
		}
	}

	// A new leader has to be elected before writes succeed again.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := survivors[0].Client().KV().Put(&api.KVPair{Key: "after", Value: []byte("2")}, nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("KV not writable after killing leader %s: %v", leader.NodeName(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := get(t, survivors[1], "after"); got != "2" {
		t.Fatalf("after = %q via %s, want 2", got, survivors[1].NodeName())
	}
	if got := get(t, survivors[1], "before"); got != "1" {
		t.Fatalf("before = %q, want 1", got)
	}

	// The killed node rejoins on its old ports and sees the new data.
	if err := leader.Restart(ctx); err != nil {
		t.Fatalf("restart %s: %v", leader.NodeName(), err)
	}
	if got := get(t, leader, "after"); got != "2" {
		t.Fatalf("after = %q via restarted %s, want 2", got, leader.NodeName())
	}
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	servers := PostgresN(t, 2)
	if servers[0].Port() == servers[1].Port() {
		t.Fatalf("both servers on port %d", servers[0].Port())
	}
	for i, p := range servers {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			for range 2 { // idempotent
				if err := p.CreateDatabase(ctx, "tenant_db"); err != nil {
					t.Fatal(err)
				}
			}
			db := openDB(t, p.DSN("tenant_db"))
			if _, err := db.ExecContext(ctx, `CREATE TABLE tenants (id int PRIMARY KEY, name text)`); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, `INSERT INTO tenants VALUES (1, $1)`, fmt.Sprintf("acme-%d", i)); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("acme-%d", i)
			if got := tenantName(t, db); got != want {
				t.Fatalf("name = %q, want %q", got, want)
			}
			var walLevel string
			if err := db.QueryRowContext(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
				t.Fatal(err)
			}
			if walLevel != "logical" {
				t.Fatalf("wal_level = %q, want logical", walLevel)
			}

			addr := p.Addr()
			if err := p.Kill(); err != nil {
				t.Fatal(err)
			}
			if err := db.PingContext(ctx); err == nil {
				t.Fatal("ping succeeded after Kill")
			}
			if err := p.Restart(ctx); err != nil {
				t.Fatalf("restart after kill: %v", err)
			}
			if p.Addr() != addr {
				t.Fatalf("address changed from %s to %s", addr, p.Addr())
			}
			if got := tenantName(t, db); got != want {
				t.Fatalf("after kill+restart: name = %q, want %q", got, want)
			}
			if err := p.Restart(ctx); err != nil {
				t.Fatalf("graceful restart: %v", err)
			}
			if got := tenantName(t, db); got != want {
				t.Fatalf("after restart: name = %q, want %q", got, want)
			}
		})
	}
}

func TestPostgresPersistentDataDir(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	// The directory must be traversable by the postgres user when we are root,
	// which t.TempDir() is not.
	base, err := os.MkdirTemp("", "switchyard-pg-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(base, "state", "pg")
	out, _ := testLogFile(t, "postgres.log")
	opts := PostgresOptions{DataDir: dataDir, LogOutput: out, Settings: map[string]string{"fsync": "on", "application_name": "it's"}}

	p, err := StartPostgres(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	db := openDB(t, p.DSN("postgres"))
	if _, err := db.ExecContext(ctx, `CREATE TABLE tenants (id int PRIMARY KEY, name text); INSERT INTO tenants VALUES (1, 'kept')`); err != nil {
		t.Fatal(err)
	}
	var fsync string
	if err := db.QueryRowContext(ctx, "SHOW fsync").Scan(&fsync); err != nil {
		t.Fatal(err)
	}
	if fsync != "on" {
		t.Fatalf("fsync = %q, want the override on", fsync)
	}
	_ = db.Close()
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err != nil {
		t.Fatalf("data dir removed by Stop: %v", err)
	}

	p2, err := StartPostgres(ctx, opts) // new port, same data
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p2.Stop() })
	if got := tenantName(t, openDB(t, p2.DSN("postgres"))); got != "kept" {
		t.Fatalf("name = %q, want kept", got)
	}
}

func put(t *testing.T, c *Consul, key, value string) {
	t.Helper()
	if _, err := c.Client().KV().Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
		t.Fatalf("put %s via %s: %v", key, c.NodeName(), err)
	}
}

func get(t *testing.T, c *Consul, key string) string {
	t.Helper()
	pair, _, err := c.Client().KV().Get(key, nil)
	if err != nil {
		t.Fatalf("get %s via %s: %v", key, c.NodeName(), err)
	}
	if pair == nil {
		return ""
	}
	return string(pair.Value)
}

func openDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// tenantName reads tenant 1, retrying briefly because connections pooled
// before a restart fail once.
func tenantName(t *testing.T, db *sql.DB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for {
		var name string
		err := db.QueryRowContext(ctx, "SELECT name FROM tenants WHERE id = 1").Scan(&name)
		if err == nil {
			return name
		}
		if ctx.Err() != nil {
			t.Fatalf("select tenant: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
