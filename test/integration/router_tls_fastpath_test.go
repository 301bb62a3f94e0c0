package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

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
