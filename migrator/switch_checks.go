package migrator

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// switchPrep is what the switch measures before the freeze, so that the
// pause only has to check it, cheaply.
type switchPrep struct {
	// stampSrc and stampDst are the schema stamps taken before the full
	// shape check (see schemaStamp).
	stampSrc, stampDst string
	// seqAt and seqLast are the source's sequences as first read before
	// the freeze: the insert rate the headroom allows for is measured
	// from them.
	seqAt   time.Time
	seqLast []sql.NullInt64
}

// minSeqHeadroom is the least a target sequence is set ahead of the
// source's before the freeze.
const minSeqHeadroom = 1000

// both runs f on the source and, if there is one, the target at the same
// time and returns their answers.
func both[T any](ctx context.Context, src, dst *sqlx.DB, f func(context.Context, *sqlx.DB) (T, error)) (s, d T, err error) {
	var derr error
	var wg sync.WaitGroup
	if dst != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, derr = f(ctx, dst)
		}()
	}
	s, err = f(ctx, src)
	wg.Wait()
	if err != nil {
		return s, d, fmt.Errorf("source: %w", err)
	}
	if derr != nil {
		return s, d, fmt.Errorf("target: %w", derr)
	}
	return s, d, nil
}

func (r *run) schemaStamps(ctx context.Context) (string, string, error) {
	return both(ctx, r.src, r.dst, func(ctx context.Context, db *sqlx.DB) (string, error) {
		return schemaStamp(ctx, db, r.m.Options.KeyColumn)
	})
}

// stampSchema, before the freeze, takes both sides' schema stamps and
// then checks the full shape, in that order: a DDL before the check fails
// it, and one after it changes the stamp that recheckSchema compares
// inside the fence.
func (r *run) stampSchema(ctx context.Context) error {
	var err error
	if r.prep.stampSrc, r.prep.stampDst, err = r.schemaStamps(ctx); err != nil {
		return err
	}
	return r.checkDDL(ctx)
}

// recheckSchema, inside the fence, reads both sides' stamps (one cheap
// query each, at the same time) and compares them with those taken before
// the freeze.
func (r *run) recheckSchema(ctx context.Context) error {
	if r.m.Fingerprint == "" {
		return nil
	}
	if r.prep.stampSrc == "" {
		return r.checkDDL(ctx) // no stamp taken: the whole check
	}
	src, dst, err := r.schemaStamps(ctx)
	if err != nil {
		return err
	}
	const fix = "finish the schema change on both sides, then abort and start the move again"
	if src != r.prep.stampSrc {
		return fmt.Errorf("%w on the source after the check before the freeze: %s", ErrDDL, fix)
	}
	if dst != r.prep.stampDst {
		return fmt.Errorf("%w on the target after the check before the freeze: %s", ErrDDL, fix)
	}
	return nil
}

// sequences are the tenant tables' sequences.
func (r *run) sequences() []string {
	var seqs []string
	for _, t := range r.tables {
		seqs = append(seqs, t.Sequences...)
	}
	return seqs
}

// sourceSequences reads the source's sequences (none: nil).
func (r *run) sourceSequences(ctx context.Context) ([]string, []sql.NullInt64, error) {
	seqs := r.sequences()
	if len(seqs) == 0 {
		return nil, nil, nil
	}
	last, err := readSequences(ctx, r.src, seqs)
	return seqs, last, err
}

// sampleSequences reads the source's sequences: the first of the two
// readings the headroom's insert rate is measured between.
func (r *run) sampleSequences(ctx context.Context) error {
	_, last, err := r.sourceSequences(ctx)
	r.prep.seqAt, r.prep.seqLast = time.Now(), last
	return err
}

// sequencesAhead, before the freeze, sets every target sequence past the
// source's value with headroom: what the source's inserts (of every tenant
// on it), at the rate measured since sampleSequences, take in twice the
// switch budget and a second more, and at least minSeqHeadroom. Inside
// the fence checkSequences then only verifies.
func (r *run) sequencesAhead(ctx context.Context) error {
	seqs, last, err := r.sourceSequences(ctx)
	if err != nil || len(seqs) == 0 {
		return err
	}
	window := (2*r.m.Options.SwitchBudget + time.Second).Seconds()
	dt := time.Since(r.prep.seqAt).Seconds()
	ahead := make([]sql.NullInt64, len(seqs))
	for i := range seqs {
		rate := 0.0
		if len(r.prep.seqLast) == len(seqs) && dt > 0 {
			rate = max(0, float64(last[i].Int64-r.prep.seqLast[i].Int64)/dt)
		}
		headroom := max(minSeqHeadroom, int64(math.Ceil(rate*window)))
		ahead[i] = sql.NullInt64{Int64: last[i].Int64 + headroom, Valid: true}
	}
	return raiseSequences(ctx, r.dst, seqs, ahead)
}

// checkSequences, inside the fence, reads both sides' sequences at the
// same time (one round trip each) and checks that every target sequence is
// at or past the source's. One the source's inserts overtook (more came
// than the headroom allowed for) is set past it now.
func (r *run) checkSequences(ctx context.Context) error {
	seqs := r.sequences()
	if len(seqs) == 0 {
		return nil
	}
	src, dst, err := both(ctx, r.src, r.dst, func(ctx context.Context, db *sqlx.DB) ([]sql.NullInt64, error) {
		return readSequences(ctx, db, seqs)
	})
	if err != nil {
		return err
	}
	var behind []string
	for i, seq := range seqs {
		if src[i].Valid && (!dst[i].Valid || dst[i].Int64 < src[i].Int64) {
			behind = append(behind, fmt.Sprintf("%s (source %d, target %v)", seq, src[i].Int64, dst[i].Int64))
		}
	}
	if len(behind) == 0 {
		return nil
	}
	r.mg.log.Warn("switch: the source's inserts overtook the sequences' headroom; advancing them inside the fence",
		"move", r.m.ID, "sequences", behind)
	return raiseSequences(ctx, r.dst, seqs, src)
}

// readSequences returns every sequence's last value (NULL if never used or
// missing), in one round trip (names as literals: no arguments, so lib/pq
// sends it as one simple query, not a parse and then an execute).
func readSequences(ctx context.Context, db *sqlx.DB, seqs []string) ([]sql.NullInt64, error) {
	cols := make([]string, len(seqs))
	for i, seq := range seqs {
		cols[i] = fmt.Sprintf("pg_sequence_last_value(to_regclass(%s))", pq.QuoteLiteral(seq))
	}
	last := make([]sql.NullInt64, len(seqs))
	dests := make([]any, len(seqs))
	for i := range last {
		dests[i] = &last[i]
	}
	if err := db.QueryRowContext(ctx, "SELECT "+strings.Join(cols, ", ")).Scan(dests...); err != nil {
		return nil, fmt.Errorf("read sequences %v: %w", seqs, err)
	}
	return last, nil
}

// raiseSequences sets every sequence to at least its value in to (never
// lower than it is), in one round trip; a NULL value leaves it as it is.
func raiseSequences(ctx context.Context, db *sqlx.DB, seqs []string, to []sql.NullInt64) error {
	cols, args := make([]string, len(seqs)), make([]any, 0, 2*len(seqs))
	for i, seq := range seqs {
		cols[i] = fmt.Sprintf("setval(to_regclass($%[1]d), GREATEST(pg_sequence_last_value(to_regclass($%[1]d)), $%[2]d::bigint))", 2*i+1, 2*i+2)
		args = append(args, seq, to[i])
	}
	if _, err := db.ExecContext(ctx, "SELECT "+strings.Join(cols, ", "), args...); err != nil {
		return fmt.Errorf("advance sequences %v: %w", seqs, err)
	}
	return nil
}
