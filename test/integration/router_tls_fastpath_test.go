package integration

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router"
)

// connCount is switchyard_router_connections_total for the TLS listener
// and path ("fast" or "net_http"), 0 before the first.
func connCount(e *edgeRouter, path string) float64 {
	v := metricValue(e.runningRouter, "switchyard_router_connections_total", `listener="tls",path="`+path+`"`)
	return max(v, 0)
}

// Over TLS, a connection whose ALPN is http/1.1 is served by the fast path
// (counted as such) and h2 by net/http; on both the backend is told
// X-Forwarded-Proto https, a Host naming another tenant than the SNI is
// 421 and never forwarded (also for a request the fast path hands to
// net/http, which must see the connection's TLS state), and HSTS is on
// every answer, the router's own errors included.
func TestRouterTLSFastPath(t *testing.T) {
	es := newEdgeStack(t)
	e := es.edgeRouter(func(c *router.Config) {
		c.TLS.HSTSMaxAge = time.Hour
		c.TLS.HSTSIncludeSubdomains = true
	})
	const hsts = "max-age=3600; includeSubDomains"
	handOff := map[string]string{"Connection": "keep-alive, X-Handoff", "X-Handoff": "1"} // the fast path hands it to net/http
	for _, c := range []struct {
		name          string
		h2            bool
		host          string
		header        map[string]string
		status        int
		proto         string
		fast, netHTTP float64 // connections counted
	}{
		{"http/1.1: the fast path", false, "acme.saas.test", nil, 200, "HTTP/1.1", 1, 0},
		{"http/1.1 handed off to net/http", false, "acme.saas.test", handOff, 200, "HTTP/1.1", 1, 1},
		{"h2: net/http", true, "acme.saas.test", nil, 200, "HTTP/2.0", 0, 1},
		{"http/1.1 SNI acme, Host globex: 421 on the fast path", false, "globex.saas.test", nil, http.StatusMisdirectedRequest, "HTTP/1.1", 1, 0},
		{"http/1.1 SNI acme, Host globex, handed off: 421", false, "globex.saas.test", handOff, http.StatusMisdirectedRequest, "HTTP/1.1", 1, 1},
		{"h2 SNI acme, Host globex: 421", true, "globex.saas.test", nil, http.StatusMisdirectedRequest, "HTTP/2.0", 0, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			fast0, netHTTP0, seen0 := connCount(e, "fast"), connCount(e, "net_http"), es.backend.seenCount()
			hc := e.tlsClient(es.ca, c.h2) // a connection of its own
			defer hc.CloseIdleConnections()
			req, _ := http.NewRequest("GET", "https://acme.saas.test/x", nil) // SNI acme
			req.Host = c.host
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status || resp.Proto != c.proto {
				t.Fatalf("%d %s: %s; want %d %s", resp.StatusCode, resp.Proto, body, c.status, c.proto)
			}
			if got := resp.Header.Values("Strict-Transport-Security"); len(got) != 1 || got[0] != hsts {
				t.Errorf("Strict-Transport-Security %q, want [%q]", got, hsts)
			}
			if fast, netHTTP := connCount(e, "fast")-fast0, connCount(e, "net_http")-netHTTP0; fast != c.fast || netHTTP != c.netHTTP {
				t.Errorf("connections counted: fast %v, net_http %v; want %v, %v", fast, netHTTP, c.fast, c.netHTTP)
			}
			if c.status == http.StatusMisdirectedRequest {
				var e struct{ Error string }
				if json.Unmarshal(body, &e) != nil || e.Error != "misdirected_request" {
					t.Fatalf("421 body: %s", body)
				}
				if es.backend.seenCount() != seen0 {
					t.Fatal("a misdirected request reached the backend")
				}
				return
			}
			var echo echoReply
			if err := json.Unmarshal(body, &echo); err != nil {
				t.Fatalf("not an echo: %s", body)
			}
			for k, want := range map[string]string{"X-Tenant-Id": "acme", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "acme.saas.test", "X-Forwarded-For": "127.0.0.1"} {
				if got := echo.Headers.Values(k); len(got) != 1 || got[0] != want {
					t.Errorf("backend got %s %q, want [%q]", k, got, want)
				}
			}
		})
	}
}

// A TLS client that hangs up (close_notify, then FIN) while a response
// body is stalled is noticed on the fast path as on plaintext: the
// request leaves the in-flight count and the backend's request ends. The
// alert's bytes sit unread before the end of file, so a peek at the
// socket alone would not see it go.
func TestRouterTLSFastPathClientHangup(t *testing.T) {
	testContext(t)
	s := newStack(t)
	stop := make(chan struct{})
	defer close(stop)
	backendGaveUp := make(chan string, 4)
	startBackend(t, s.consul.Client(), "app-shared", quietStream(stop, backendGaveUp))
	s.tenant("acme", "free", catalog.TierShared, "pool-1")
	ca := newTestCA(t)
	ca.putCert(t, s.store, "default", time.Now().Add(30*24*time.Hour), "*.saas.test", "saas.test")
	e := s.edgeRouter(nil)
	for _, tc := range []struct{ name, extra string }{{"fast path", ""}, {"net/http path", netHTTPWay}} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", e.tlsAddr, &tls.Config{ServerName: "acme.saas.test", RootCAs: ca.pool, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(conn, "GET /stream HTTP/1.1\r\nHost: acme.saas.test\r\nX-Test-Route: 1\r\n%s\r\n", tc.extra)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%v %v", resp, err)
			}
			if line, _ := bufio.NewReader(resp.Body).ReadString('\n'); line != "data: first\n" {
				t.Fatalf("first event %q", line)
			}
			if n := e.Inflight().Count("acme"); n != 1 {
				t.Fatalf("in flight while streaming: %d", n)
			}
			conn.Close() // close_notify, then FIN
			waitFor(t, 5*time.Second, "the abandoned request to leave the in-flight count", func() bool { return e.Inflight().Count("acme") == 0 })
			select {
			case <-backendGaveUp:
			case <-time.After(5 * time.Second):
				t.Fatal("the backend's request was not cancelled")
			}
		})
	}
}
