package devstack

import (
	"bytes"
	"io"
	"strings"
	"sync"
)

// outputMu serialises writes to caller-supplied LogOutput writers, which may
// be shared between several children (a cluster, or PostgresN) and need not be
// safe for concurrent use.
var outputMu sync.Mutex

// sharedWriter forwards to w under outputMu.
type sharedWriter struct{ w io.Writer }

func (s sharedWriter) Write(p []byte) (int, error) {
	outputMu.Lock()
	defer outputMu.Unlock()
	return s.w.Write(p)
}

// childOutput returns the writer a child's stdout and stderr go to: always the
// in-memory tail, plus the caller's writer (if any) with every line prefixed.
func childOutput(tail *tailBuffer, out io.Writer, prefix string) io.Writer {
	if out == nil || out == io.Discard {
		return tail
	}
	return io.MultiWriter(tail, &prefixWriter{w: sharedWriter{out}, prefix: []byte(prefix), atStart: true})
}

// prefixWriter inserts prefix at the start of every line.
type prefixWriter struct {
	mu      sync.Mutex
	w       io.Writer
	prefix  []byte
	atStart bool
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	if len(p.prefix) == 0 {
		return p.w.Write(b)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var buf bytes.Buffer
	for rest := b; len(rest) > 0; {
		if p.atStart {
			buf.Write(p.prefix)
			p.atStart = false
		}
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			buf.Write(rest)
			break
		}
		buf.Write(rest[:i+1])
		rest = rest[i+1:]
		p.atStart = true
	}
	if _, err := p.w.Write(buf.Bytes()); err != nil {
		return 0, err
	}
	return len(b), nil
}

// tailBuffer keeps the last bytes written to it, so errors and failed tests
// can show what a child printed just before things went wrong.
type tailBuffer struct {
	mu    sync.Mutex
	buf   []byte
	total int64 // bytes ever written
}

const (
	tailBytes = 64 << 10 // bytes kept in memory
	tailLines = 40       // lines shown by String
)

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	t.total += int64(len(p))
	if over := len(t.buf) - tailBytes; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// mark returns a position for since.
func (t *tailBuffer) mark() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// since returns what was written after mark, as far as it is still kept.
func (t *tailBuffer) since(mark int64) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := min(t.total-mark, int64(len(t.buf)))
	return string(t.buf[int64(len(t.buf))-n:])
}

// String returns the last tailLines lines written.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimRight(string(t.buf), "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > tailLines {
		lines = lines[len(lines)-tailLines:]
	}
	return strings.Join(lines, "\n")
}

// withTail formats a log tail for appending to an error message.
func withTail(tail *tailBuffer) string {
	s := tail.String()
	if s == "" {
		return " (no output)"
	}
	return "\n--- log tail ---\n" + s + "\n--- end of log tail ---"
}
