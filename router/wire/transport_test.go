package wire

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer is an httptest server that counts the connections it
// accepted.
func countingServer(t *testing.T, h http.Handler) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func testTransport() *Transport {
	return NewTransport(time.Second, 2*time.Second)
}

func mustGet(t *testing.T, tr http.RoundTripper, url string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s body: %v", url, err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: status %d", url, resp.StatusCode)
	}
	return string(b)
}

func TestRouterTransportReusesConnections(t *testing.T) {
	srv, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	tr := testTransport()
	for i := 0; i < 20; i++ {
		if got := mustGet(t, tr, fmt.Sprintf("%s/%d", srv.URL, i)); got != fmt.Sprintf("hello /%d", i) {
			t.Fatalf("body %q", got)
		}
	}
	// Chunked responses and bodiless ones (HEAD, 204) keep the connection too.
	for _, method := range []string{"HEAD", "GET"} {
		req, _ := http.NewRequest(method, srv.URL+"/x", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for sequential requests, want 1", n)
	}
	// Concurrent requests each take their own connection, then share them.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				mustGet(t, tr, srv.URL+"/c")
			}
		}()
	}
	wg.Wait()
	if n := conns.Load(); n > 9 {
		t.Fatalf("%d connections for 8 concurrent clients", n)
	}
	tr.CloseIdleConnections()
}

func TestRouterTransportBodyNotReadToEndClosesConnection(t *testing.T) {
	srv, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(bytes.Repeat([]byte("x"), 100<<10))
	}))
	tr := testTransport()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	_, _ = io.ReadFull(resp.Body, buf)
	resp.Body.Close()
	if _, err := resp.Body.Read(buf); err == nil {
		t.Fatal("read after close succeeded")
	}
	if got := mustGet(t, tr, srv.URL); len(got) != 100<<10 {
		t.Fatalf("body %d bytes", len(got))
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (the half-read one is not reused)", n)
	}
}

func TestRouterTransportConnectionClosedByServer(t *testing.T) {
	var closeNext atomic.Bool
	srv, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if closeNext.Swap(false) {
			w.Header().Set("Connection", "close")
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.Method, body)
	}))
	tr := testTransport()
	mustGet(t, tr, srv.URL)

	// The server closes its idle connections (a restart, its idle
	// timeout): the next requests get a fresh one. A GET right after may
	// skip the liveness check and be sent again on a fresh connection.
	srv.CloseClientConnections()
	time.Sleep(50 * time.Millisecond)
	mustGet(t, tr, srv.URL)
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
	// A POST (not replayable) is never sent on a connection the server
	// closed: the liveness check drops it first.
	srv.CloseClientConnections()
	time.Sleep(50 * time.Millisecond)
	req, _ := http.NewRequest("POST", srv.URL, strings.NewReader("payload"))
	req.GetBody = nil
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("POST after the server closed the idle connection: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "POST payload" {
		t.Fatalf("body %q", b)
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}

	// Connection: close from the server: not reused.
	closeNext.Store(true)
	mustGet(t, tr, srv.URL)
	mustGet(t, tr, srv.URL)
	if n := conns.Load(); n != 4 {
		t.Fatalf("%d connections, want 4 after Connection: close", n)
	}
}

// rawServer answers each connection with fn.
func rawServer(t *testing.T, fn func(conn net.Conn, n int)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go fn(c, i)
		}
	}()
	return ln.Addr().String()
}

// A reused connection that the backend drops after reading the request
// (the keep-alive race): a GET is sent again on a fresh connection, a POST
// is not (the backend may have acted on it).
func TestRouterTransportRetriesReplayableOnStaleConnection(t *testing.T) {
	addr := rawServer(t, func(c net.Conn, n int) {
		defer c.Close()
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if n == 0 && i == 1 {
				return // drop the first connection's second request
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr := testTransport()
	url := "http://" + addr + "/"
	mustGet(t, tr, url)
	if got := mustGet(t, tr, url); got != "ok" {
		t.Fatalf("retried GET body %q", got)
	}

	// Same again for a POST: connection 1 is idle now; make it drop the
	// POST by using a fresh server whose first connection behaves the same.
	addr2 := rawServer(t, func(c net.Conn, n int) {
		defer c.Close()
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if n == 0 && i == 1 {
				return
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	url2 := "http://" + addr2 + "/"
	mustGet(t, tr, url2)
	req, _ := http.NewRequest("POST", url2, strings.NewReader("once"))
	req.GetBody = nil
	if resp, err := tr.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Fatal("POST was replayed on a fresh connection")
	}
}

func TestRouterTransportChunkedUpload(t *testing.T) {
	srv, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" && (len(r.TransferEncoding) == 0 || r.TransferEncoding[0] != "chunked") {
			http.Error(w, "want chunked", 400)
			return
		}
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %s %s", n, hex.EncodeToString(h.Sum(nil)), r.Trailer.Get("X-Sum"))
	}))
	tr := testTransport()
	data := bytes.Repeat([]byte("0123456789abcdef"), 300_000) // 4.8 MB
	sum := sha256.Sum256(data)
	pr, pw := io.Pipe()
	go func() {
		for off := 0; off < len(data); off += 70_000 {
			_, _ = pw.Write(data[off:min(off+70_000, len(data))])
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", srv.URL, pr)
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Sum": nil}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf("%d %s ", len(data), hex.EncodeToString(sum[:]))
	if resp.StatusCode != 200 || string(b) != want {
		t.Fatalf("status %d body %q want %q", resp.StatusCode, b, want)
	}
	// And the connection is reused afterwards.
	mustGet(t, tr, srv.URL+"/again")
}

// A request body that fails to read (http.MaxBytesReader) is reported as
// that error, so the proxy answers 413.
func TestRouterTransportBodyReadErrorSurfaces(t *testing.T) {
	srv, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	tr := testTransport()
	pr, pw := io.Pipe()
	go func() {
		chunk := make([]byte, 64<<10)
		for i := 0; i < 40; i++ {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", srv.URL, http.MaxBytesReader(httptest.NewRecorder(), pr, 1<<20))
	req.ContentLength = -1
	_, err := tr.RoundTrip(req)
	var mbe *http.MaxBytesError
	if !errors.As(err, &mbe) {
		t.Fatalf("error %T %v, want *http.MaxBytesError", err, err)
	}
}

func TestRouterTransportUpgrade(t *testing.T) {
	addr := rawServer(t, func(c net.Conn, _ int) {
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Header.Get("Upgrade") != "echo" {
			return
		}
		// The first bytes of the new protocol arrive with the head.
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhi\n")
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprint(c, strings.ToUpper(line))
		}
	})
	tr := testTransport()
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("101 body %T is not an io.ReadWriteCloser", resp.Body)
	}
	defer rwc.Close()
	br := bufio.NewReader(rwc)
	if line, err := br.ReadString('\n'); err != nil || line != "hi\n" {
		t.Fatalf("first line %q %v", line, err)
	}
	for _, msg := range []string{"hello\n", "two-way\n"} {
		if _, err := io.WriteString(rwc, msg); err != nil {
			t.Fatal(err)
		}
		if line, err := br.ReadString('\n'); err != nil || line != strings.ToUpper(msg) {
			t.Fatalf("echo %q %v", line, err)
		}
	}
}

func TestRouterTransportHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	srv, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-time.After(5 * time.Second):
			}
		}
		fmt.Fprint(w, "late")
	}))
	defer close(release)
	tr := NewTransport(time.Second, 200*time.Millisecond)
	start := time.Now()
	req, _ := http.NewRequest("GET", srv.URL+"/slow", nil)
	_, err := tr.RoundTrip(req)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("error %T %v, want a timeout net.Error", err, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("timed out after %s", took)
	}
	// A slow body after a prompt head is not cut off by the header timeout.
	mustGet(t, tr, srv.URL+"/fast")
}

func TestRouterTransportStreamsBodyBeyondHeaderTimeout(t *testing.T) {
	srv, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "event %d\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(150 * time.Millisecond)
		}
	}))
	tr := NewTransport(time.Second, 100*time.Millisecond)
	req, _ := http.NewRequest("GET", srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != "event 0\nevent 1\nevent 2\n" {
		t.Fatalf("body %q %v", b, err)
	}
}

func TestRouterTransportContextCancel(t *testing.T) {
	srv, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	tr := testTransport()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := tr.RoundTrip(req)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("cancel took %s", took)
	}
}

func TestRouterTransportDialErrorIsConnectError(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	tr := testTransport()
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	_, err := tr.RoundTrip(req)
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" || !IsConnectError(err) {
		t.Fatalf("error %T %v, want a dial *net.OpError", err, err)
	}
}

func TestRouterTransportExpectContinue(t *testing.T) {
	srv, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/reject" {
			w.WriteHeader(http.StatusExpectationFailed)
			return
		}
		b, _ := io.ReadAll(r.Body) // Go's server sends 100 Continue here
		fmt.Fprintf(w, "got %s", b)
	}))
	tr := testTransport()
	var got100 atomic.Int32
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
		if code == 100 {
			got100.Add(1)
		}
		return nil
	}}
	ctx := httptrace.WithClientTrace(context.Background(), trace)
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/ok", strings.NewReader("body"))
	req.Header.Set("Expect", "100-continue")
	start := time.Now()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "got body" || got100.Load() != 1 {
		t.Fatalf("body %q, 100s %d", b, got100.Load())
	}
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Fatalf("waited %s: 100 Continue not seen", took)
	}
	// A final answer instead of 100 Continue: the body is not sent.
	var read atomic.Bool
	body := readerFunc(func(p []byte) (int, error) { read.Store(true); return 0, io.EOF })
	req, _ = http.NewRequest("POST", srv.URL+"/reject", io.NopCloser(body))
	req.ContentLength = -1
	req.Header.Set("Expect", "100-continue")
	resp, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusExpectationFailed || read.Load() {
		t.Fatalf("status %d, body read %v", resp.StatusCode, read.Load())
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestRouterTransportForwards1xx(t *testing.T) {
	srv, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		fmt.Fprint(w, "final")
	}))
	tr := testTransport()
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprintf("%d %s", code, h.Get("Link")))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "final" || len(hints) != 1 || hints[0] != "103 </style.css>; rel=preload" {
		t.Fatalf("body %q hints %q", b, hints)
	}
}

func TestRouterTransportRefusesInvalidHeaders(t *testing.T) {
	tr := testTransport()
	for _, h := range []http.Header{
		{"X-Bad": {"a\r\nInjected: 1"}},
		{"Bad Name": {"x"}},
	} {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:1/", nil)
		req.Header = h
		if _, err := tr.RoundTrip(req); err == nil || IsConnectError(err) {
			t.Fatalf("header %v: error %v, want a validation error", h, err)
		}
	}
}

// writeHead writes what http.Request.Write would, as the server parses it.
func TestRouterWriteHeadMatchesRequestWrite(t *testing.T) {
	cases := []func() *http.Request{
		func() *http.Request {
			r, _ := http.NewRequest("GET", "http://backend:8080/a/b?q=1&r=%20", nil)
			r.Host = "tenant.example.com"
			r.Header.Set("Accept", "application/json")
			r.Header.Add("X-Multi", "one")
			r.Header.Add("X-Multi", " two ")
			r.Header["User-Agent"] = []string{""}
			return r
		},
		func() *http.Request {
			r, _ := http.NewRequest("DELETE", "http://backend/x", nil)
			r.Header.Set("User-Agent", "curl/8")
			return r
		},
		func() *http.Request {
			r, _ := http.NewRequest("POST", "http://backend/x", nil)
			r.Close = true
			return r
		},
		func() *http.Request {
			r, _ := http.NewRequest("HEAD", "http://backend/%2Fenc", nil)
			return r
		},
	}
	for i, mk := range cases {
		var a, b bytes.Buffer
		r1 := mk()
		if !canWriteHead(r1) {
			t.Fatalf("case %d: canWriteHead false", i)
		}
		bw := bufio.NewWriter(&a)
		if err := writeHead(bw, r1); err != nil {
			t.Fatal(err)
		}
		bw.Flush()
		if err := mk().Write(&b); err != nil {
			t.Fatal(err)
		}
		s1, s2 := a.String(), b.String()
		p1, err1 := http.ReadRequest(bufio.NewReader(&a))
		p2, err2 := http.ReadRequest(bufio.NewReader(&b))
		if err1 != nil || err2 != nil {
			t.Fatalf("case %d: %v %v", i, err1, err2)
		}
		if p1.Method != p2.Method || p1.RequestURI != p2.RequestURI || p1.Host != p2.Host || p1.Close != p2.Close ||
			p1.ContentLength != p2.ContentLength || fmt.Sprint(p1.Header) != fmt.Sprint(p2.Header) {
			t.Fatalf("case %d differs:\nwriteHead:     %q\nRequest.Write: %q", i, s1, s2)
		}
	}
}
