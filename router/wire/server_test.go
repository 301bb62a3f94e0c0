package wire

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// Tests of Server.Shutdown and the first head's timeout.

// hookConn lets a test act at the moment the connection loop sets a read
// deadline (to force an interleaving that otherwise needs luck).
type hookConn struct {
	net.Conn
	onSet func(t time.Time)
}

func (c *hookConn) SetReadDeadline(t time.Time) error {
	if c.onSet != nil {
		c.onSet(t)
	}
	return c.Conn.SetReadDeadline(t)
}

type hookListener struct {
	net.Listener
	wrap func(net.Conn) net.Conn
}

func (l *hookListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.wrap(c), nil
}

// testHandler answers every request the fast path takes with a JSON 200
// and refuses with a JSON 400 (the router's answers are the router's).
type testHandler struct{}

func (testHandler) Open(c *Conn) RequestServer { return testRequests{c} }

type testRequests struct{ c *Conn }

func (r testRequests) ServeRequest(h *RequestHead) bool {
	r.c.DiscardHead()
	return r.c.WriteJSON(http.StatusOK, []byte("{}\n"), 0, false)
}

func (r testRequests) Refuse(err error) {
	r.c.WriteJSON(http.StatusBadRequest, []byte(`{"error":"refused"}`+"\n"), 0, true)
}

func testServerConfig(readHeader time.Duration) ServerConfig {
	return ServerConfig{ReadHeaderTimeout: readHeader, IdleTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10,
		Handler: testHandler{}, Fallback: http.NotFoundHandler(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func testFront(t *testing.T) (*Server, ServerConfig) {
	cfg := testServerConfig(10 * time.Second)
	return NewServer(cfg), cfg
}

// Shutdown's wake-up of an idle connection (wakeIfIdle: read deadline =
// now) must not be lost when it lands between serve's closing check and its
// own SetReadDeadline(now + wait) (serve would overwrite it, wait the whole
// idle/header timeout, and Shutdown its ctx). The hook holds serve inside
// that window long enough for Shutdown to run; without it the same ordering
// happens by chance.
func TestFrontShutdownWakesIdleConnection(t *testing.T) {
	s, _ := testFront(t)
	inWindow := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl := &hookListener{Listener: ln, wrap: func(c net.Conn) net.Conn {
		return &hookConn{Conn: c, onSet: func(d time.Time) {
			if time.Until(d) > time.Second { // serve arming its idle/header wait
				once.Do(func() {
					close(inWindow)
					<-release
				})
			}
		}}
	}}
	go func() { _ = s.Serve(hl) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-inWindow // serve: idle = true, closing was false, about to set its deadline

	const grace = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	start := time.Now()
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	// Let Shutdown set closing and wake the (idle) connection.
	for !s.closing.Load() {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(release)

	err = <-shut
	took := time.Since(start)
	t.Logf("Shutdown returned %v after %v", err, took.Round(time.Millisecond))
	if err != nil || took > grace/2 {
		t.Fatalf("an idle connection kept Shutdown waiting %v (err %v): its wake-up was lost", took.Round(time.Millisecond), err)
	}
}

// When the drain times out on both engines, Shutdown closes the connections
// handed off to net/http too: none stays open (with its request running)
// after Shutdown has returned.
func TestFrontShutdownClosesHandedOffConnections(t *testing.T) {
	s, _ := testFront(t)
	started := make(chan struct{})
	unblock := make(chan struct{})
	defer close(unblock)
	s.general.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-unblock:
		case <-r.Context().Done():
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	defer s.general.Close()

	// A fast-path connection busy with a head still arriving (not idle, so
	// Shutdown does not wake it).
	busy, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, _ = io.WriteString(busy, "GET / HTTP/1.1\r\nHost: x\r\n")

	// A connection handed off to net/http (HTTP/1.0), its request running.
	handed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer handed.Close()
	_, _ = io.WriteString(handed, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	<-started
	time.Sleep(50 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want the deadline", err)
	}
	// Shutdown has returned. Is the handed-off connection closed?
	_ = handed.SetReadDeadline(time.Now().Add(time.Second))
	var b [1]byte
	_, rerr := handed.Read(b[:])
	var ne net.Error
	if errors.As(rerr, &ne) && ne.Timeout() {
		t.Fatalf("1s after Shutdown returned, the handed-off connection is still open and its request still running")
	}
	t.Logf("handed-off connection: %v", rerr)
}

// The first request's head gets ReadHeaderTimeout once, counted from the
// accept (as net/http counts it), not re-armed when its first byte arrives.
func TestFrontFirstHeadGetsOneReadHeaderTimeout(t *testing.T) {
	cfg := testServerConfig(time.Second)
	s := NewServer(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	defer s.Shutdown(context.Background())
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	time.Sleep(900 * time.Millisecond)
	_, _ = io.WriteString(c, "G") // just in time; the rest never comes
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [64]byte
	n, err := c.Read(b[:])
	took := time.Since(start)
	t.Logf("after %v: %q %v", took.Round(10*time.Millisecond), b[:n], err)
	if took > cfg.ReadHeaderTimeout*3/2 {
		t.Errorf("the head was allowed %v, ReadHeaderTimeout is %v", took.Round(10*time.Millisecond), cfg.ReadHeaderTimeout)
	}
}
