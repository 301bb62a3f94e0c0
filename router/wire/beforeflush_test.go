package wire

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// forwardHandler forwards every request to addr, calling before from
// Request.BeforeFlush.
type forwardHandler struct {
	tr     *Transport
	addr   string
	before func()
}

func (h forwardHandler) Open(c *Conn) RequestServer { return forwardRequests{h, c} }

type forwardRequests struct {
	h forwardHandler
	c *Conn
}

func (r forwardRequests) ServeRequest(h *RequestHead) bool {
	head := AppendForwardHead(nil, h, "", func(string) bool { return false })
	head = append(head, "\r\n"...)
	r.c.DiscardHead()
	_, keep, err := r.c.Forward(r.h.tr, r.h.addr, &Request{Head: head, BeforeFlush: r.h.before})
	return err == nil && keep
}

func (r forwardRequests) Refuse(error) {}

// BeforeFlush runs once the response is relayed into the client's buffer
// and before the client can read any of it (the router counts a request
// out of flight there: a client that saw its answer never finds it still
// counted against a concurrency limit).
func TestBeforeFlushRunsBeforeTheClientSeesTheResponse(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("a", 1000)))
	}))
	defer up.Close()
	var received, calls, early atomic.Int32
	cfg := testServerConfig(10 * time.Second)
	cfg.Handler = forwardHandler{tr: NewTransport(time.Second, 5*time.Second), addr: up.Listener.Addr().String(), before: func() {
		calls.Add(1)
		time.Sleep(50 * time.Millisecond) // time for any byte already sent to arrive
		if received.Load() != 0 {
			early.Add(1)
		}
	}}
	s := NewServer(cfg)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 3 {
		if _, err := c.Write([]byte("GET /x HTTP/1.1\r\nHost: t\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		if _, err := br.Peek(1); err != nil {
			t.Fatal(err)
		}
		received.Store(1)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := br.Discard(int(resp.ContentLength))
		received.Store(0)
		if resp.StatusCode != 200 || n != 1000 {
			t.Fatalf("request %d: %d with %d bytes", i, resp.StatusCode, n)
		}
	}
	if calls.Load() != 3 || early.Load() != 0 {
		t.Fatalf("BeforeFlush ran %d times for 3 responses, %d of them after the client had bytes", calls.Load(), early.Load())
	}
}
