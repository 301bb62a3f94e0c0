package integration

import (
	"encoding/json"
	"fmt"
	"github.com/switchyard/switchyard/router"
	"strings"
	"testing"
)

// Parity tests: the fast path does what the net/http path does for the same
// request. Each sends the same request once on the fast path and once the
// net/http way ("Connection: X-Handoff" makes the strict parser decline it)
// and compares what the backend / client got.

const netHTTPWay = "Connection: X-Handoff\r\nX-Handoff: 1\r\n"

// httputil.ReverseProxy with Rewrite drops query parameters it cannot parse
// (cleanQueryParams: ';' separators, bad %-escapes), so the backend never
// sees parameters the proxy read otherwise; such queries go to net/http, and
// the backend sees the same request whichever engine served it.
func TestRouterFastPathQueryCleanedLikeNetHTTP(t *testing.T) {
	r := fastPathStack(t, nil, nil)
	const target = "/t/acme/x?a=1;admin=true&b=%zz&c=3"
	var got [2]uriReply
	for i, extra := range []string{"", netHTTPWay} {
		c := dialRouter(t, r)
		c.send("GET " + target + " HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\n" + extra + "\r\n")
		resp, body := c.readOK("GET")
		if resp.StatusCode != 200 || json.Unmarshal(body, &got[i]) != nil {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	}
	t.Logf("fast path: backend got query %q; net/http path: %q", got[0].Query, got[1].Query)
	if got[0].Query != got[1].Query {
		t.Errorf("the backend sees a different query per engine: fast path %q, net/http path %q", got[0].Query, got[1].Query)
	}
}

// A backend response with many header fields (130 Set-Cookie) is relayed
// whole on both engines.
func TestRouterFastPathManyResponseFields(t *testing.T) {
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\n")
	for i := 0; i < 130; i++ {
		fmt.Fprintf(&b, "Set-Cookie: c%d=v; Path=/\r\n", i)
	}
	b.WriteString("Content-Length: 2\r\n\r\nok")
	raws := map[string]rawReply{"cookies": {first: b.String()}}
	r := fastPathStack(t, raws, nil)
	var status [2]int
	var cookies [2]int
	for i, extra := range []string{"", netHTTPWay} {
		c := dialRouter(t, r)
		c.send("GET /t/acme/raw/cookies HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\n" + extra + "\r\n")
		resp, _ := c.readOK("GET")
		status[i], cookies[i] = resp.StatusCode, len(resp.Header.Values("Set-Cookie"))
	}
	t.Logf("fast path: %d with %d cookies; net/http path: %d with %d cookies", status[0], cookies[0], status[1], cookies[1])
	if status[0] != status[1] || cookies[0] != cookies[1] {
		t.Errorf("fast path answered %d (%d Set-Cookie), net/http path %d (%d Set-Cookie)", status[0], cookies[0], status[1], cookies[1])
	}
}

// Hop-by-hop response fields (TE here) are removed on both engines;
// Proxy-Authenticate, which ReverseProxy would drop, is relayed on both (a
// backend's 407 needs it; nginx relays it too).
func TestRouterFastPathDropsHopByHopResponseFields(t *testing.T) {
	raws := map[string]rawReply{"proxy-auth": {first: "HTTP/1.1 407 Proxy Authentication Required\r\n" +
		"Proxy-Authenticate: Basic realm=\"backend\"\r\nTe: trailers\r\nContent-Length: 2\r\n\r\nno"}}
	r := fastPathStack(t, raws, nil)
	for _, tc := range []struct{ name, extra string }{{"fast path", ""}, {"net/http path", netHTTPWay}} {
		c := dialRouter(t, r)
		c.send("GET /t/acme/raw/proxy-auth HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\n" + tc.extra + "\r\n")
		resp, body := c.readOK("GET")
		t.Logf("%s: %d %q Proxy-Authenticate=%q Te=%q", tc.name, resp.StatusCode, body, resp.Header.Values("Proxy-Authenticate"), resp.Header.Values("Te"))
		if v, ok := resp.Header["Te"]; ok {
			t.Errorf("%s: client got hop-by-hop Te: %q", tc.name, v)
		}
		if got := resp.Header.Values("Proxy-Authenticate"); len(got) != 1 || got[0] != `Basic realm="backend"` {
			t.Errorf("%s: Proxy-Authenticate %q, want the backend's", tc.name, got)
		}
	}
}

// A limit of the router's own (not a backend failure) never counts in the
// breaker: one tenant's client fetching such responses a few times must not
// open the breaker of a shared backend instance for every tenant on it.
func TestRouterFastPathRouterLimitsDoNotOpenBreaker(t *testing.T) {
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\n")
	for i := 0; i < 130; i++ {
		fmt.Fprintf(&b, "Set-Cookie: c%d=v\r\n", i)
	}
	b.WriteString("Content-Length: 2\r\n\r\nok")
	raws := map[string]rawReply{"cookies": {first: b.String()}}
	r := fastPathStack(t, raws, func(c *router.Config) { c.Breaker.ConsecutiveFailures = 3 })
	for i := 0; i < 3; i++ {
		c := dialRouter(t, r)
		c.send("GET /t/acme/raw/cookies HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\n\r\n")
		resp, _ := c.readOK("GET")
		t.Logf("acme request %d: %d", i, resp.StatusCode)
	}
	c := dialRouter(t, r)
	c.send("GET /t/calm/innocent HTTP/1.1\r\nHost: router.test\r\n\r\n")
	resp, body := c.readOK("GET")
	t.Logf("calm afterwards: %d %s", resp.StatusCode, body)
	if resp.StatusCode != 200 {
		t.Errorf("tenant calm got %d %q after acme fetched a valid response with many fields", resp.StatusCode, body)
	}
}
