package orders

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // registers the "postgres" driver
)

// Pool sizing per database.
const (
	poolMaxOpen     = 16
	poolMaxIdle     = 16
	poolMaxIdleTime = time.Minute
)

// errPoolsClosed is returned once the server has shut its pools.
var errPoolsClosed = errors.New("database pools are closed")

// pools holds one *sqlx.DB per DSN, opened on first use. DSNs carry
// credentials, so they are never logged.
type pools struct {
	mu     sync.Mutex
	byDSN  map[string]*pool
	closed bool
}

// pool is one database's connection pool and whether its schema has been
// ensured. ensureMu serialises the first EnsureSchema without holding the
// pools lock, so one slow database never blocks requests to the others.
type pool struct {
	db       *sqlx.DB
	ensureMu sync.Mutex
	ready    atomic.Bool
}

func newPools() *pools { return &pools{byDSN: map[string]*pool{}} }

// get returns the pool for dsn, opening it and ensuring the schema on first
// use. A failed EnsureSchema is retried by the next call.
func (p *pools) get(ctx context.Context, dsn string) (*sqlx.DB, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errPoolsClosed
	}
	e, ok := p.byDSN[dsn]
	if !ok {
		db, err := sqlx.Open("postgres", dsn)
		if err != nil {
			p.mu.Unlock()
			// The error may quote the DSN; do not wrap it.
			return nil, errors.New("open database: invalid DSN")
		}
		db.SetMaxOpenConns(poolMaxOpen)
		db.SetMaxIdleConns(poolMaxIdle)
		db.SetConnMaxIdleTime(poolMaxIdleTime)
		e = &pool{db: db}
		p.byDSN[dsn] = e
	}
	p.mu.Unlock()

	if e.ready.Load() {
		return e.db, nil
	}
	e.ensureMu.Lock()
	defer e.ensureMu.Unlock()
	if !e.ready.Load() {
		if err := EnsureSchema(ctx, e.db); err != nil {
			return nil, err
		}
		e.ready.Store(true)
	}
	return e.db, nil
}

// len counts the open pools.
func (p *pools) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byDSN)
}

// close closes every pool; later gets fail with errPoolsClosed.
func (p *pools) close() error {
	p.mu.Lock()
	all := p.byDSN
	p.byDSN = map[string]*pool{}
	p.closed = true
	p.mu.Unlock()
	var errs []error
	for _, e := range all {
		if err := e.db.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close database pools: %w", err)
	}
	return nil
}
