package orders

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/jmoiron/sqlx"
)

//go:embed schema.sql
var schemaSQL string

// schemaLockKey is the advisory lock that serialises EnsureSchema across app
// instances: concurrent CREATE TABLE IF NOT EXISTS can otherwise fail on the
// catalog's unique indexes.
const schemaLockKey int64 = 0x7377_6f72_6465_7273 // "sworders"

// SchemaSQL returns the app's schema: idempotent CREATE TABLE IF NOT EXISTS
// statements for orders and order_events.
func SchemaSQL() string { return schemaSQL }

// EnsureSchema creates the app's tables in db if they do not exist. It is
// safe to call concurrently from many processes.
func EnsureSchema(ctx context.Context, db *sqlx.DB) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ensure schema: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", schemaLockKey); err != nil {
		return fmt.Errorf("ensure schema: lock: %w", err)
	}
	if _, err := tx.ExecContext(ctx, schemaSQL); err != nil {
		return fmt.Errorf("ensure schema: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("ensure schema: commit: %w", err)
	}
	return nil
}
