package migrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// defaultApplyBatch is how many captured changes one apply batch handles
// (pipelined, 50–67k changes/s on a quiet 2-core machine: TestApplyRate;
// 2,500 to 10,000 made no difference).
const defaultApplyBatch = 10_000

// applier replays captured changes: for each captured key it re-reads the
// row on the source and upserts it on the target, or deletes it there if the
// source no longer has it. A replay is therefore harmless, and the order in
// which changes committed does not matter. Handled change rows are deleted
// (never "id > last seen", which skips rows that commit late).
//
// It works set-based: per table, a batch of keys is read from the source in
// one COPY (all tables of a batch in one snapshot), copied into a temporary
// table on the target, and applied there with one INSERT … ON CONFLICT and
// one DELETE, in one target transaction. Batches are pipelined over two
// source connections (applyTo).
//
// Every loop that applies works up to a high-water mark (the largest change
// id when it started): changes captured later belong to the next step, so no
// apply chases writers. Ids below the mark that commit late are still
// present for the next step, which re-reads everything there.
type applier struct {
	src, dst       *sqlx.DB
	srcDSN, dstDSN string
	tables         []Table // parents first
	keyColumn      string
	tenant         string
	batch          int
	// before, if set, is called before each batch with its size (a hook).
	before func(changes int) error

	// srcConn and srcConn2 take turns reading batches (applyTo).
	srcConn, srcConn2, dstConn *pgconn.PgConn
	temps                      map[string]string // table key → temporary table on dstConn

	applied int64         // changes applied by this applier
	busy    time.Duration // time spent applying them
}

// close drops the applier's connections.
func (a *applier) close() {
	for _, c := range []*pgconn.PgConn{a.srcConn, a.srcConn2, a.dstConn} {
		if c != nil {
			_ = c.Close(context.Background())
		}
	}
	a.srcConn, a.srcConn2, a.dstConn, a.temps = nil, nil, nil, nil
}

// connect opens (or reopens after a failure) the COPY connections.
func (a *applier) connect(ctx context.Context) error {
	var err error
	for _, c := range []**pgconn.PgConn{&a.srcConn, &a.srcConn2} {
		if *c == nil || (*c).IsClosed() {
			if *c, err = pgconn.Connect(ctx, a.srcDSN); err != nil {
				*c = nil
				return fmt.Errorf("apply: source database: %w", err)
			}
		}
	}
	if a.dstConn == nil || a.dstConn.IsClosed() {
		a.temps = map[string]string{}
		if a.dstConn, err = pgconn.Connect(ctx, a.dstDSN); err != nil {
			a.dstConn = nil
			return fmt.Errorf("apply: target database: %w", err)
		}
	}
	return nil
}

// highWater is the largest id of the tenant's captured changes now (0: none).
func (a *applier) highWater(ctx context.Context) (int64, error) {
	var hwm int64
	if err := a.src.GetContext(ctx, &hwm, `SELECT coalesce(max(id), 0) FROM switchyard.changes WHERE tenant_id = $1`, a.tenant); err != nil {
		return 0, fmt.Errorf("high-water mark of the change capture: %w", err)
	}
	return hwm, nil
}

// backlog counts captured changes not applied yet.
func (a *applier) backlog(ctx context.Context) (int, error) {
	var n int
	err := a.src.GetContext(ctx, &n, `SELECT count(*) FROM switchyard.changes WHERE tenant_id = $1`, a.tenant)
	return n, err
}

// pendingKeys returns table → set of keys (canonical jsonb text) with
// captured changes not applied yet.
func (a *applier) pendingKeys(ctx context.Context) (map[string]map[string]bool, error) {
	rows, err := a.src.QueryContext(ctx, `SELECT DISTINCT tbl, pk::text FROM switchyard.changes WHERE tenant_id = $1`, a.tenant)
	if err != nil {
		return nil, fmt.Errorf("pending keys: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]bool{}
	for rows.Next() {
		var tbl, pk string
		if err := rows.Scan(&tbl, &pk); err != nil {
			return nil, err
		}
		if out[tbl] == nil {
			out[tbl] = map[string]bool{}
		}
		out[tbl][pk] = true
	}
	return out, rows.Err()
}

// applyTo applies every captured change with id <= hwm (of the tables in
// only, if not nil), a batch at a time, calling each after every batch. It
// ends: no id at or below the mark is handed out after the mark was read,
// so only transactions already running then can add to the work.
//
// Batches are pipelined: while one batch is written to the target, the
// next is claimed and read on the source's other connection. Its claim
// skips the changes the batch before holds locked (deleted, uncommitted:
// that batch commits only after this claim returned, so the claim never
// meets a delete committed after its snapshot), and takes every other
// change up to the mark its snapshot sees, so a writer's transaction comes
// whole: a parent whose id is below the previous batch's but committed
// after its snapshot comes with its child. A source transaction commits
// only after its batch's target transaction did.
func (a *applier) applyTo(ctx context.Context, hwm int64, only []string, each func(n int, keys map[string][]json.RawMessage) error) (int, error) {
	total := 0
	// Busy time grows at each batch's commit, by the time since the pass
	// began or the previous commit: a pass's closing claim, which finds
	// nothing, is not applying (the apply rate is per change).
	mark := time.Now()
	if err := a.connect(ctx); err != nil {
		return 0, err
	}
	next, err := a.readBatch(ctx, a.srcConn, hwm, only)
	for err == nil && next.n > 0 {
		cur := next
		written := a.writeAsync(ctx, cur)
		next, err = &claimed{}, nil
		if cur.n == a.batch {
			next, err = a.readBatch(ctx, a.otherSource(cur.conn), hwm, only)
		}
		werr := <-written
		if werr == nil {
			if werr = cur.conn.Exec(ctx, "COMMIT").Close(); werr != nil {
				werr = fmt.Errorf("delete applied changes: %w", werr)
			}
		}
		if werr == nil {
			now := time.Now()
			a.busy, mark = a.busy+now.Sub(mark), now
			a.applied += int64(cur.n)
			total += cur.n
			if each != nil {
				werr = each(cur.n, cur.keys)
				mark = time.Now() // the caller's work is not applying
			}
		}
		if werr != nil {
			a.rollback(ctx, cur, next)
			return total, werr
		}
	}
	return total, err
}

// claimed is a batch claimed and read in an open source transaction on
// conn (n == 0: nothing claimed, no transaction open).
type claimed struct {
	conn    *pgconn.PgConn
	n       int
	keys    map[string][]json.RawMessage
	current map[string]*bytes.Buffer
}

// readBatch claims, on conn, up to a.batch changes with id <= hwm and
// reads the current rows of their keys in the same REPEATABLE READ
// transaction, which stays open (see applyTo). On an error it rolls back.
func (a *applier) readBatch(ctx context.Context, conn *pgconn.PgConn, hwm int64, only []string) (b *claimed, err error) {
	b = &claimed{conn: conn}
	defer func() {
		if err != nil {
			a.rollback(ctx, b)
		}
	}()
	if b.n, b.keys, err = a.claim(ctx, conn, hwm, only); err != nil || b.n == 0 {
		if err == nil {
			err = conn.Exec(ctx, "COMMIT").Close()
		}
		b.n = 0
		return b, err
	}
	if a.before != nil {
		if err := a.before(b.n); err != nil {
			return b, err
		}
	}
	b.current, err = a.readCurrent(ctx, conn, b.keys)
	return b, err
}

// writeAsync writes b to the target in its own goroutine; the channel
// gets the outcome (a panic as an error, the target connection closed: it
// may be inside a transaction the panic left open).
func (a *applier) writeAsync(ctx context.Context, b *claimed) <-chan error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				_ = a.dstConn.Close(context.WithoutCancel(ctx))
				done <- fmt.Errorf("apply: panic writing to the target: %v", p)
			}
		}()
		done <- a.write(ctx, b.keys, b.current)
	}()
	return done
}

// rollback ends the open source transactions of the given batches, leaving
// their changes to be applied again.
func (a *applier) rollback(ctx context.Context, bs ...*claimed) {
	for _, b := range bs {
		if b != nil && b.conn != nil && !b.conn.IsClosed() {
			_ = b.conn.Exec(context.WithoutCancel(ctx), "ROLLBACK").Close()
		}
	}
}

// otherSource is the source connection that is not c.
func (a *applier) otherSource(c *pgconn.PgConn) *pgconn.PgConn {
	if c == a.srcConn {
		return a.srcConn2
	}
	return a.srcConn
}

// claim opens a REPEATABLE READ transaction on conn and deletes in it the
// oldest a.batch changes with id <= hwm that no other transaction holds
// (SKIP LOCKED: those the pipelined batch before claimed), in one round
// trip, and returns how many and their distinct keys per table.
func (a *applier) claim(ctx context.Context, conn *pgconn.PgConn, hwm int64, only []string) (int, map[string][]json.RawMessage, error) {
	filter := ""
	if only != nil {
		arr, err := pq.Array(only).Value()
		if err != nil {
			return 0, nil, err
		}
		filter = " AND tbl = ANY(" + pq.QuoteLiteral(arr.(string)) + "::text[])"
	}
	q := fmt.Sprintf(`BEGIN ISOLATION LEVEL REPEATABLE READ;
		DELETE FROM switchyard.changes WHERE id IN (SELECT id FROM switchyard.changes
		WHERE tenant_id = %s AND id <= %d%s ORDER BY id LIMIT %d FOR UPDATE SKIP LOCKED) RETURNING tbl, pk::text`,
		pq.QuoteLiteral(a.tenant), hwm, filter, a.batch)
	results, err := conn.Exec(ctx, q).ReadAll()
	if err != nil {
		return 0, nil, fmt.Errorf("read changes: %w", err)
	}
	if len(results) != 2 {
		return 0, nil, fmt.Errorf("read changes: %d results, want 2", len(results))
	}
	res := results[1]
	keys := map[string][]json.RawMessage{}
	seen := map[string]bool{}
	for _, row := range res.Rows {
		k := string(row[0]) + "|" + string(row[1])
		if !seen[k] {
			seen[k] = true
			keys[string(row[0])] = append(keys[string(row[0])], json.RawMessage(row[1]))
		}
	}
	return len(res.Rows), keys, nil
}

// sync makes the target's rows for the given keys equal the source's:
// deletes children first, upserts parents first, in one target transaction.
func (a *applier) sync(ctx context.Context, keys map[string][]json.RawMessage) error {
	if err := a.connect(ctx); err != nil {
		return err
	}
	if err := a.srcConn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").Close(); err != nil {
		return fmt.Errorf("re-read: %w", err)
	}
	current, err := a.readCurrent(ctx, a.srcConn, keys)
	if err == nil {
		err = a.srcConn.Exec(ctx, "COMMIT").Close()
	}
	if err != nil {
		if !a.srcConn.IsClosed() {
			_ = a.srcConn.Exec(context.WithoutCancel(ctx), "ROLLBACK").Close()
		}
		return err
	}
	return a.write(ctx, keys, current)
}

// readCurrent reads, in the source transaction open on conn, the current
// rows for the keys, per table (COPY text). One snapshot for all tables: a
// child read has its parent in the same read or already applied.
func (a *applier) readCurrent(ctx context.Context, conn *pgconn.PgConn, keys map[string][]json.RawMessage) (map[string]*bytes.Buffer, error) {
	out := map[string]*bytes.Buffer{}
	for _, t := range a.tables {
		ks := keys[t.Key()]
		if len(ks) == 0 {
			continue
		}
		arr, err := json.Marshal(ks)
		if err != nil {
			return nil, err
		}
		q := fmt.Sprintf(`COPY (SELECT %[1]s FROM %[2]s JOIN %[3]s t ON (%[4]s) = (%[5]s) WHERE t.%[6]s = %[7]s) TO STDOUT`,
			prefixed("t", columnNames(t)), keyRecordset(t, pq.QuoteLiteral(string(arr))+"::jsonb"), t.Ident(),
			prefixed("t", t.PK), prefixed("k", t.PK), pq.QuoteIdentifier(a.keyColumn), pq.QuoteLiteral(a.tenant))
		buf := &bytes.Buffer{}
		if _, err := conn.CopyTo(ctx, buf, q); err != nil {
			return nil, fmt.Errorf("re-read %s: %w", t.Key(), err)
		}
		out[t.Key()] = buf
	}
	return out, nil
}

// keyRecordset is a FROM item (alias k) of the primary keys in the JSON
// array expr, typed as t's key columns.
func keyRecordset(t Table, expr string) string {
	cols := make([]string, len(t.PK))
	for i, k := range t.PK {
		cols[i] = pq.QuoteIdentifier(k) + " " + t.colType(k)
	}
	return fmt.Sprintf("jsonb_to_recordset(%s) AS k(%s)", expr, strings.Join(cols, ", "))
}

// write applies one batch on the target in one transaction: the current
// rows go into a temporary table per table, keys absent there are deleted
// (children first), the rows are upserted (parents first).
func (a *applier) write(ctx context.Context, keys map[string][]json.RawMessage, current map[string]*bytes.Buffer) (err error) {
	conn := a.dstConn
	if err := a.ensureTemps(ctx, keys); err != nil {
		return err
	}
	defer func() {
		if err != nil && !conn.IsClosed() {
			_ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK").Close()
		}
	}()
	// A destination holding a retained (fenced) copy of the tenant lets
	// Switchyard's own writes through.
	begin := `BEGIN; SELECT set_config('switchyard.bypass', ` + pq.QuoteLiteral(a.tenant) + `, true)`
	if err := conn.Exec(ctx, begin).Close(); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	var stmts []string
	for i := len(a.tables) - 1; i >= 0; i-- { // deletes: children first
		t := a.tables[i]
		if ks := keys[t.Key()]; len(ks) > 0 {
			q, err := a.deleteGoneSQL(t, ks)
			if err != nil {
				return err
			}
			stmts = append(stmts, q)
		}
	}
	for _, t := range a.tables { // loads; upserts, parents first
		if buf := current[t.Key()]; buf != nil && buf.Len() > 0 {
			if err := a.load(ctx, t, buf); err != nil {
				return err
			}
			stmts = append(stmts, upsertSQL(t, a.temps[t.Key()]))
		}
	}
	// The deletes, the upserts and the commit in one round trip: a failure
	// skips the rest, and the deferred rollback ends the transaction.
	if err := conn.Exec(ctx, strings.Join(append(stmts, "COMMIT"), ";\n")).Close(); err != nil {
		return fmt.Errorf("apply to the target: %w", err)
	}
	return nil
}

// ensureTemps creates, outside any transaction (a rollback would take
// them away), the temporary tables of the tables with keys: one per table
// and connection, emptied at every commit.
func (a *applier) ensureTemps(ctx context.Context, keys map[string][]json.RawMessage) error {
	for _, t := range a.tables {
		if _, ok := a.temps[t.Key()]; ok || len(keys[t.Key()]) == 0 {
			continue
		}
		temp := pq.QuoteIdentifier(fmt.Sprintf("switchyard_apply_%d", len(a.temps)))
		q := fmt.Sprintf(`CREATE TEMPORARY TABLE %s (LIKE %s) ON COMMIT DELETE ROWS`, temp, t.Ident())
		if err := a.dstConn.Exec(ctx, q).Close(); err != nil {
			return fmt.Errorf("apply %s: temporary table: %w", t.Key(), err)
		}
		a.temps[t.Key()] = temp
	}
	return nil
}

// load copies one table's current rows into its temporary table.
func (a *applier) load(ctx context.Context, t Table, rows *bytes.Buffer) error {
	q := fmt.Sprintf(`COPY %s (%s) FROM STDIN`, a.temps[t.Key()], strings.Join(quoted(columnNames(t)), ", "))
	if _, err := a.dstConn.CopyFrom(ctx, rows, q); err != nil {
		return fmt.Errorf("apply %s: load current rows: %w", t.Key(), err)
	}
	return nil
}

// deleteGoneSQL deletes on the target the tenant's rows of the keys that
// the source no longer has (absent from the temporary table).
func (a *applier) deleteGoneSQL(t Table, ks []json.RawMessage) (string, error) {
	arr, err := json.Marshal(ks)
	if err != nil {
		return "", err
	}
	// EXCEPT (a hashed set operation), not NOT EXISTS: the temporary table
	// has no statistics, and a nested anti-join over it is quadratic.
	return fmt.Sprintf(`DELETE FROM %[1]s t USING (SELECT %[2]s FROM %[3]s EXCEPT SELECT %[4]s FROM %[5]s s) g
		WHERE (%[6]s) = (%[7]s) AND t.%[8]s = %[9]s`,
		t.Ident(), prefixed("k", t.PK), keyRecordset(t, pq.QuoteLiteral(string(arr))+"::jsonb"), prefixed("s", t.PK),
		a.temps[t.Key()], prefixed("t", t.PK), prefixed("g", t.PK), pq.QuoteIdentifier(a.keyColumn),
		pq.QuoteLiteral(a.tenant)), nil
}

// isFKViolation reports a foreign-key violation from either driver.
func isFKViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23503"
	}
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == "23503"
}

// upsertSQL writes the rows of the temporary table into t.
func upsertSQL(t Table, temp string) string {
	cols := quoted(columnNames(t))
	var sets []string
	for i, c := range t.Columns {
		isKey := false
		for _, k := range t.PK {
			if k == c.Name {
				isKey = true
			}
		}
		if !isKey {
			sets = append(sets, fmt.Sprintf("%s = EXCLUDED.%s", cols[i], cols[i]))
		}
	}
	conflict := "DO NOTHING"
	if len(sets) > 0 {
		conflict = "DO UPDATE SET " + strings.Join(sets, ", ")
	}
	return fmt.Sprintf(`INSERT INTO %[1]s (%[2]s) SELECT %[2]s FROM %[3]s ON CONFLICT (%[4]s) %[5]s`,
		t.Ident(), strings.Join(cols, ", "), temp, quoteIdents(t.PK), conflict)
}

func columnNames(t Table) []string {
	out := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = c.Name
	}
	return out
}

func quoted(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = pq.QuoteIdentifier(n)
	}
	return out
}

func prefixed(alias string, cols []string) string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = alias + "." + pq.QuoteIdentifier(c)
	}
	return strings.Join(out, ", ")
}
