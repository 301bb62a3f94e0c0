package harness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoServer answers every line with the same line and records what it
// received.
type echoServer struct {
	ln   net.Listener
	mu   sync.Mutex
	seen []string
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go e.serve(c)
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return e
}

func (e *echoServer) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		e.mu.Lock()
		e.seen = append(e.seen, strings.TrimSpace(line))
		e.mu.Unlock()
		if _, err := c.Write([]byte(line)); err != nil {
			return
		}
	}
}

func (e *echoServer) received(line string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.seen {
		if s == line {
			return true
		}
	}
	return false
}

func startProxyT(t *testing.T, target string) *FaultProxy {
	t.Helper()
	p, err := StartFaultProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// roundTrip sends line on c and reads the echo within limit.
func roundTrip(c net.Conn, line string, limit time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(limit))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(got), err
}

func dialT(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// refused reports whether a new connection through addr fails at once
// (reset at dial or at the first exchange) rather than answering or hanging.
func refused(addr, line string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil
	}
	defer c.Close()
	got, err := roundTrip(c, line, time.Second)
	switch {
	case err == nil:
		return fmt.Errorf("answered %q", got)
	case isTimeout(err):
		return fmt.Errorf("hung: %w", err)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestFaultProxyForwardsAndCuts(t *testing.T) {
	e := startEcho(t)
	p := startProxyT(t, e.ln.Addr().String())
	c := dialT(t, p.Addr())
	if got, err := roundTrip(c, "hello", time.Second); err != nil || got != "hello" {
		t.Fatalf("through the proxy: %q %v", got, err)
	}
	p.Cut()
	if _, err := roundTrip(c, "after-cut", time.Second); err == nil || isTimeout(err) {
		t.Fatalf("open connection after Cut: want a closed connection, got %v", err)
	}
	if err := refused(p.Addr(), "new-after-cut"); err != nil {
		t.Fatalf("new connection after Cut: want a reset: %v", err)
	}
	if e.received("after-cut") || e.received("new-after-cut") {
		t.Fatal("bytes sent after Cut reached the target")
	}
	p.Heal()
	c3 := dialT(t, p.Addr())
	if got, err := roundTrip(c3, "healed", time.Second); err != nil || got != "healed" {
		t.Fatalf("after Heal: %q %v", got, err)
	}
}

func TestFaultProxyBlackhole(t *testing.T) {
	e := startEcho(t)
	p := startProxyT(t, e.ln.Addr().String())
	open := dialT(t, p.Addr())
	if _, err := roundTrip(open, "warm", time.Second); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	for name, c := range map[string]net.Conn{"open": open, "new": dialT(t, p.Addr())} {
		if _, err := roundTrip(c, "into-the-void-"+name, 300*time.Millisecond); !isTimeout(err) {
			t.Fatalf("%s connection in a blackhole: want a timeout, got %v", name, err)
		}
	}
	if e.received("into-the-void-open") || e.received("into-the-void-new") {
		t.Fatal("a blackhole forwarded bytes")
	}
	p.Heal()
	// The corrupted connection is closed; a new one works.
	if _, err := roundTrip(open, "x", time.Second); err == nil || isTimeout(err) {
		t.Fatalf("a connection whose bytes were dropped survived Heal: %v", err)
	}
	if got, err := roundTrip(dialT(t, p.Addr()), "back", time.Second); err != nil || got != "back" {
		t.Fatalf("after Heal: %q %v", got, err)
	}
}

func TestFaultProxyDelay(t *testing.T) {
	e := startEcho(t)
	p := startProxyT(t, e.ln.Addr().String())
	const d = 150 * time.Millisecond
	p.Delay(d)
	c := dialT(t, p.Addr())
	start := time.Now()
	if got, err := roundTrip(c, "slow", 3*time.Second); err != nil || got != "slow" {
		t.Fatalf("delayed: %q %v", got, err)
	}
	if took := time.Since(start); took < 2*d {
		t.Fatalf("round trip took %s, want at least %s (delay each way)", took, 2*d)
	}
	p.Heal()
	start = time.Now()
	if _, err := roundTrip(c, "fast", time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= d {
		t.Fatalf("after Heal the round trip still took %s", took)
	}
}

// CutOn aims the cut at one request: before it reaches the target, or
// after (the target acts on it, the answer is lost).
func TestFaultProxyCutOn(t *testing.T) {
	for _, tc := range []struct {
		name         string
		afterForward bool
	}{{"before the target sees it", false}, {"after the target saw it", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEcho(t)
			p := startProxyT(t, e.ln.Addr().String())
			fired := p.CutOn(func(b []byte) bool { return bytes.Contains(b, []byte("FLIP")) }, tc.afterForward)
			c := dialT(t, p.Addr())
			if got, err := roundTrip(c, "ordinary", time.Second); err != nil || got != "ordinary" {
				t.Fatalf("before the trigger: %q %v", got, err)
			}
			if _, err := roundTrip(c, "FLIP", 2*time.Second); err == nil || isTimeout(err) {
				t.Fatalf("the triggering request got an answer or hung: %v", err)
			}
			select {
			case <-fired:
			case <-time.After(2 * time.Second):
				t.Fatal("the trigger never fired")
			}
			if e.received("FLIP") != tc.afterForward {
				t.Fatalf("target saw the request: %v, want %v", e.received("FLIP"), tc.afterForward)
			}
			if err := refused(p.Addr(), "next"); err != nil {
				t.Fatalf("after the trigger the proxy is not cut: %v", err)
			}
			p.Heal()
			if got, err := roundTrip(dialT(t, p.Addr()), "again", time.Second); err != nil || got != "again" {
				t.Fatalf("after Heal: %q %v", got, err)
			}
		})
	}
}

// Close ends every connection and is idempotent.
func TestFaultProxyClose(t *testing.T) {
	e := startEcho(t)
	p, err := StartFaultProxy(e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := dialT(t, p.Addr())
	if _, err := roundTrip(c, "x", time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && (err == nil || isTimeout(err)) {
		t.Fatalf("connection after Close: %v", err)
	}
}
