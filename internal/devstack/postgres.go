package devstack

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"
)

// DefaultPostgresBinDir is where Debian's postgresql-15 package installs the
// server binaries.
const DefaultPostgresBinDir = "/usr/lib/postgresql/15/bin"

// ErrPostgresNotFound is returned (wrapped) when initdb or postgres is missing.
var ErrPostgresNotFound = errors.New("PostgreSQL 15 server binaries not found; run `make tools` to install them")

const (
	postgresReadyTimeout = 30 * time.Second
	postgresStopGrace    = 30 * time.Second
	postgresUser         = "postgres"
	// postgresConfFile holds the devstack's settings; it is rewritten on every
	// start and included from postgresql.conf.
	postgresConfFile = "switchyard.conf"
)

// defaultPostgresSettings are documented on PostgresOptions.Settings.
var defaultPostgresSettings = map[string]string{
	"fsync":                 "off",
	"wal_level":             "logical",
	"max_replication_slots": "20",
	"max_wal_senders":       "20",
	"max_connections":       "200",
	"shared_buffers":        "128MB",
}

// PostgresOptions configures StartPostgres.
type PostgresOptions struct {
	// BinDir holds initdb and postgres (DefaultPostgresBinDir).
	BinDir string
	// DataDir is the cluster's data directory. If empty, a new temporary
	// directory is used and removed by Stop. If set and already initialised,
	// it is reused, so data survives across runs; otherwise initdb creates a
	// cluster in it. When running as root, every directory above it must be
	// traversable by the postgres user.
	DataDir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// LogOutput receives initdb's and the server's output (default:
	// discarded). It need not be safe for concurrent use.
	LogOutput io.Writer
	// Settings are extra postgresql.conf settings. They override the
	// defaults: fsync=off (for speed; set "on" for a DataDir whose data
	// should survive an OS crash), wal_level=logical,
	// max_replication_slots=20, max_wal_senders=20, max_connections=200,
	// shared_buffers=128MB. listen_addresses, port and
	// unix_socket_directories are always set by the devstack.
	Settings map[string]string
}

// Postgres is a PostgreSQL server (postmaster) running as a child process,
// listening on 127.0.0.1 with trust authentication for user "postgres".
type Postgres struct {
	binDir    string
	dataDir   string
	socketDir string
	port      int
	settings  map[string]string
	cred      *syscall.Credential // nil: run as the current user
	output    io.Writer
	tail      *tailBuffer
	tempDirs  []string // removed by Stop

	mu      sync.Mutex
	proc    *process
	stopped bool
}

// StartPostgres initialises (if needed) and starts a PostgreSQL server, and
// waits until it accepts queries. Stop it with Stop.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	binDir, err := resolvePostgresBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	port := opts.Port
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	p := &Postgres{
		binDir:   binDir,
		port:     port,
		settings: maps.Clone(defaultPostgresSettings),
		cred:     cred,
		tail:     &tailBuffer{},
	}
	maps.Copy(p.settings, opts.Settings)
	p.output = childOutput(p.tail, opts.LogOutput, "")

	if err := p.prepareDirs(opts.DataDir); err != nil {
		_ = p.Stop()
		return nil, err
	}
	if err := p.initdb(ctx); err != nil {
		_ = p.Stop()
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		err := p.writeConfig()
		if err == nil {
			err = p.launch()
		}
		if err == nil {
			err = p.waitReady(ctx)
		}
		if err == nil {
			return p, nil
		}
		// The port was taken between FreePort and the bind: try another.
		if opts.Port != 0 || !errors.Is(err, errPortInUse) || attempt == startAttempts {
			_ = p.Stop()
			return nil, err
		}
		if p.port, err = FreePort(); err != nil {
			_ = p.Stop()
			return nil, err
		}
	}
}

// Port returns the server's TCP port.
func (p *Postgres) Port() int { return p.port }

// Addr returns the server's address, "127.0.0.1:port".
func (p *Postgres) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

// DataDir returns the server's data directory.
func (p *Postgres) DataDir() string { return p.dataDir }

// DSN returns a lib/pq connection URL for database dbname as user postgres.
func (p *Postgres) DSN(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(postgresUser),
		Host:     p.Addr(),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// CreateDatabase creates database name unless it already exists.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) error {
	db, err := sql.Open("postgres", p.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("devstack: create database %s: %w", name, err)
	}
	defer db.Close()
	var exists bool
	if err := db.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("devstack: create database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)); err != nil {
		if pq.As(err, pqerror.DuplicateDatabase) != nil {
			return nil // created concurrently
		}
		return fmt.Errorf("devstack: create database %s: %w", name, err)
	}
	return nil
}

// Stop shuts the server down in "fast" mode (SIGINT to the postmaster), waits
// for it to exit (SIGKILL to its process group after 30s) and removes the
// temporary directories it created. A caller-supplied DataDir is kept. Stop
// is idempotent; Restart fails after it.
func (p *Postgres) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return nil
	}
	p.stopped = true
	var errs []error
	if p.proc != nil {
		if err := p.proc.stop(syscall.SIGINT, postgresStopGrace); err != nil {
			errs = append(errs, fmt.Errorf("devstack: %w", err))
		}
	}
	for _, dir := range p.tempDirs {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("devstack: remove %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// Kill sends SIGKILL to the postmaster and all its descendants, simulating a
// crash, and waits until they are gone. Restart brings it back (running
// crash recovery).
func (p *Postgres) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return nil
	}
	if err := p.proc.kill(); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	return nil
}

// Restart stops the server if it is running (fast shutdown) and starts it
// again on the same port with the same data directory, then waits until it
// accepts queries.
func (p *Postgres) Restart(ctx context.Context) error {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return fmt.Errorf("devstack: restart postgres on %s: %w", p.Addr(), ErrStopped)
	}
	proc := p.proc
	p.mu.Unlock()
	if proc != nil {
		if err := proc.stop(syscall.SIGINT, postgresStopGrace); err != nil {
			return fmt.Errorf("devstack: restart: %w", err)
		}
	}
	if err := p.launch(); err != nil {
		return err
	}
	return p.waitReady(ctx)
}

// LogTail returns the last lines the server printed.
func (p *Postgres) LogTail() string { return p.tail.String() }

// prepareDirs sets dataDir and socketDir, creating temporary directories
// owned by the user the server runs as.
func (p *Postgres) prepareDirs(dataDir string) error {
	if dataDir == "" {
		root, err := p.tempDir("switchyard-pg-")
		if err != nil {
			return err
		}
		p.socketDir = root
		p.dataDir = filepath.Join(root, "data")
		return nil
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return fmt.Errorf("devstack: postgres data dir: %w", err)
	}
	p.dataDir = abs
	sock, err := p.tempDir("switchyard-pg-sock-")
	if err != nil {
		return err
	}
	p.socketDir = sock
	return nil
}

// tempDir creates a temporary directory readable by everyone, owned by the
// server's user and removed by Stop.
func (p *Postgres) tempDir(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", fmt.Errorf("devstack: postgres temp dir: %w", err)
	}
	p.tempDirs = append(p.tempDirs, dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", fmt.Errorf("devstack: postgres temp dir: %w", err)
	}
	if err := p.chown(dir); err != nil {
		return "", err
	}
	return dir, nil
}

// initdb creates the cluster unless dataDir already holds one.
func (p *Postgres) initdb(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(p.dataDir, "PG_VERSION")); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p.dataDir), 0o755); err != nil {
		return fmt.Errorf("devstack: postgres data dir: %w", err)
	}
	if err := os.Mkdir(p.dataDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("devstack: postgres data dir: %w", err)
	}
	if err := p.chown(p.dataDir); err != nil {
		return err
	}
	err := procSpec{
		name: "initdb",
		path: filepath.Join(p.binDir, "initdb"),
		args: []string{
			"-D", p.dataDir,
			"-U", postgresUser,
			"--auth=trust",
			"-E", "UTF8",
			"--locale=C",
			"--no-sync",
			"--no-instructions",
		},
		dir:    p.socketDir, // initdb needs a working directory it can enter
		cred:   p.cred,
		output: p.output,
	}.run(ctx)
	if err != nil {
		return fmt.Errorf("devstack: %w%s", err, withTail(p.tail))
	}
	return nil
}

// settingName matches valid postgresql.conf parameter names.
var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// writeConfig writes postgresConfFile with the current settings and makes
// sure postgresql.conf includes it.
func (p *Postgres) writeConfig() error {
	settings := maps.Clone(p.settings)
	settings["listen_addresses"] = "127.0.0.1"
	settings["port"] = strconv.Itoa(p.port)
	settings["unix_socket_directories"] = p.socketDir

	var b strings.Builder
	b.WriteString("# Written by the switchyard devstack on every start; edits are overwritten.\n")
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		if !settingName.MatchString(k) {
			return fmt.Errorf("devstack: postgres setting %q: invalid name", k)
		}
		fmt.Fprintf(&b, "%s = '%s'\n", k, strings.ReplaceAll(settings[k], "'", "''"))
	}
	path := filepath.Join(p.dataDir, postgresConfFile)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("devstack: postgres config: %w", err)
	}
	if err := p.chown(path); err != nil {
		return err
	}

	main := filepath.Join(p.dataDir, "postgresql.conf")
	conf, err := os.ReadFile(main)
	if err != nil {
		return fmt.Errorf("devstack: postgres config: %w", err)
	}
	include := fmt.Sprintf("include_if_exists = '%s'", postgresConfFile)
	if strings.Contains(string(conf), include) {
		return nil
	}
	f, err := os.OpenFile(main, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("devstack: postgres config: %w", err)
	}
	_, werr := fmt.Fprintf(f, "\n# Added by the switchyard devstack.\n%s\n", include)
	if err := errors.Join(werr, f.Close()); err != nil {
		return fmt.Errorf("devstack: postgres config: %w", err)
	}
	return nil
}

// launch starts the postmaster; the caller waits for readiness.
func (p *Postgres) launch() error {
	proc, err := startProcess(procSpec{
		name:   "postgres",
		path:   filepath.Join(p.binDir, "postgres"),
		args:   []string{"-D", p.dataDir},
		dir:    p.socketDir,
		cred:   p.cred,
		output: p.output,
	}, p.tail)
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	p.mu.Lock()
	p.proc = proc
	p.mu.Unlock()
	return nil
}

// waitReady polls until `SELECT 1` succeeds, for at most postgresReadyTimeout.
func (p *Postgres) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, postgresReadyTimeout)
	defer cancel()
	p.mu.Lock()
	proc := p.proc
	p.mu.Unlock()
	db, err := sql.Open("postgres", p.DSN("postgres")+"&connect_timeout=2")
	if err != nil {
		return fmt.Errorf("devstack: postgres: %w", err)
	}
	defer db.Close()
	var lastErr error
	for {
		if proc.exited() {
			return fmt.Errorf("devstack: postgres on %s: %w%s", p.Addr(), proc.exitError(p.tail), withTail(p.tail))
		}
		var one int
		if lastErr = db.QueryRowContext(ctx, "SELECT 1").Scan(&one); lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("devstack: postgres on %s not ready: %w (last error: %w)%s",
				p.Addr(), ctx.Err(), lastErr, withTail(p.tail))
		case <-proc.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *Postgres) chown(path string) error {
	if p.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	return nil
}

// postgresCredential returns the credential PostgreSQL programs run with:
// the postgres OS user when running as root (they refuse root), else nil.
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(postgresUser)
	if err != nil {
		return nil, fmt.Errorf("devstack: running as root, PostgreSQL must run as the %s user: %w", postgresUser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("devstack: uid of %s: %w", postgresUser, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("devstack: gid of %s: %w", postgresUser, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// resolvePostgresBinDir finds the directory holding initdb and postgres.
func resolvePostgresBinDir(explicit string) (string, error) {
	dir := explicit
	if dir == "" {
		dir = DefaultPostgresBinDir
	}
	for _, prog := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(dir, prog)); err != nil {
			return "", fmt.Errorf("devstack: %w: %w", err, ErrPostgresNotFound)
		}
	}
	return dir, nil
}
