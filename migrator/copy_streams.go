package migrator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// copyAll copies every table, parents first (a child chunk then finds its
// parents on the target). A table of more than one chunk is split into key
// ranges copied by parallel streams (Options.CopyStreams), each with its
// own connections, committing per chunk and resuming after the target's
// largest key in its range; the ranges are persisted in the move so a
// resumed copy keeps them.
func (r *run) copyAll(ctx context.Context) error {
	if len(r.m.Tables) != len(r.tables) {
		r.m.Tables = make([]TableProgress, len(r.tables))
		for i, t := range r.tables {
			r.m.Tables[i] = TableProgress{Table: t.Key()}
		}
	}
	for i := range r.tables {
		if r.m.Tables[i].Done {
			continue
		}
		if err := r.copyTable(ctx, i); err != nil {
			return err
		}
		p := &r.m.Tables[i]
		p.Done = true
		p.TotalRows = max(p.TotalRows, p.Rows)
		if err := r.save(ctx); err != nil {
			return err
		}
	}
	return r.sample(ctx, true)
}

// copyTable copies table i by its streams, planning them first if the move
// has none for it yet.
func (r *run) copyTable(ctx context.Context, i int) error {
	t, p := r.tables[i], &r.m.Tables[i]
	planner, err := r.newCopier(ctx, t)
	if err != nil {
		return err
	}
	defer planner.close()
	if err := r.src.GetContext(ctx, &p.TotalRows, fmt.Sprintf(`SELECT count(*) FROM %s WHERE %s = $1`, t.Ident(), quoteIdents([]string{r.m.Options.KeyColumn})), r.m.Tenant); err != nil {
		return fmt.Errorf("count %s: %w", t.Key(), err)
	}
	if err := planner.bound(ctx); err != nil {
		return fmt.Errorf("copy bound of %s: %w", t.Key(), err)
	}
	if len(p.Streams) == 0 {
		if p.Streams, err = r.planStreams(ctx, planner, p.TotalRows); err != nil {
			return fmt.Errorf("split %s: %w", t.Key(), err)
		}
		if err := r.save(ctx); err != nil {
			return err
		}
	}
	var have int64
	if err := r.dst.GetContext(ctx, &have, fmt.Sprintf(`SELECT count(*) FROM %s WHERE %s = $1`, t.Ident(), quoteIdents([]string{r.m.Options.KeyColumn})), r.m.Tenant); err != nil {
		return fmt.Errorf("count %s on the target: %w", t.Key(), err)
	}
	p.Rows = have
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(p.Streams))
	var wg sync.WaitGroup
	start := time.Now()
	for j := range p.Streams {
		if p.Streams[j].Done {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[j] = r.copyStream(sctx, i, j, planner.upper, start, have); errs[j] != nil {
				cancel() // one stream failed: stop the others, resume later
			}
		}()
	}
	wg.Wait()
	return firstCause(ctx, errs)
}

// firstCause returns the error that stopped the streams rather than the
// cancellations it caused in the others.
func firstCause(ctx context.Context, errs []error) error {
	var canceled error
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, context.Canceled) && ctx.Err() == nil:
			canceled = err
		default:
			return err
		}
	}
	return canceled
}

// planStreams splits the tenant's rows of a table (up to the copy bound)
// into at most CopyStreams key ranges of at least one chunk each.
func (r *run) planStreams(ctx context.Context, c *copier, total int64) ([]StreamProgress, error) {
	n := int64(min(r.m.Options.CopyStreams, max(1, int(total/int64(r.m.Options.ChunkRows)))))
	streams := []StreamProgress{{}}
	for k := int64(1); k < n; k++ {
		key, err := c.keyAt(ctx, total*k/n-1)
		if err != nil {
			return nil, err
		}
		if key == nil {
			break
		}
		streams[len(streams)-1].UpTo = key
		streams = append(streams, StreamProgress{After: key})
	}
	return streams, nil
}

// newCopier opens a source and a target connection for one stream.
func (r *run) newCopier(ctx context.Context, t Table) (*copier, error) {
	src, err := pgconn.Connect(ctx, r.srcDSN)
	if err != nil {
		return nil, fmt.Errorf("source database: %w", err)
	}
	dst, err := pgconn.Connect(ctx, r.dstDSN)
	if err != nil {
		src.Close(context.Background())
		return nil, fmt.Errorf("target database: %w", err)
	}
	return &copier{src: src, dst: dst, table: t, keyColumn: r.m.Options.KeyColumn, tenant: r.m.Tenant, chunkRows: r.m.Options.ChunkRows}, nil
}

func (c *copier) close() {
	c.src.Close(context.Background())
	c.dst.Close(context.Background())
}

// copyStream copies stream j of table i chunk by chunk. upper is the
// table's copy bound (the last stream's end).
func (r *run) copyStream(ctx context.Context, i, j int, upper []string, start time.Time, rowsAtStart int64) error {
	c, err := r.newCopier(ctx, r.tables[i])
	if err != nil {
		return err
	}
	defer c.close()
	r.mu.Lock()
	sp := r.m.Tables[i].Streams[j]
	r.mu.Unlock()
	c.lower, c.upper, c.bounded = sp.After, sp.UpTo, true
	if c.upper == nil {
		c.upper = upper
	}
	last, err := c.resumeKey(ctx)
	if err != nil {
		return fmt.Errorf("resume point of %s: %w", c.table.Key(), err)
	}
	th := &throttle{rowsPerSec: r.m.Options.RateRows / float64(len(r.m.Tables[i].Streams))}
	for {
		chunkStart := time.Now()
		res, err := r.copyChunk(ctx, c, last)
		if err != nil {
			return err
		}
		if res.rows > 0 {
			last = res.lastKey
		}
		done := res.rows < int64(c.chunkRows)
		if err := r.chunkDone(ctx, i, j, res, last, done, start, rowsAtStart); err != nil || done {
			return err
		}
		if err := th.wait(ctx, res.rows, time.Since(chunkStart)); err != nil {
			return err
		}
	}
}

// chunkDone records a committed chunk in the move (under the run's lock):
// rows, the stream's position, rates; then the hook and a save.
func (r *run) chunkDone(ctx context.Context, i, j int, res chunkResult, last []string, done bool, start time.Time, rowsAtStart int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := &r.m.Tables[i]
	sp := &p.Streams[j]
	p.Rows += res.rows
	p.Bytes += res.bytes
	sp.Rows += res.rows
	sp.Last, sp.Done = last, done
	r.m.Message = "" // a chunk got through: no foreign-key race to report
	if el := time.Since(start).Seconds(); el > 0 {
		p.RowsPerS = float64(p.Rows-rowsAtStart) / el
	}
	if err := r.sample(ctx, false); err != nil {
		return err
	}
	if done {
		return nil
	}
	if err := r.mg.cfg.Hooks.call(r.mg.cfg.Hooks.AfterChunk, r.m); err != nil {
		return err
	}
	return r.saveProgress(ctx)
}

// copyChunk copies one chunk. A chunk read after its parent table was
// copied may reference parent rows written since: those are in the change
// capture, so on a foreign-key violation the changes of the tables already
// copied are applied and the chunk is read again. Writers that keep adding
// parents and children can win that race every time (the re-read chunk has
// newer children still), so from the second retry the chunk is written
// without the target checking foreign keys (session_replication_role =
// replica, as logical replication applies): every row's parent exists in
// the source, so it is on the target or in the change queue, which catch-up
// applies before the full verification compares every row. Where the
// migrator's role may not set that (it needs superuser), it keeps retrying.
func (r *run) copyChunk(ctx context.Context, c *copier, last []string) (res chunkResult, err error) {
	deferred := false // foreign-key checks off on the target connection
	defer func() {
		if !deferred {
			return
		}
		if rerr := c.dst.Exec(ctx, "RESET session_replication_role").Close(); rerr != nil && err == nil {
			err = fmt.Errorf("reset session_replication_role: %w", rerr)
		}
	}()
	for attempt := 0; ; attempt++ {
		if err := r.beforeChunk(c.table.Key()); err != nil {
			return chunkResult{}, err
		}
		res, err = c.copyChunk(ctx, last)
		if err == nil || !isFKViolation(err) || attempt >= 5 || deferred {
			return res, err
		}
		if err := r.applyParents(ctx, c.table.Key(), attempt); err != nil {
			return res, err
		}
		if attempt == 1 {
			if rerr := c.dst.Exec(ctx, "SET session_replication_role = replica").Close(); rerr != nil {
				r.mg.log.Warn("cannot defer foreign-key checks for the copy (needs superuser); retrying as is", "move", r.m.ID, "err", rerr)
			} else {
				deferred = true
			}
		}
	}
}

// beforeChunk calls the BeforeChunk hook under the run's lock.
func (r *run) beforeChunk(table string) error {
	h := r.mg.cfg.Hooks
	if h == nil || h.BeforeChunk == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return h.BeforeChunk(r.m, table)
}

// applyParents, after a chunk of table met rows whose parents are still in
// the change queue, says so in the move and applies the captured changes of
// the tables before it (under the run's lock: one applier).
func (r *run) applyParents(ctx context.Context, table string, attempt int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	idx := 0
	for i, t := range r.tables {
		if t.Key() == table {
			idx = i
		}
	}
	r.m.Message = fmt.Sprintf("a chunk of %s met rows whose parents are still in the change queue: applying the parents' changes captured so far, then retrying (attempt %d)",
		table, attempt+1)
	if err := r.saveProgress(ctx); err != nil {
		return err
	}
	return r.applyDone(ctx, idx)
}
