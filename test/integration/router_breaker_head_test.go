package integration

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/router"
)

// A backend whose response head is over the router's limit (1 MiB on the
// fast path, 10 MiB on net/http) failed that tenant's request: on both
// engines it counts against that tenant on that instance, so the tenant's
// breaker opens there while its neighbour on the same instance is served.
func TestRouterOversizedResponseHeadCountsAgainstTheTenant(t *testing.T) {
	const failures = 3
	bigHead := "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 11<<20) + "\r\nContent-Length: 2\r\n\r\nok"
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			r := fastPathStack(t, map[string]rawReply{"big-head": {first: bigHead}}, func(c *router.Config) {
				c.Breaker.ConsecutiveFailures = failures
				// Reading 10 MiB of head may take a while on a busy machine
				// (with -race): a timeout would count too, and prove nothing.
				c.UpstreamHeaderTimeout = 30 * time.Second
			})
			send := func(tenant, path string) *rawClient {
				c := dialRouter(t, r)
				_ = c.conn.SetDeadline(time.Now().Add(60 * time.Second)) // as the header timeout
				c.send("GET /t/" + tenant + path + " HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\n" + e.extra + "\r\n")
				return c
			}
			read := func(c *rawClient) (int, string) {
				resp, body := c.readOK("GET")
				var apiErr struct{ Error string }
				_ = json.Unmarshal(body, &apiErr)
				return resp.StatusCode, apiErr.Error
			}
			get := func(tenant, path string) (int, string) { return read(send(tenant, path)) }
			// At once: reading a 10 MiB head can take seconds on a busy
			// machine, and a breaker forgets failures older than its 10 s
			// interval.
			var cs []*rawClient
			for i := 0; i < failures; i++ {
				cs = append(cs, send("acme", "/raw/big-head"))
			}
			for i, c := range cs {
				if st, code := read(c); st != http.StatusBadGateway {
					t.Fatalf("oversized head %d: %d %s, want 502", i, st, code)
				}
			}
			if st, code := get("acme", "/raw/big-head"); st != http.StatusServiceUnavailable || code != "breaker_open" {
				t.Errorf("after %d oversized heads the tenant got %d %q, want 503 breaker_open", failures, st, code)
			}
			if st, code := get("calm", "/innocent"); st != http.StatusOK {
				t.Errorf("the neighbour on the same instance got %d %q, want 200", st, code)
			}
		})
	}
}
