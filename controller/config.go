// Package controller is Switchyard's control plane: the API that billing and
// operators call (tenants, plans, targets, moves, rebalancing, audit), a
// billing webhook, and a leader-elected scheduler that carries moves out.
package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/switchyard/switchyard/backup"
	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

// Role is what a bearer token may do.
type Role string

// Roles, from least to most powerful.
const (
	RoleViewer   Role = "viewer"   // read everything
	RoleBilling  Role = "billing"  // read, create tenants, change plans
	RoleOperator Role = "operator" // everything
)

// Config configures a controller. Zero values take the defaults.
type Config struct {
	// Listen is the API address (127.0.0.1:7070).
	Listen string
	// ID names this replica (hostname-pid).
	ID string
	// Prefix is the catalog's Consul KV prefix (switchyard).
	Prefix string
	// Tokens maps bearer tokens to roles.
	Tokens map[string]Role
	// WebhookSecret verifies billing webhook signatures (HMAC-SHA256).
	WebhookSecret []byte
	// MaxConcurrentMoves bounds the moves the leader runs at once (2).
	MaxConcurrentMoves int
	// LeaderTTL is the session TTL of the leader lock (10s).
	LeaderTTL time.Duration
	// Retention keeps a moved tenant's source copy, and the data an
	// in-place restore replaced, this long (24h).
	Retention time.Duration
	// HousekeepingEvery is how often the leader measures tenant sizes and
	// removes offboarded tenants past retention (1m); it also deletes
	// expired idempotency records, at most every IdempotencyTTL or hour.
	HousekeepingEvery time.Duration
	// IdempotencyTTL is how long an Idempotency-Key or a billing event id
	// is remembered (24h): a repeat within it gets the first answer, after
	// it the key is new again.
	IdempotencyTTL time.Duration
	// IdempotencyWait is how long a request waits for the answer of the
	// first request with its key while that one runs (5s); after it, 409.
	IdempotencyWait time.Duration
	// UsageRetention is how far back usage may be asked for; it must
	// match the routers' -usage-retention (7 days).
	UsageRetention time.Duration
	// MoveRateRows limits each move's copy (0: unlimited).
	MoveRateRows float64
	// MoveChunkRows is each move's copy chunk (0: the migrator's default).
	MoveChunkRows int
	// Domains configures tenants' custom domains (domains.go).
	Domains DomainsConfig
	// ProvisionCluster, when no registered dedicated cluster is free, makes
	// a new one (a command, a webhook, or the dev stack starting PostgreSQL
	// and an app instance) and returns it; the controller registers it.
	ProvisionCluster func(ctx context.Context, tenant string) (catalog.Target, error)
	// MoveHooks stop the leader's moves at chosen points (tests; nil in
	// production).
	MoveHooks *migrator.Hooks
	Logger    *slog.Logger
	// BackupStores are where backups go, by name; each carries its region
	// label, checked against a tenant's residency (none: no backups).
	BackupStores map[string]backup.Store
	// BackupKey seals new backups and opens sealed ones (nil: backups are
	// not encrypted).
	BackupKey *backup.Key
}

// SetDefaults fills in zero values.
func (c *Config) SetDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7070"
	}
	if c.ID == "" {
		h, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	if c.Prefix == "" {
		c.Prefix = "switchyard"
	}
	if c.MaxConcurrentMoves == 0 {
		c.MaxConcurrentMoves = 2
	}
	if c.LeaderTTL == 0 {
		c.LeaderTTL = 10 * time.Second
	}
	if c.Retention == 0 {
		c.Retention = 24 * time.Hour
	}
	if c.IdempotencyTTL == 0 {
		c.IdempotencyTTL = 24 * time.Hour
	}
	if c.IdempotencyWait == 0 {
		c.IdempotencyWait = 5 * time.Second
	}
	if c.HousekeepingEvery == 0 {
		c.HousekeepingEvery = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Domains.SetDefaults()
}

// Validate reports every setting that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %w", c.Listen, err))
	}
	if len(c.Tokens) == 0 {
		errs = append(errs, errors.New("no API tokens configured"))
	}
	for tok, role := range c.Tokens {
		if len(tok) < 16 {
			errs = append(errs, errors.New("API tokens must be at least 16 characters"))
		}
		if role != RoleViewer && role != RoleBilling && role != RoleOperator {
			errs = append(errs, fmt.Errorf("unknown role %q", role))
		}
	}
	if len(c.WebhookSecret) > 0 && len(c.WebhookSecret) < 32 {
		errs = append(errs, errors.New("webhook secret must be at least 32 bytes"))
	}
	if c.MaxConcurrentMoves < 1 || c.LeaderTTL < 0 || c.Retention < 0 || c.MoveRateRows < 0 || c.IdempotencyTTL < 0 || c.IdempotencyWait < 0 {
		errs = append(errs, errors.New("concurrency must be at least 1 and durations not negative"))
	}
	if err := c.Domains.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ParseTokens reads "token:role,token:role".
func ParseTokens(s string) (map[string]Role, error) {
	out := map[string]Role{}
	err := parseList(s, ":", "token entry %q: want token:role", func(tok, role string) error {
		out[tok] = Role(role)
		return nil
	})
	return out, err
}

// parseList calls add for each "key<sep>value" entry of a comma-separated
// flag (blank entries skipped); an entry without sep is refused with
// badEntry (a format taking the entry).
func parseList(s, sep, badEntry string, add func(key, value string) error) error {
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, sep)
		if !ok {
			return fmt.Errorf(badEntry, part)
		}
		if err := add(k, v); err != nil {
			return err
		}
	}
	return nil
}

// CommandProvisioner runs a command to make a new dedicated cluster: it gets
// the tenant id in $SWITCHYARD_TENANT and prints the new target as JSON.
func CommandProvisioner(command string) func(ctx context.Context, tenant string) (catalog.Target, error) {
	return func(ctx context.Context, tenant string) (catalog.Target, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", "-c", command)
		cmd.Env = append(os.Environ(), "SWITCHYARD_TENANT="+tenant)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return catalog.Target{}, fmt.Errorf("provisioning hook: %w: %s", err, stderr.String())
		}
		var t catalog.Target
		if err := json.Unmarshal(out, &t); err != nil {
			return catalog.Target{}, fmt.Errorf("provisioning hook printed no target JSON: %w", err)
		}
		return t, nil
	}
}
