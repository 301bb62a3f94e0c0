package integration

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router"
)

// special routes served by a backend when X-Test-Route is set.
func specialRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
		w.WriteHeader(200)
	})
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(200 * time.Millisecond)
		}
	})
	mux.HandleFunc("/sha", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("x"), 1<<20)
		for i := 0; i < 20; i++ {
			_, _ = w.Write(chunk)
		}
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Served-By: ws\r\n\r\n")
		brw.Flush()
		// Echo lines back upper-cased: enough to prove a raw two-way stream.
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString(strings.ToUpper(line))
			brw.Flush()
		}
	})
	return mux
}

func httpStack(t *testing.T, edit func(*router.Config)) (*runningRouter, *http.Client) {
	s := newStack(t)
	startBackend(t, s.consul.Client(), "app-shared", specialRoutes())
	s.tenant("acme", "free", catalog.TierShared, "pool-1")
	s.tenant("calm", "free", catalog.TierShared, "pool-1")
	r := s.router(edit)
	hc := &http.Client{Timeout: 10 * time.Second}
	waitFor(t, 10*time.Second, "served", func() bool {
		resp, _ := get(t, hc, r.url+"/t/acme/", nil)
		return resp.StatusCode == 200
	})
	return r, hc
}

func special(t *testing.T, hc *http.Client, method, url string, body io.Reader, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Test-Route", "1")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp
}

// Slow clients, slow backends and oversized requests are cut off with the
// right status codes, while a well-behaved client keeps getting answers.
func TestRouterCutsOffSlowAndOversized(t *testing.T) {
	r, hc := httpStack(t, func(c *router.Config) {
		c.ReadHeaderTimeout = 500 * time.Millisecond
		c.UpstreamHeaderTimeout = 700 * time.Millisecond
		c.MaxHeaderBytes = 8 << 10
		c.MaxBodyBytes = 1 << 20
	})
	// A well-behaved client runs through everything below.
	calm := startGetLoop(hc, []string{r.url + "/t/calm/"}, 10*time.Millisecond)

	t.Run("slowloris headers are cut off", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /t/acme/ HTTP/1.1\r\nHost: x\r\n")
		start := time.Now()
		for i := 0; i < 20; i++ {
			if _, err := fmt.Fprintf(conn, "X-Slow-%d: 1\r\n", i); err != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 512)
		_, err = conn.Read(buf)
		if err == nil && !strings.Contains(string(buf), "408") {
			t.Fatalf("slow client got an answer: %q", buf)
		}
		if took := time.Since(start); took > 2500*time.Millisecond {
			t.Fatalf("slow client held the connection for %s", took)
		}
	})
	t.Run("oversized headers get 431", func(t *testing.T) {
		resp := special(t, hc, "GET", r.url+"/t/acme/", nil, map[string]string{"X-Big": strings.Repeat("a", 10<<10)})
		defer resp.Body.Close()
		if resp.StatusCode != 431 || !strings.Contains(resp.Header.Get("Content-Type"), "json") {
			t.Fatalf("status %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	})
	t.Run("oversized body with length gets 413", func(t *testing.T) {
		resp := special(t, hc, "POST", r.url+"/t/acme/sha", bytes.NewReader(make([]byte, 2<<20)), nil)
		defer resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("oversized chunked body gets 413", func(t *testing.T) {
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
		resp := special(t, hc, "POST", r.url+"/t/acme/sha", pr, nil)
		defer resp.Body.Close()
		if resp.StatusCode != 413 {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	})
	t.Run("slow backend gets 504", func(t *testing.T) {
		start := time.Now()
		resp := special(t, hc, "GET", r.url+"/t/acme/slow", nil, nil)
		defer resp.Body.Close()
		if resp.StatusCode != 504 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("504 after %s", took)
		}
	})
	if total, failed := calm.halt(); failed != 0 {
		t.Fatalf("well-behaved client: %d of %d requests failed", failed, total)
	}
}

// Streams pass through: server-sent events arrive as they are sent, chunked
// uploads and large bodies arrive whole, WebSocket upgrades become a raw
// two-way stream.
func TestRouterStreams(t *testing.T) {
	r, hc := httpStack(t, nil)
	t.Run("server-sent events are not buffered", func(t *testing.T) {
		start := time.Now()
		resp := special(t, hc, "GET", r.url+"/t/acme/sse", nil, nil)
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		line, err := br.ReadString('\n')
		if err != nil || line != "data: event 0\n" {
			t.Fatalf("first event %q %v", line, err)
		}
		if took := time.Since(start); took > 300*time.Millisecond {
			t.Fatalf("first event after %s: buffered", took)
		}
		rest, _ := io.ReadAll(br)
		if !strings.Contains(string(rest), "event 2") {
			t.Fatalf("stream incomplete: %q", rest)
		}
	})
	t.Run("chunked upload of 8 MiB arrives whole", func(t *testing.T) {
		data := make([]byte, 8<<20)
		_, _ = rand.Read(data)
		sum := sha256.Sum256(data)
		pr, pw := io.Pipe()
		go func() {
			for off := 0; off < len(data); off += 100_000 {
				end := min(off+100_000, len(data))
				if _, err := pw.Write(data[off:end]); err != nil {
					return
				}
			}
			pw.Close()
		}()
		resp := special(t, hc, "POST", r.url+"/t/acme/sha", pr, nil)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		want := fmt.Sprintf("%d %s", len(data), hex.EncodeToString(sum[:]))
		if resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("status %d body %q want %q", resp.StatusCode, body, want)
		}
	})
	t.Run("20 MiB download", func(t *testing.T) {
		resp := special(t, hc, "GET", r.url+"/t/acme/big", nil, nil)
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil || n != 20<<20 {
			t.Fatalf("read %d bytes: %v", n, err)
		}
	})
	t.Run("websocket upgrade", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "GET /t/acme/ws HTTP/1.1\r\nHost: x\r\nX-Test-Route: 1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 101 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		for _, msg := range []string{"hello\n", "tenant stream\n"} {
			fmt.Fprint(conn, msg)
			got, err := br.ReadString('\n')
			if err != nil || got != strings.ToUpper(msg) {
				t.Fatalf("echo %q %v", got, err)
			}
		}
	})
}

// Shutdown drains: a request in flight when the router is told to stop
// still gets its answer; new connections are refused afterwards.
func TestRouterGracefulShutdown(t *testing.T) {
	r, hc := httpStack(t, nil)
	done := make(chan int, 1)
	go func() {
		resp := special(t, hc, "GET", r.url+"/t/acme/sse", nil, nil)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	time.Sleep(100 * time.Millisecond)
	r.cancel()
	select {
	case st := <-done:
		if st != 200 {
			t.Fatalf("in-flight request got %d", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight request not drained")
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("router run: %v", err)
		}
		r.done <- nil
	case <-time.After(5 * time.Second):
		t.Fatal("router did not stop")
	}
	if _, err := (&http.Client{Timeout: time.Second}).Get(r.url + "/t/acme/"); err == nil {
		t.Fatal("router still accepts requests after shutdown")
	}
}
