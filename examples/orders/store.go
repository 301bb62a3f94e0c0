package orders

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// errNotFound means no order with that id exists for the tenant.
var errNotFound = errors.New("order not found")

// Order is an order as the API returns it.
type Order struct {
	ID         int64           `db:"id" json:"id"`
	TenantID   string          `db:"tenant_id" json:"tenant_id"`
	Item       string          `db:"item" json:"item"`
	Quantity   int             `db:"quantity" json:"quantity"`
	PriceCents int64           `db:"price_cents" json:"price_cents"`
	Attrs      json.RawMessage `db:"attrs" json:"attrs"`
	Version    int             `db:"version" json:"version"`
	CreatedAt  time.Time       `db:"created_at" json:"created_at"`
	UpdatedAt  time.Time       `db:"updated_at" json:"updated_at"`
}

// OrderInput is the body of POST /orders and PUT /orders/{id}.
type OrderInput struct {
	// Item is 1 to 200 characters; required.
	Item string `json:"item"`
	// Quantity is 1 to 1,000,000; required.
	Quantity int `json:"quantity"`
	// PriceCents is at least 0; 0 when absent.
	PriceCents int64 `json:"price_cents"`
	// Attrs is an optional JSON object ({} when absent or null).
	Attrs json.RawMessage `json:"attrs,omitempty"`
}

// OrderList is the body of GET /orders. NextAfterID is the after_id of the
// next page, or nil on the last page.
type OrderList struct {
	Orders      []Order `json:"orders"`
	NextAfterID *int64  `json:"next_after_id"`
}

// Event kinds written to order_events.
const (
	eventCreated = "created"
	eventUpdated = "updated"
)

const orderColumns = "tenant_id, id, item, quantity, price_cents, attrs, version, created_at, updated_at"

// Every statement below is scoped by tenant_id = $1 (or writes $1 as the
// tenant_id): a request can never see or touch another tenant's rows, even
// in the shared pool.
const (
	sqlInsertOrder = `INSERT INTO orders (tenant_id, item, quantity, price_cents, attrs)
VALUES ($1, $2, $3, $4, $5::jsonb)
RETURNING ` + orderColumns
	sqlInsertEvent = `INSERT INTO order_events (tenant_id, order_id, seq, kind) VALUES ($1, $2, $3, $4)`
	sqlGetOrder    = `SELECT ` + orderColumns + ` FROM orders WHERE tenant_id = $1 AND id = $2`
	sqlListOrders  = `SELECT ` + orderColumns + ` FROM orders WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3`
	sqlUpdateOrder = `UPDATE orders
SET item = $3, quantity = $4, price_cents = $5, attrs = $6::jsonb, version = version + 1, updated_at = now()
WHERE tenant_id = $1 AND id = $2
RETURNING ` + orderColumns
	sqlDeleteOrder = `DELETE FROM orders WHERE tenant_id = $1 AND id = $2`
)

// store runs the app's SQL against one database for one tenant.
type store struct {
	db      *sqlx.DB
	tenant  string
	metrics *metrics
}

// observe records how long one store operation took.
func (s *store) observe(op string, start time.Time, err *error) {
	outcome := "ok"
	switch {
	case errors.Is(*err, errNotFound):
		outcome = "not_found"
	case *err != nil:
		outcome = "error"
	}
	s.metrics.dbSeconds.WithLabelValues(op, outcome).Observe(time.Since(start).Seconds())
}

// create inserts an order and its "created" event in one transaction.
func (s *store) create(ctx context.Context, in OrderInput) (o Order, err error) {
	defer s.observe("create", time.Now(), &err)
	err = s.inTx(ctx, func(tx *sqlx.Tx) error {
		if err := tx.GetContext(ctx, &o, sqlInsertOrder, s.tenant, in.Item, in.Quantity, in.PriceCents, string(in.Attrs)); err != nil {
			return fmt.Errorf("insert order: %w", err)
		}
		if _, err := tx.ExecContext(ctx, sqlInsertEvent, s.tenant, o.ID, o.Version, eventCreated); err != nil {
			return fmt.Errorf("insert order event: %w", err)
		}
		return nil
	})
	return normalize(o), err
}

// get reads one order.
func (s *store) get(ctx context.Context, id int64) (o Order, err error) {
	defer s.observe("get", time.Now(), &err)
	if err = s.db.GetContext(ctx, &o, sqlGetOrder, s.tenant, id); errors.Is(err, sql.ErrNoRows) {
		return Order{}, errNotFound
	} else if err != nil {
		return Order{}, fmt.Errorf("get order: %w", err)
	}
	return normalize(o), nil
}

// list returns up to limit orders with id > afterID, in id order, and the
// after_id of the next page (nil when there is none).
func (s *store) list(ctx context.Context, afterID int64, limit int) (out OrderList, err error) {
	defer s.observe("list", time.Now(), &err)
	orders := make([]Order, 0, limit+1)
	// One row more than asked says whether another page exists.
	if err = s.db.SelectContext(ctx, &orders, sqlListOrders, s.tenant, afterID, limit+1); err != nil {
		return OrderList{}, fmt.Errorf("list orders: %w", err)
	}
	if len(orders) > limit {
		orders = orders[:limit]
		next := orders[limit-1].ID
		out.NextAfterID = &next
	}
	for i := range orders {
		orders[i] = normalize(orders[i])
	}
	out.Orders = orders
	return out, nil
}

// update replaces an order's fields, bumps its version and writes an
// "updated" event, in one transaction.
func (s *store) update(ctx context.Context, id int64, in OrderInput) (o Order, err error) {
	defer s.observe("update", time.Now(), &err)
	err = s.inTx(ctx, func(tx *sqlx.Tx) error {
		err := tx.GetContext(ctx, &o, sqlUpdateOrder, s.tenant, id, in.Item, in.Quantity, in.PriceCents, string(in.Attrs))
		if errors.Is(err, sql.ErrNoRows) {
			return errNotFound
		}
		if err != nil {
			return fmt.Errorf("update order: %w", err)
		}
		if _, err := tx.ExecContext(ctx, sqlInsertEvent, s.tenant, o.ID, o.Version, eventUpdated); err != nil {
			return fmt.Errorf("insert order event: %w", err)
		}
		return nil
	})
	return normalize(o), err
}

// delete removes an order; its events go with it (ON DELETE CASCADE).
func (s *store) delete(ctx context.Context, id int64) (err error) {
	defer s.observe("delete", time.Now(), &err)
	res, err := s.db.ExecContext(ctx, sqlDeleteOrder, s.tenant, id)
	if err != nil {
		return fmt.Errorf("delete order: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("delete order: %w", err)
	}
	if n == 0 {
		return errNotFound
	}
	return nil
}

// inTx runs fn in a transaction, committing if it returns nil.
func (s *store) inTx(ctx context.Context, fn func(*sqlx.Tx) error) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// normalize makes timestamps UTC whatever the session time zone.
func normalize(o Order) Order {
	o.CreatedAt = o.CreatedAt.UTC()
	o.UpdatedAt = o.UpdatedAt.UTC()
	return o
}
