package router

import (
	"bufio"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// accessLog writes one JSON line per request (slog's JSON field style)
// through a bounded queue drained by one goroutine: a request never waits
// for the log. When the queue is full the line is dropped and counted.
type accessLog struct {
	w         io.Writer
	threshold uint64 // a request is logged when a random uint64 is below it
	queue     chan *[]byte
	done      chan struct{}
	closeOnce sync.Once
	lines     prometheus.Counter
	dropped   prometheus.Counter
}

var accessLogBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func newAccessLog(w io.Writer, sample float64, buffer int) *accessLog {
	l := &accessLog{w: w, queue: make(chan *[]byte, buffer), done: make(chan struct{}),
		threshold: math.MaxUint64,
		lines: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_router_access_log_lines_total",
			Help: "Access log lines written.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_router_access_log_dropped_total",
			Help: "Access log lines dropped because the writer fell behind (the request path never waits for it).",
		}),
	}
	if sample < 1 {
		l.threshold = uint64(sample * math.MaxUint64)
	}
	go l.run()
	return l
}

// sampled decides whether this request is logged.
func (l *accessLog) sampled() bool {
	return l.threshold == math.MaxUint64 || rand.Uint64() < l.threshold
}

// write queues the request's line, or drops it if the queue is full.
func (l *accessLog) write(c *completion, end time.Time, ids *requestIDs) {
	bp := accessLogBuffers.Get().(*[]byte)
	*bp = appendAccessLine((*bp)[:0], c, end, ids)
	select {
	case l.queue <- bp:
	default:
		l.dropped.Inc()
		accessLogBuffers.Put(bp)
	}
}

// run writes queued lines, flushing whenever the queue is empty.
func (l *accessLog) run() {
	defer close(l.done)
	bw := bufio.NewWriterSize(l.w, 64<<10)
	for bp := range l.queue {
		_, _ = bw.Write(*bp)
		accessLogBuffers.Put(bp)
		l.lines.Inc()
		if len(l.queue) == 0 {
			_ = bw.Flush()
		}
	}
	_ = bw.Flush()
}

// Close writes what is queued and stops; call it once nothing logs any more.
func (l *accessLog) Close() {
	l.closeOnce.Do(func() { close(l.queue) })
	<-l.done
}

// appendAccessLine renders one request as a JSON line.
func appendAccessLine(b []byte, c *completion, end time.Time, ids *requestIDs) []byte {
	b = append(b, `{"time":"`...)
	b = end.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"INFO","msg":"access","tenant":`...)
	b = appendJSONString(b, c.tenant)
	b = append(b, `,"tier":`...)
	b = appendJSONString(b, c.tier)
	b = append(b, `,"target":`...)
	b = appendJSONString(b, c.target)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, c.method)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, c.path)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(c.status), 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(end.Sub(c.start).Microseconds())/1000, 'f', 3, 64)
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendInt(b, c.bytesIn, 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendInt(b, c.bytesOut, 10)
	b = append(b, `,"upstream":`...)
	b = appendJSONString(b, c.instance)
	b = append(b, `,"upstream_ms":`...)
	b = strconv.AppendFloat(b, float64(c.upstream.Microseconds())/1000, 'f', 3, 64)
	b = append(b, `,"request_id":"`...)
	b = c.id.appendTo(b, ids)
	return append(b, "\"}\n"...)
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
