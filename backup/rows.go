package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
)

// lineWriter splits a COPY text stream (one row per line: PostgreSQL
// escapes newlines and tabs inside values) into rows, however it is
// chunked, and calls row for each complete one (without its newline).
type lineWriter struct {
	row     func(line []byte) error
	partial []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.partial = append(l.partial, p...)
			break
		}
		line := p[:i]
		if len(l.partial) > 0 {
			l.partial = append(l.partial, line...)
			line = l.partial
		}
		if err := l.row(line); err != nil {
			return 0, err
		}
		l.partial = l.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

// finish reports a trailing row without its newline (a truncated stream).
func (l *lineWriter) finish() error {
	if len(l.partial) > 0 {
		return fmt.Errorf("%w: stream ends inside a row", ErrCorrupt)
	}
	return nil
}

// splitField returns line without its field at index k (and the field).
func splitField(line []byte, k int) (before, field, after []byte, ok bool) {
	start := 0
	for i := 0; i < k; i++ {
		j := bytes.IndexByte(line[start:], '\t')
		if j < 0 {
			return nil, nil, nil, false
		}
		start += j + 1
	}
	end := bytes.IndexByte(line[start:], '\t')
	if end < 0 {
		end = len(line)
	} else {
		end += start
	}
	return line[:start], line[start:end], line[end:], true
}

// rowHasher counts rows and hashes them without the tenant key column, so a
// tenant's rows hash the same whatever tenant id they carry: for every row
// in order, SHA-256 over its COPY text with the key field left out,
// newline-terminated.
type rowHasher struct {
	lineWriter
	keyIndex int
	// expect, if set, is the key every row must carry.
	expect []byte
	h      hash.Hash
	rows   int64
}

func newRowHasher(keyIndex int, expect string) *rowHasher {
	r := &rowHasher{keyIndex: keyIndex, h: sha256.New()}
	if expect != "" {
		r.expect = []byte(expect)
	}
	r.row = r.add
	return r
}

func (r *rowHasher) add(line []byte) error {
	before, key, after, ok := splitField(line, r.keyIndex)
	if !ok {
		return fmt.Errorf("%w: row %d has no field %d", ErrCorrupt, r.rows+1, r.keyIndex+1)
	}
	if r.expect != nil && !bytes.Equal(key, r.expect) {
		return fmt.Errorf("%w: row %d belongs to tenant %q, not %q", ErrCorrupt, r.rows+1, key, r.expect)
	}
	r.h.Write(before)
	r.h.Write(after)
	r.h.Write([]byte{'\n'})
	r.rows++
	return nil
}

// Sum is the hash of the rows so far.
func (r *rowHasher) Sum() string { return hex.EncodeToString(r.h.Sum(nil)) }

// keyRewriter writes rows to w with the tenant key field set to tenant
// (a valid tenant id needs no COPY escaping).
type keyRewriter struct {
	lineWriter
	w        io.Writer
	keyIndex int
	tenant   []byte
	buf      []byte
}

func newKeyRewriter(w io.Writer, keyIndex int, tenant string) *keyRewriter {
	k := &keyRewriter{w: w, keyIndex: keyIndex, tenant: []byte(tenant)}
	k.row = k.rewrite
	return k
}

func (k *keyRewriter) rewrite(line []byte) error {
	before, _, after, ok := splitField(line, k.keyIndex)
	if !ok {
		return fmt.Errorf("%w: row has no field %d", ErrCorrupt, k.keyIndex+1)
	}
	k.buf = append(append(append(append(k.buf[:0], before...), k.tenant...), after...), '\n')
	_, err := k.w.Write(k.buf)
	return err
}

// countingHash counts and hashes the bytes written through it.
type countingHash struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}
