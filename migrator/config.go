package migrator

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/switchyard/switchyard/catalog"
)

// DefaultPGBinDir is where pg_dump and psql are looked for.
const DefaultPGBinDir = "/usr/lib/postgresql/15/bin"

// Config configures a Migrator. Zero values take the defaults.
type Config struct {
	// Prefix is the catalog's Consul KV prefix (catalog.DefaultPrefix).
	Prefix string
	// PGBinDir holds pg_dump and psql, used to give a new target its schema
	// (DefaultPGBinDir).
	PGBinDir string
	// ID names this migrator in logs and locks (hostname-pid).
	ID     string
	Logger *slog.Logger
	// LockTTL is the session TTL of the per-tenant move lock (10s): how long
	// a killed migrator's lock outlives it.
	LockTTL time.Duration
	// Hooks let tests stop a move at a chosen point (nil in production).
	Hooks *Hooks
	// ConvergenceWindow: a catch-up whose backlog has not shrunk over this
	// long says it is not converging (10s).
	ConvergenceWindow time.Duration
}

// SetDefaults fills in zero values.
func (c *Config) SetDefaults() {
	if c.Prefix == "" {
		c.Prefix = catalog.DefaultPrefix
	}
	if c.PGBinDir == "" {
		c.PGBinDir = DefaultPGBinDir
	}
	if c.ID == "" {
		h, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Hooks == nil {
		c.Hooks = &Hooks{}
	}
	if c.LockTTL == 0 {
		c.LockTTL = 10 * time.Second
	}
	if c.ConvergenceWindow == 0 {
		c.ConvergenceWindow = defaultConvergenceWindow
	}
}

// Validate reports every setting that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.Prefix) == "" || strings.HasPrefix(c.Prefix, "/") {
		errs = append(errs, fmt.Errorf("catalog prefix %q: want a relative Consul KV path", c.Prefix))
	}
	if strings.ContainsAny(c.ID, "/ \t\n") {
		errs = append(errs, fmt.Errorf("id %q: no slashes or spaces", c.ID))
	}
	if c.LockTTL < 0 || c.ConvergenceWindow < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	return errors.Join(errs...)
}
