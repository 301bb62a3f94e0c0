package router

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestAccessLine(t *testing.T) {
	g := newRequestIDs()
	end := time.Date(2026, 12, 2, 6, 0, 1, 500_000_000, time.UTC)
	cases := []struct {
		name string
		c    completion
		want map[string]any
	}{
		{
			name: "forwarded",
			c: completion{start: end.Add(-1500 * time.Microsecond), tenant: "acme", resolved: true, tier: "shared", target: "pool-1",
				method: "GET", path: "/orders/1", status: 200, bytesIn: 3, bytesOut: 42, upstream: time.Millisecond,
				instance: "127.0.0.1:9000", id: requestID{n: 0x2a}},
			want: map[string]any{"time": "2026-12-02T06:00:01.5Z", "msg": "access", "tenant": "acme", "tier": "shared", "target": "pool-1",
				"method": "GET", "path": "/orders/1", "status": 200.0, "duration_ms": 1.5, "bytes_in": 3.0, "bytes_out": 42.0,
				"upstream": "127.0.0.1:9000", "upstream_ms": 1.0, "request_id": string(g.prefix[:]) + "000000000000002a"},
		},
		{
			name: "odd path and a trusted id",
			c:    completion{start: end, method: "GET", path: "/a\"b\\c\x01\xff/é", status: 404, id: requestID{in: "abc-123"}},
			want: map[string]any{"path": "/a\"b\\c\x01\ufffd/é", "status": 404.0, "tenant": "", "request_id": "abc-123"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			line := appendAccessLine(nil, &tc.c, end, g)
			if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
				t.Fatalf("not one line: %q", line)
			}
			var got map[string]any
			if err := json.Unmarshal(line, &got); err != nil {
				t.Fatalf("not JSON: %v: %s", err, line)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %#v, want %#v (line %s)", k, got[k], v, line)
				}
			}
		})
	}
}

func TestRequestIDRules(t *testing.T) {
	trusting := observer{ids: newRequestIDs(), trust: true}
	cases := []struct {
		name   string
		o      observer
		header http.Header
		keep   string // the client's id kept, or "" for ours
	}{
		{"not trusted: replaced", observer{ids: newRequestIDs()}, http.Header{"X-Request-Id": {"mine"}}, ""},
		{"trusted: kept", trusting, http.Header{"X-Request-Id": {"mine-1"}}, "mine-1"},
		{"trusted but two values", trusting, http.Header{"X-Request-Id": {"a", "b"}}, ""},
		{"trusted but too long", trusting, http.Header{"X-Request-Id": {strings.Repeat("a", 129)}}, ""},
		{"trusted but a space", trusting, http.Header{"X-Request-Id": {"a b"}}, ""},
		{"underscore spelling dropped", observer{ids: newRequestIDs()}, http.Header{"X_request_id": {"x"}}, ""},
		{"none sent", trusting, http.Header{}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := completion{}
			tc.o.begin(&c, "GET", "/")
			h := tc.header.Clone()
			tc.o.setRequestIDHeader(h, &c)
			got := h[HeaderRequestID]
			if len(got) != 1 {
				t.Fatalf("X-Request-Id values %v, want one", got)
			}
			for k := range h {
				if isRequestIDField(k) && k != HeaderRequestID {
					t.Fatalf("client spelling %q left in", k)
				}
			}
			if tc.keep != "" {
				if got[0] != tc.keep || c.id.in != tc.keep {
					t.Fatalf("id %q (record %q), want the client's %q", got[0], c.id.in, tc.keep)
				}
				return
			}
			want := string(c.id.appendTo(nil, tc.o.ids))
			if got[0] != want || len(want) != 32 {
				t.Fatalf("id %q, want the generated %q (32 hex digits)", got[0], want)
			}
		})
	}
}

// blockingWriter blocks every write until released, and says when the
// first one is waiting.
type blockingWriter struct {
	entered chan struct{} // closed by the first write
	once    sync.Once
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// A writer that falls behind costs lines, counted, never a wait: with the
// writer stuck on the first line, the queue of 4 takes 4 more and every
// other line is dropped.
func TestAccessLogDropsRatherThanBlocks(t *testing.T) {
	w := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	l := newAccessLog(w, 1, 4)
	c := completion{method: "GET", path: "/", status: 200}
	l.write(&c, time.Now(), nil)
	select {
	case <-w.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the access log never wrote its first line")
	}
	start := time.Now()
	for i := 0; i < 100; i++ {
		l.write(&c, time.Now(), nil)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("100 writes to a stuck log took %v", d)
	}
	if dropped := counterValue(l.dropped); dropped != 96 {
		t.Fatalf("dropped %v lines of 100 with a queue of 4 and a stuck writer, want 96", dropped)
	}
	close(w.release)
	l.Close()
	if lines := strings.Count(w.buf.String(), "\n"); lines != 5 {
		t.Fatalf("%d lines written, want the stuck one and the 4 queued", lines)
	}
}

func TestAccessLogSampling(t *testing.T) {
	for _, rate := range []float64{1, 0.25} {
		l := newAccessLog(io.Discard, rate, 16)
		n := 0
		for i := 0; i < 100000; i++ {
			if l.sampled() {
				n++
			}
		}
		l.Close()
		if got := float64(n) / 100000; got < rate-0.01 || got > rate+0.01 {
			t.Fatalf("rate %v: sampled %v", rate, got)
		}
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

func BenchmarkAccessLine(b *testing.B) {
	g := newRequestIDs()
	c := completion{start: time.Now(), tenant: "acme", tier: "shared", target: "pool-1", method: "GET", path: "/t/acme/orders/17",
		status: 200, bytesOut: 512, upstream: time.Millisecond, instance: "127.0.0.1:9000", id: requestID{n: 42}}
	buf := make([]byte, 0, 512)
	end := time.Now()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = appendAccessLine(buf[:0], &c, end, g)
	}
}
