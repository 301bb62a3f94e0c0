package migrator

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"

	"github.com/switchyard/switchyard/internal/retry"
)

// copier streams one table's tenant rows from source to target in key-ordered
// chunks: COPY (SELECT … ORDER BY pk LIMIT n) TO STDOUT on the source piped
// into COPY … FROM STDIN on the target, the way `psql \copy | psql \copy`
// does, without decoding rows. Each chunk commits on the target, so the
// target's largest key is the resume point after a crash.
type copier struct {
	src, dst  *pgconn.PgConn
	table     Table
	keyColumn string
	tenant    string
	chunkRows int

	bounded bool     // bound was called: copy only up to upper
	upper   []string // the largest key to copy; nil with bounded: nothing
	// lower, if set, is the key the copy starts after (a stream's range).
	lower []string
}

// chunkResult says what one chunk moved.
type chunkResult struct {
	rows    int64
	bytes   int64
	lastKey []string // text form of the last row's primary key, nil if no rows
}

// resumeKey returns the largest primary key of the tenant's rows already on
// the target (text form) in the copier's range, or its lower end if there
// are none: chunks commit on the target, so it is where the copy resumes.
func (c *copier) resumeKey(ctx context.Context) ([]string, error) {
	key, err := c.maxKey(ctx, c.dst)
	if err != nil || key != nil {
		return key, err
	}
	return c.lower, nil
}

// keyAt returns the primary key of the tenant's row at offset (in key
// order, up to the bound) in the source, or nil past the end.
func (c *copier) keyAt(ctx context.Context, offset int64) ([]string, error) {
	sql := c.keySQL(false, c.upper) + fmt.Sprintf(" OFFSET %d", offset)
	return readKey(ctx, c.src, sql)
}

// bound fixes the copy's end: the largest primary key of the tenant's rows
// in the source now. Rows written later are in the change capture (it
// starts before the copy) and reach the target in catch-up, so the copy
// never chases writers that add rows as fast as it copies. A table with no
// rows for the tenant copies nothing.
func (c *copier) bound(ctx context.Context) error {
	upper, err := c.maxKey(ctx, c.src)
	if err != nil {
		return err
	}
	c.upper, c.bounded = upper, true
	return nil
}

// maxKey returns the largest primary key of the tenant's rows in the
// database of conn (text form) in the copier's range, or nil if there are
// none.
func (c *copier) maxKey(ctx context.Context, conn *pgconn.PgConn) ([]string, error) {
	return readKey(ctx, conn, c.keySQL(true, c.upper))
}

// keySQL selects the tenant's primary keys after c.lower and up to upper
// (nil: no end) in key order, descending if desc, one row.
func (c *copier) keySQL(desc bool, upper []string) string {
	cols := make([]string, len(c.table.PK))
	order := make([]string, len(c.table.PK))
	for i, k := range c.table.PK {
		cols[i] = "t." + pq.QuoteIdentifier(k) + "::text"
		// Qualified: a bare name would sort by the ::text output column.
		order[i] = "t." + pq.QuoteIdentifier(k)
		if desc {
			order[i] += " DESC"
		}
	}
	where := fmt.Sprintf("t.%s = %s", pq.QuoteIdentifier(c.keyColumn), pq.QuoteLiteral(c.tenant))
	if c.lower != nil {
		where += fmt.Sprintf(" AND (%s) > (%s)", prefixed("t", c.table.PK), c.keyLits(c.lower))
	}
	if upper != nil {
		where += fmt.Sprintf(" AND (%s) <= (%s)", prefixed("t", c.table.PK), c.keyLits(upper))
	}
	return fmt.Sprintf(`SELECT %s FROM %s t WHERE %s ORDER BY %s LIMIT 1`,
		strings.Join(cols, ", "), c.table.Ident(), where, strings.Join(order, ", "))
}

// readKey runs a one-row key query; nil if it found no row.
func readKey(ctx context.Context, conn *pgconn.PgConn, sql string) ([]string, error) {
	res := conn.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, res.Err
	}
	if len(res.Rows) == 0 {
		return nil, nil
	}
	key := make([]string, len(res.Rows[0]))
	for i, v := range res.Rows[0] {
		key[i] = string(v)
	}
	return key, nil
}

// keyLits is a key (text form) as typed literals of the primary key columns.
func (c *copier) keyLits(key []string) string {
	lits := make([]string, len(key))
	for i, v := range key {
		lits[i] = pq.QuoteLiteral(v) + "::" + c.table.colType(c.table.PK[i])
	}
	return strings.Join(lits, ", ")
}

// selectSQL is the source query of one chunk after lastKey.
func (c *copier) selectSQL(lastKey []string) string {
	where := fmt.Sprintf("%s = %s", pq.QuoteIdentifier(c.keyColumn), pq.QuoteLiteral(c.tenant))
	keyLits := c.keyLits
	if lastKey == nil {
		lastKey = c.lower
	}
	if lastKey != nil {
		where += fmt.Sprintf(" AND (%s) > (%s)", quoteIdents(c.table.PK), keyLits(lastKey))
	}
	switch {
	case c.bounded && c.upper == nil:
		where += " AND false"
	case c.bounded:
		where += fmt.Sprintf(" AND (%s) <= (%s)", quoteIdents(c.table.PK), keyLits(c.upper))
	}
	cols := make([]string, len(c.table.Columns))
	for i, col := range c.table.Columns {
		cols[i] = pq.QuoteIdentifier(col.Name)
	}
	return fmt.Sprintf(`SELECT %s FROM %s WHERE %s ORDER BY %s LIMIT %d`,
		strings.Join(cols, ", "), c.table.Ident(), where, quoteIdents(c.table.PK), c.chunkRows)
}

// copyChunk moves the next chunk after lastKey.
func (c *copier) copyChunk(ctx context.Context, lastKey []string) (chunkResult, error) {
	pr, pw := io.Pipe()
	tail := &tailWriter{w: bufio.NewWriterSize(pw, 256<<10)}
	srcErr := make(chan error, 1)
	go func() {
		_, err := c.src.CopyTo(ctx, tail, fmt.Sprintf("COPY (%s) TO STDOUT", c.selectSQL(lastKey)))
		if err == nil {
			err = tail.w.Flush()
		}
		pw.CloseWithError(err)
		srcErr <- err
	}()
	cols := make([]string, len(c.table.Columns))
	for i, col := range c.table.Columns {
		cols[i] = pq.QuoteIdentifier(col.Name)
	}
	tag, err := c.dst.CopyFrom(ctx, pr, fmt.Sprintf("COPY %s (%s) FROM STDIN", c.table.Ident(), strings.Join(cols, ", ")))
	pr.CloseWithError(err)
	if serr := <-srcErr; serr != nil && !errors.Is(serr, io.ErrClosedPipe) {
		return chunkResult{}, fmt.Errorf("read %s from source: %w", c.table.Key(), serr)
	}
	if err != nil {
		return chunkResult{}, fmt.Errorf("write %s to target: %w", c.table.Key(), err)
	}
	res := chunkResult{rows: tag.RowsAffected(), bytes: tail.n}
	if res.rows > 0 {
		key, err := c.keyOf(tail.last)
		if err != nil {
			return chunkResult{}, err
		}
		res.lastKey = key
	}
	return res, nil
}

// keyOf extracts the primary key (text form) from one COPY text line.
func (c *copier) keyOf(line []byte) ([]string, error) {
	fields := strings.Split(strings.TrimSuffix(string(line), "\n"), "\t")
	if len(fields) != len(c.table.Columns) {
		return nil, fmt.Errorf("copy %s: last row has %d fields, want %d", c.table.Key(), len(fields), len(c.table.Columns))
	}
	key := make([]string, len(c.table.PK))
	for i, k := range c.table.PK {
		idx := -1
		for j, col := range c.table.Columns {
			if col.Name == k {
				idx = j
			}
		}
		if idx < 0 {
			return nil, fmt.Errorf("copy %s: key column %s not copied", c.table.Key(), k)
		}
		v, err := unescapeCopyText(fields[idx])
		if err != nil {
			return nil, fmt.Errorf("copy %s: key column %s: %w", c.table.Key(), k, err)
		}
		key[i] = v
	}
	return key, nil
}

// unescapeCopyText decodes one field of PostgreSQL's COPY text format.
func unescapeCopyText(s string) (string, error) {
	if s == `\N` {
		return "", errors.New("NULL in a primary key")
	}
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch != '\\' || i+1 == len(s) {
			b.WriteByte(ch)
			continue
		}
		i++
		switch s[i] {
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'v':
			b.WriteByte('\v')
		case 'x':
			v, n := 0, 0
			for n < 2 && i+1 < len(s) && isHex(s[i+1]) {
				i++
				v = v*16 + hexVal(s[i])
				n++
			}
			b.WriteByte(byte(v))
		default:
			if s[i] >= '0' && s[i] <= '7' {
				v, n := int(s[i]-'0'), 1
				for n < 3 && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '7' {
					i++
					v = v*8 + int(s[i]-'0')
					n++
				}
				b.WriteByte(byte(v))
				continue
			}
			b.WriteByte(s[i])
		}
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	default:
		return int(c-'A') + 10
	}
}

// tailWriter counts bytes and keeps the last row written (pgconn writes
// one COPY row per Write call).
type tailWriter struct {
	w    *bufio.Writer
	last []byte
	n    int64
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.last = append(t.last[:0], p...)
	t.n += int64(len(p))
	return t.w.Write(p)
}

// throttle paces chunks to at most rowsPerSec (0: unlimited) and backs off
// when the source slows down under load: if a chunk took more than three
// times the fastest one's per-row time, it waits as long again.
type throttle struct {
	rowsPerSec float64
	best       time.Duration // fastest per-row time seen
}

func (t *throttle) wait(ctx context.Context, rows int64, took time.Duration) error {
	var d time.Duration
	if t.rowsPerSec > 0 && rows > 0 {
		want := time.Duration(float64(rows) / t.rowsPerSec * float64(time.Second))
		if want > took {
			d = want - took
		}
	}
	if rows > 100 {
		per := took / time.Duration(rows)
		if t.best == 0 || per < t.best {
			t.best = per
		}
		if per > 3*t.best {
			d += took
		}
	}
	if d <= 0 {
		return nil
	}
	return retry.Sleep(ctx, min(d, 5*time.Second))
}
