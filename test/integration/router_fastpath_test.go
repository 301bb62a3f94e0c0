package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router"
)

// Tests of the router's own HTTP/1.1 path (router/front.go, head.go,
// forward.go). Clients are raw TCP connections writing exact bytes, so a
// request really takes the fast path (or really is handed to net/http);
// backends that must send odd framing hijack their connection and write raw
// bytes.

// rawReply is what a backend's /raw/<name> route writes on its hijacked
// connection.
type rawReply struct {
	first    string        // written in one write
	later    string        // written after delay, if set
	delay    time.Duration // before later
	keepOpen bool          // leave the connection open (reading and ignoring) instead of ending it
	// sent, if set, gets the number of bytes the router sent on the
	// connection after the reply (another request: the connection was
	// reused) once the connection is closed or 2s have passed.
	sent chan int64
}

// uriReply is what the backend's catch-all test route answers: the request
// as the backend received it.
type uriReply struct {
	URI     string      `json:"uri"`
	Path    string      `json:"path"`
	Query   string      `json:"query"`
	Host    string      `json:"host"`
	Headers http.Header `json:"headers"`
}

// fastPathRoutes are the backend routes reached with X-Test-Route: /raw/<name>
// writes raws[name] raw, /reject answers 413 without reading the body,
// /upload answers with the request body, anything else describes the
// request (uriReply).
func fastPathRoutes(raws map[string]rawReply) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/raw/", func(w http.ResponseWriter, r *http.Request) {
		rr, ok := raws[strings.TrimPrefix(r.URL.Path, "/raw/")]
		if !ok {
			http.Error(w, "no such raw reply", http.StatusNotFound)
			return
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, rr.first)
		if rr.later != "" {
			time.Sleep(rr.delay)
			_, _ = io.WriteString(conn, rr.later)
		}
		if !rr.keepOpen {
			// End of file after the bytes (a FIN, not a reset).
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
		}
		// Whatever the router may still send here is read and never
		// answered: a router that reused this connection would read only
		// the bytes above.
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _ := io.Copy(io.Discard, conn)
		if rr.sent != nil {
			select {
			case rr.sent <- n:
			default:
			}
		}
	})
	mux.HandleFunc("/reject", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "rejected unread", http.StatusRequestEntityTooLarge)
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = w.Write(body)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(uriReply{URI: r.RequestURI, Path: r.URL.Path, Query: r.URL.RawQuery, Host: r.Host, Headers: r.Header})
	})
	return mux
}

// fastPathStack is Consul, the app-shared backend with fastPathRoutes, the
// tenants acme and calm on pool-1 (so both share the backend and its pooled
// connections), lonely on cl-1 (no backend) and a router.
func fastPathStack(t *testing.T, raws map[string]rawReply, edit func(*router.Config)) *runningRouter {
	t.Helper()
	s := newStack(t)
	startBackend(t, s.consul.Client(), "app-shared", fastPathRoutes(raws))
	s.tenant("acme", "free", catalog.TierShared, "pool-1")
	s.tenant("calm", "free", catalog.TierShared, "pool-1")
	s.tenant("lonely", "enterprise", catalog.TierDedicatedCluster, "cl-1") // app-cl-1 has no backend
	r := s.router(func(c *router.Config) {
		// The refused backend answers below must not open the breaker.
		c.Breaker.ConsecutiveFailures = 1000
		c.UpstreamHeaderTimeout = 3 * time.Second
		if edit != nil {
			edit(c)
		}
	})
	hc := &http.Client{Timeout: 5 * time.Second}
	waitFor(t, 10*time.Second, "served", func() bool {
		resp, _ := get(t, hc, r.url+"/t/acme/", nil)
		resp2, _ := get(t, hc, r.url+"/t/calm/", nil)
		return resp.StatusCode == 200 && resp2.StatusCode == 200
	})
	return r
}

// rawClient is one client connection writing exact bytes.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

const rawDeadline = 5 * time.Second

func dialRouter(t *testing.T, r *runningRouter) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(r.url, "http://"), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(rawDeadline))
	t.Cleanup(func() { _ = conn.Close() })
	return &rawClient{t: t, conn: conn, br: bufio.NewReader(conn)}
}

func (c *rawClient) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write %q: %v", s, err)
	}
}

// read reads one response (a 1xx included) and its whole body; err is the
// body's read error.
func (c *rawClient) read(method string) (*http.Response, []byte, error) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("reading the response to %s: %v", method, err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp, body, err
}

// readOK is read, failing on a body error.
func (c *rawClient) readOK(method string) (*http.Response, []byte) {
	c.t.Helper()
	resp, body, err := c.read(method)
	if err != nil {
		c.t.Fatalf("%d response body: %v (read %q)", resp.StatusCode, err, body)
	}
	return resp, body
}

// expectClosed checks that the router closes the connection, sending
// nothing more.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	b, err := c.br.ReadByte()
	if err == nil {
		rest, _ := c.br.Peek(c.br.Buffered())
		c.t.Fatalf("connection not closed: got %q", append([]byte{b}, rest...))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatal("connection not closed after 2s")
	}
}

// expectQuiet checks that nothing more arrives for a while (a bodiless
// response really had no body), and leaves the connection usable.
func (c *rawClient) expectQuiet() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	_, err := c.br.Peek(1)
	var ne net.Error
	if err == nil || !(errors.As(err, &ne) && ne.Timeout()) {
		extra, _ := c.br.Peek(c.br.Buffered())
		c.t.Fatalf("bytes after a bodiless response: %q (%v)", extra, err)
	}
	_ = c.conn.SetDeadline(time.Now().Add(rawDeadline))
}

// unsolicited returns what arrives within 150ms without being asked for.
func (c *rawClient) unsolicited() []byte {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	defer func() { _ = c.conn.SetDeadline(time.Now().Add(rawDeadline)) }()
	if _, err := c.br.Peek(1); err != nil {
		return nil
	}
	b, _ := c.br.Peek(c.br.Buffered())
	return b
}

// expectEcho sends a plain GET for path on this connection and checks that
// the echo backend answered it for tenant.
func (c *rawClient) expectEcho(tenant, path string) echoReply {
	c.t.Helper()
	c.send("GET " + path + " HTTP/1.1\r\nHost: router.test\r\n\r\n")
	return c.readEcho(tenant, strings.TrimPrefix(path, "/t/"+tenant))
}

// readEcho reads an echo answer and checks its tenant and path.
func (c *rawClient) readEcho(tenant, wantPath string) echoReply {
	c.t.Helper()
	resp, body := c.readOK("GET")
	if resp.StatusCode != 200 {
		c.t.Fatalf("want the echo for tenant %s, got %d: %q", tenant, resp.StatusCode, body)
	}
	var e echoReply
	if err := json.Unmarshal(body, &e); err != nil {
		c.t.Fatalf("want the echo for tenant %s, got %q", tenant, body)
	}
	if got := e.Headers.Values("X-Tenant-Id"); len(got) != 1 || got[0] != tenant || e.Path != wantPath {
		c.t.Fatalf("want the echo of %s for tenant %s, got tenant %v path %q", wantPath, tenant, got, e.Path)
	}
	return e
}

func checkRouterError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %q", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error != code || e.Message == "" {
		t.Errorf("body %q, want JSON with error %q and a message (%v)", body, code, err)
	}
}

func rawRequest(method, name string) string {
	return method + " /t/acme/raw/" + name + " HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\n\r\n"
}

// Every framing a backend may use reaches the client intact, and the client
// connection stays usable exactly when it should.
func TestRouterFastPathResponseFraming(t *testing.T) {
	cases := []struct {
		name   string
		method string
		reply  string
		check  func(t *testing.T, resp *http.Response, body []byte)
		// after the response: the connection is closed (else it must
		// still serve a request)
		closed bool
		// bodiless: nothing follows the head
		bodiless bool
	}{
		{
			name:   "content-length body",
			method: "GET",
			reply:  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Backend: raw\r\nContent-Length: 11\r\n\r\nhello world",
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != 200 || string(body) != "hello world" || resp.ContentLength != 11 || resp.Header.Get("X-Backend") != "raw" {
					t.Fatalf("got %d length %d X-Backend %q body %q", resp.StatusCode, resp.ContentLength, resp.Header.Get("X-Backend"), body)
				}
			},
		},
		{
			name:   "chunked with an extension and a trailer",
			method: "GET",
			reply: "HTTP/1.1 200 OK\r\nTrailer: X-Checksum\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc123\r\n\r\n",
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != 200 || string(body) != "hello world" {
					t.Fatalf("got %d body %q", resp.StatusCode, body)
				}
				if !slices.Equal(resp.TransferEncoding, []string{"chunked"}) {
					t.Errorf("transfer encoding %v, want chunked", resp.TransferEncoding)
				}
				if got := resp.Trailer.Get("X-Checksum"); got != "abc123" {
					t.Fatalf("trailer X-Checksum = %q, want abc123 (trailer %v)", got, resp.Trailer)
				}
			},
		},
		{
			name:   "HTTP/1.0 response without a length: body until close",
			method: "GET",
			reply:  "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the backend closes",
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != 200 || string(body) != "until the backend closes" {
					t.Fatalf("got %d body %q", resp.StatusCode, body)
				}
				if !resp.Close {
					t.Errorf("a body ending with the connection needs Connection: close; header %v", resp.Header)
				}
			},
			closed: true,
		},
		{
			name:   "HTTP/1.1 response without a length: body until close",
			method: "GET",
			reply:  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the backend closes",
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != 200 || string(body) != "until the backend closes" {
					t.Fatalf("got %d body %q", resp.StatusCode, body)
				}
			},
			closed: true,
		},
		{
			name:   "204 has no body",
			method: "GET",
			reply:  "HTTP/1.1 204 No Content\r\nX-Backend: raw\r\n\r\n",
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != 204 || len(body) != 0 || resp.Header.Get("X-Backend") != "raw" {
					t.Fatalf("got %d body %q header %v", resp.StatusCode, body, resp.Header)
				}
			},
			bodiless: true,
		},
		{
			name:   "304 has no body",
			method: "GET",
			reply:  "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n",
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != 304 || len(body) != 0 || resp.Header.Get("ETag") != `"v1"` {
					t.Fatalf("got %d body %q header %v", resp.StatusCode, body, resp.Header)
				}
			},
			bodiless: true,
		},
		{
			name:   "304 with the representation's Content-Length has no body",
			method: "GET",
			reply:  "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 11\r\n\r\n",
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != 304 || len(body) != 0 {
					t.Fatalf("got %d body %q", resp.StatusCode, body)
				}
			},
			bodiless: true,
		},
		{
			name:   "HEAD keeps Content-Length, has no body",
			method: "HEAD",
			reply:  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n",
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != 200 || len(body) != 0 {
					t.Fatalf("got %d body %q", resp.StatusCode, body)
				}
				if resp.ContentLength != 1234 || resp.Header.Get("Content-Length") != "1234" {
					t.Fatalf("Content-Length %d %q, want 1234", resp.ContentLength, resp.Header.Get("Content-Length"))
				}
			},
			bodiless: true,
		},
		{
			name:   "HEAD of a chunked resource has no body",
			method: "HEAD",
			reply:  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != 200 || len(body) != 0 {
					t.Fatalf("got %d body %q", resp.StatusCode, body)
				}
			},
			bodiless: true,
		},
		{
			name:   "hop-by-hop response fields are not relayed",
			method: "GET",
			reply: "HTTP/1.1 200 OK\r\nConnection: X-Secret, x-lower\r\nX-Secret: 1\r\nx-lower: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n" +
				"X-Kept: yes\r\nContent-Length: 2\r\n\r\nok",
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != 200 || string(body) != "ok" || resp.Header.Get("X-Kept") != "yes" {
					t.Fatalf("got %d %q header %v", resp.StatusCode, body, resp.Header)
				}
				for _, k := range []string{"X-Secret", "X-Lower", "Keep-Alive", "Proxy-Connection", "Connection"} {
					if v, ok := resp.Header[k]; ok {
						t.Errorf("client got %s: %q", k, v)
					}
				}
			},
		},
		{
			name:   "status line without a reason phrase",
			method: "GET",
			reply:  "HTTP/1.1 201\r\nContent-Length: 2\r\n\r\nok",
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != 201 || string(body) != "ok" {
					t.Fatalf("got %d body %q", resp.StatusCode, body)
				}
			},
		},
	}
	bigValue := strings.Repeat("c", 40<<10)
	raws := map[string]rawReply{
		"early-hints": {first: "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		"big-head": {first: "HTTP/1.1 200 OK\r\nX-Big: " + bigValue + "\r\nContent-Length: 2\r\n\r\nok"},
	}
	for i, tc := range cases {
		raws[fmt.Sprint(i)] = rawReply{first: tc.reply}
	}
	r := fastPathStack(t, raws, nil)

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRouter(t, r)
			c.send(rawRequest(tc.method, fmt.Sprint(i)))
			resp, body := c.readOK(tc.method)
			tc.check(t, resp, body)
			if tc.closed {
				c.expectClosed()
				return
			}
			if tc.bodiless {
				c.expectQuiet()
			}
			c.expectEcho("acme", "/t/acme/next")
		})
	}

	t.Run("103 Early Hints before the 200", func(t *testing.T) {
		c := dialRouter(t, r)
		c.send(rawRequest("GET", "early-hints"))
		resp, _ := c.readOK("GET")
		if resp.StatusCode != 103 || resp.Header.Get("Link") != "</style.css>; rel=preload" {
			t.Fatalf("first response %d %v, want 103 with the Link header", resp.StatusCode, resp.Header)
		}
		resp, body := c.readOK("GET")
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("final response %d %q, want 200 ok", resp.StatusCode, body)
		}
		c.expectEcho("acme", "/t/acme/next")
	})

	t.Run("client's Connection: close", func(t *testing.T) {
		c := dialRouter(t, r)
		c.send("GET /t/acme/bye HTTP/1.1\r\nHost: router.test\r\nConnection: close\r\n\r\n")
		c.readEcho("acme", "/bye")
		c.expectClosed()
	})

	// net/http's client (the net/http path's transport) takes response
	// heads up to 10 MiB.
	t.Run("40 KiB response head", func(t *testing.T) {
		for _, path := range []string{"fast", "net/http"} {
			c := dialRouter(t, r)
			extra := ""
			if path == "net/http" {
				extra = "Connection: X-Handoff\r\nX-Handoff: 1\r\n"
			}
			c.send("GET /t/acme/raw/big-head HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\n" + extra + "\r\n")
			resp, body := c.readOK("GET")
			if resp.StatusCode != 200 || string(body) != "ok" || resp.Header.Get("X-Big") != bigValue {
				t.Errorf("%s path: got %d %.200q, X-Big of %d bytes; want 200 ok with the 40 KiB X-Big", path, resp.StatusCode, body, len(resp.Header.Get("X-Big")))
			}
		}
	})

	t.Run("103 Early Hints seen by net/http's client", func(t *testing.T) {
		var codes []int
		var link string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			codes = append(codes, code)
			link = h.Get("Link")
			return nil
		}}
		ctx, cancel := context.WithTimeout(context.Background(), rawDeadline)
		defer cancel()
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", r.url+"/t/acme/raw/early-hints", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Test-Route", "1")
		resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("final response %d %q %v", resp.StatusCode, body, err)
		}
		if !slices.Equal(codes, []int{103}) || link != "</style.css>; rel=preload" {
			t.Fatalf("interim responses %v (Link %q), want one 103 with the Link header", codes, link)
		}
	})
}

// A backend whose framing is ambiguous or broken is never relayed as if it
// were fine: ambiguous heads get the router's 502, a body broken half-way
// reaches the client broken.
func TestRouterFastPathRefusesBadBackendFraming(t *testing.T) {
	refused := []struct{ name, reply string }{
		{"Content-Length and Transfer-Encoding", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"Transfer-Encoding and Content-Length", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"two different Content-Length values", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
		{"Content-Length list with two values", "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!"},
		{"unknown Transfer-Encoding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: bogus\r\n\r\nhello"},
		{"gzip, chunked Transfer-Encoding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"Transfer-Encoding chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	}
	broken := []struct{ name, reply string }{
		{"malformed chunk size mid-body", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"},
		{"chunk data longer than its size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n"},
		{"chunked body cut off by close", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n wo"},
		{"Content-Length body cut off by close", "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nshort"},
	}
	raws := map[string]rawReply{}
	for i, tc := range refused {
		raws[fmt.Sprint("refused-", i)] = rawReply{first: tc.reply}
	}
	for i, tc := range broken {
		raws[fmt.Sprint("broken-", i)] = rawReply{first: tc.reply}
	}
	r := fastPathStack(t, raws, nil)

	for i, tc := range refused {
		t.Run(tc.name+" gets 502", func(t *testing.T) {
			c := dialRouter(t, r)
			c.send(rawRequest("GET", fmt.Sprint("refused-", i)))
			resp, body := c.readOK("GET")
			checkRouterError(t, resp, body, http.StatusBadGateway, "upstream_failed")
			c.expectEcho("acme", "/t/acme/next")
		})
	}
	for i, tc := range broken {
		t.Run(tc.name+" reaches the client broken", func(t *testing.T) {
			c := dialRouter(t, r)
			c.send(rawRequest("GET", fmt.Sprint("broken-", i)))
			resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
			if err == nil {
				var body []byte
				body, err = io.ReadAll(resp.Body)
				if err == nil && resp.StatusCode == 200 {
					t.Fatalf("client read a clean 200 response with body %q; want a broken body", body)
				}
			}
			if err != nil {
				// A broken body can only end with the connection.
				c.expectClosed()
			}
		})
	}
	t.Run("the backend is still used after", func(t *testing.T) {
		dialRouter(t, r).expectEcho("calm", "/t/calm/after")
	})
}

// Bytes a backend sends beyond the end of a response — at once or a moment
// later — are never taken for the answer to a later request, whichever
// tenant's it is.
func TestRouterFastPathNeverMixesResponses(t *testing.T) {
	const fake = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-Tenant-Id: other\r\n\r\nother-tenant"
	const anyStatus = -1
	cases := []struct {
		name     string
		method   string
		reply    rawReply
		wantCode int           // anyStatus: 200 or the router's 502
		wantBody string        // for 200
		pause    time.Duration // before the next requests
	}{
		{"extra response in the same write after a Content-Length body", "GET",
			rawReply{first: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + fake}, 200, "hello", 0},
		{"extra response in the same write after a chunked body", "GET",
			rawReply{first: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + fake}, 200, "hello", 0},
		{"extra response in the same write after a 204", "GET",
			rawReply{first: "HTTP/1.1 204 No Content\r\n\r\n" + fake}, 204, "", 0},
		{"a body sent for a HEAD request", "HEAD",
			rawReply{first: fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(fake), fake)}, 200, "", 0},
		{"extra response 50ms after a Content-Length body", "GET",
			rawReply{first: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", later: fake, delay: 50 * time.Millisecond}, 200, "hello", 150 * time.Millisecond},
		{"extra response 50ms after a 204", "GET",
			rawReply{first: "HTTP/1.1 204 No Content\r\n\r\n", later: fake, delay: 50 * time.Millisecond}, 204, "", 150 * time.Millisecond},
		// RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has
		// faulty framing; the recipient must close the connection after it.
		// (net/http's client ignores the coding there and reads until close.)
		{"HTTP/1.0 keep-alive response with Transfer-Encoding", "GET",
			rawReply{first: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"}, anyStatus, "", 0},
	}
	raws := map[string]rawReply{}
	for i := range cases {
		cases[i].reply.keepOpen = true
		cases[i].reply.sent = make(chan int64, 8)
		raws[fmt.Sprint(i)] = cases[i].reply
	}
	r := fastPathStack(t, raws, nil)

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for round := 0; round < 4; round++ {
				c := dialRouter(t, r)
				c.send(rawRequest(tc.method, fmt.Sprint(i)))
				resp, body, err := c.read(tc.method)
				switch {
				case tc.wantCode == anyStatus && (resp.StatusCode == 502 || resp.StatusCode == 200):
				case resp.StatusCode != tc.wantCode || string(body) != tc.wantBody || err != nil:
					t.Fatalf("round %d: got %d %q (%v), want %d %q", round, resp.StatusCode, body, err, tc.wantCode, tc.wantBody)
				}
				time.Sleep(tc.pause)
				// The same tenant on the same client connection (if kept),
				// then another tenant on another.
				if resp.Close || err != nil {
					c = dialRouter(t, r)
				}
				c.expectEcho("acme", fmt.Sprintf("/t/acme/round-%d", round))
				dialRouter(t, r).expectEcho("calm", fmt.Sprintf("/t/calm/round-%d", round))
				// The backend connection that sent the reply never carries
				// another request.
				select {
				case n := <-tc.reply.sent:
					if n != 0 {
						t.Fatalf("round %d: the router sent %d more bytes (another request) on the backend connection after that reply", round, n)
					}
				case <-time.After(3 * time.Second):
					t.Fatalf("round %d: the backend connection was not done after 3s", round)
				}
			}
		})
	}
}

// The fast path rewrites the request as the net/http path does: no
// hop-by-hop fields, no client copy of a router-owned field, the router's own
// set, the tenant prefix stripped, everything else unchanged.
func TestRouterFastPathRewritesRequest(t *testing.T) {
	r := fastPathStack(t, nil, nil)

	const spoofed = "Connection: keep-alive\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"Proxy-Authorization: Basic c2VjcmV0\r\n" +
		"Proxy-Connection: keep-alive\r\n" +
		"X-Tenant-Id: calm\r\n" +
		"X_Tenant_Id: calm\r\n" +
		"X-Tenant-Tier: dedicated-cluster\r\n" +
		"X-Tenant-Target: cl-1\r\n" +
		"X-Tenant-Epoch: 99\r\n" +
		"X-Forwarded-For: 10.9.9.9\r\n" +
		"x-forwarded-host: evil.example\r\n" +
		"X-Forwarded-Proto: https\r\n" +
		"X_Forwarded_For: 10.9.9.9\r\n" +
		"Forwarded: for=10.9.9.9;host=evil.example\r\n" +
		"X-Custom: kept as sent\r\n" +
		"Cookie: a=1; b=2\r\n"

	checkHeaders := func(t *testing.T, e echoReply) {
		t.Helper()
		h := e.Headers
		for _, k := range []string{"Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Forwarded"} {
			if v, ok := h[k]; ok {
				t.Errorf("backend got %s: %q", k, v)
			}
		}
		for k, v := range h {
			if strings.Contains(k, "_") {
				t.Errorf("backend got the client's %s: %q", k, v)
			}
		}
		for k, want := range map[string]string{
			"X-Tenant-Id": "acme", "X-Tenant-Tier": "shared", "X-Tenant-Target": "pool-1",
			"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": "router.test", "X-Forwarded-Proto": "http",
			"X-Custom": "kept as sent", "Cookie": "a=1; b=2",
		} {
			if got := h.Values(k); len(got) != 1 || got[0] != want {
				t.Errorf("backend got %s: %q, want [%q]", k, got, want)
			}
		}
		if got := h.Values("X-Tenant-Epoch"); len(got) != 1 || got[0] == "99" {
			t.Errorf("backend got X-Tenant-Epoch %q, want the router's one", got)
		}
		if e.Host != "router.test" {
			t.Errorf("backend got Host %q", e.Host)
		}
	}

	var fast echoReply
	t.Run("hop-by-hop and router-owned fields", func(t *testing.T) {
		c := dialRouter(t, r)
		c.send("GET /t/acme/x?y=1 HTTP/1.1\r\nHost: router.test\r\n" + spoofed + "\r\n")
		fast = c.readEcho("acme", "/x")
		checkHeaders(t, fast)
		c.expectEcho("acme", "/t/acme/again")
	})
	t.Run("the same fields as the net/http path", func(t *testing.T) {
		if fast.Headers == nil {
			t.Skip("no fast-path answer")
		}
		// "Connection: X-Handoff" sends the request the net/http way.
		c := dialRouter(t, r)
		c.send("GET /t/acme/x?y=1 HTTP/1.1\r\nHost: router.test\r\n" +
			strings.Replace(spoofed, "Connection: keep-alive", "Connection: keep-alive, X-Handoff", 1) + "X-Handoff: 1\r\n\r\n")
		slow := c.readEcho("acme", "/x")
		checkHeaders(t, slow)
		for k, v := range slow.Headers {
			if k == router.HeaderRequestID {
				// A new id per request: the same shape on both, not the same value.
				if got := fast.Headers[k]; len(got) != 1 || len(v) != 1 || len(got[0]) != 32 || len(v[0]) != 32 || got[0] == v[0] {
					t.Errorf("%s: fast path sent %q, net/http path %q; want one fresh 32-digit id each", k, got, v)
				}
				continue
			}
			if got := fast.Headers[k]; !slices.Equal(got, v) {
				t.Errorf("%s: fast path sent %q, net/http path %q", k, got, v)
			}
		}
		for k, v := range fast.Headers {
			if _, ok := slow.Headers[k]; !ok {
				t.Errorf("%s: fast path sent %q, net/http path nothing", k, v)
			}
		}
	})

	targets := []struct{ target, uri string }{
		{"/t/acme/x?y=1", "/x?y=1"},
		{"/t/acme", "/"},
		{"/t/acme/", "/"},
		{"/t/acme?q=1", "/?q=1"},
		{"/t/acme/a/b;c=d?e=f&g=/t/calm/", "/a/b;c=d?e=f&g=/t/calm/"},
		{"/t/acme/t/calm/x", "/t/calm/x"},
	}
	for _, tc := range targets {
		t.Run("target "+tc.target, func(t *testing.T) {
			var got [2]uriReply
			for i, extra := range []string{"", "Connection: X-Handoff\r\nX-Handoff: 1\r\n"} {
				c := dialRouter(t, r)
				c.send("GET " + tc.target + " HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\n" + extra + "\r\n")
				resp, body := c.readOK("GET")
				if resp.StatusCode != 200 || json.Unmarshal(body, &got[i]) != nil {
					t.Fatalf("got %d %q", resp.StatusCode, body)
				}
				if tid := got[i].Headers.Get("X-Tenant-Id"); tid != "acme" {
					t.Fatalf("tenant %q", tid)
				}
			}
			if got[0].URI != tc.uri {
				t.Errorf("fast path: backend got %q, want %q", got[0].URI, tc.uri)
			}
			if got[1].URI != tc.uri {
				t.Errorf("net/http path: backend got %q, want %q", got[1].URI, tc.uri)
			}
		})
	}

	t.Run("POST without a body gets Content-Length: 0", func(t *testing.T) {
		c := dialRouter(t, r)
		c.send("POST /t/acme/form HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\n\r\n")
		resp, body := c.readOK("POST")
		var u uriReply
		if resp.StatusCode != 200 || json.Unmarshal(body, &u) != nil {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		if u.Path != "/form" {
			t.Fatalf("path %q", u.Path)
		}
	})
}

// Requests the fast path does not take are handed, with their connection,
// to net/http and answered correctly; connections mixing both work.
func TestRouterFastPathHandOff(t *testing.T) {
	r := fastPathStack(t, nil, nil)
	big := strings.Repeat("b", 10<<10)

	type step struct {
		method string
		check  func(t *testing.T, c *rawClient, resp *http.Response, body []byte)
	}
	echoOf := func(tenant, path string) step {
		return step{"GET", func(t *testing.T, c *rawClient, resp *http.Response, body []byte) {
			var e echoReply
			if resp.StatusCode != 200 || json.Unmarshal(body, &e) != nil {
				t.Fatalf("want the echo of %s for %s, got %d %q", path, tenant, resp.StatusCode, body)
			}
			if e.Headers.Get("X-Tenant-Id") != tenant || e.Path != path {
				t.Fatalf("want the echo of %s for %s, got %s for %s", path, tenant, e.Path, e.Headers.Get("X-Tenant-Id"))
			}
		}}
	}
	bodyOf := func(want string) step {
		return step{"POST", func(t *testing.T, c *rawClient, resp *http.Response, body []byte) {
			if resp.StatusCode != 200 || string(body) != want {
				t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
			}
		}}
	}
	chunkedUpload := "POST /t/calm/upload HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"

	cases := []struct {
		name     string
		request  string
		steps    []step
		followUp bool // the connection then serves a plain GET
	}{
		{"HTTP/1.0", "GET /t/acme/v10 HTTP/1.0\r\nHost: router.test\r\n\r\n",
			[]step{echoOf("acme", "/v10")}, false},
		{"percent-encoded path", "GET /t/acme/a%20b HTTP/1.1\r\nHost: router.test\r\n\r\n",
			[]step{echoOf("acme", "/a b")}, true},
		{"chunked upload", chunkedUpload, []step{bodyOf("hello world")}, true},
		{"Connection: X-Custom", "GET /t/acme/conn HTTP/1.1\r\nHost: router.test\r\nConnection: X-Custom\r\nX-Custom: secret\r\nX-Other: kept\r\n\r\n",
			[]step{{"GET", func(t *testing.T, c *rawClient, resp *http.Response, body []byte) {
				var e echoReply
				if resp.StatusCode != 200 || json.Unmarshal(body, &e) != nil {
					t.Fatalf("got %d %q", resp.StatusCode, body)
				}
				if v, ok := e.Headers["X-Custom"]; ok {
					t.Fatalf("backend got X-Custom %q, named in Connection", v)
				}
				if e.Headers.Get("X-Other") != "kept" || e.Headers.Get("X-Tenant-Id") != "acme" {
					t.Fatalf("backend headers %v", e.Headers)
				}
			}}}, true},
		{"bare LF line ends", "GET /t/acme/lf HTTP/1.1\nHost: router.test\nX-Other: kept\n\n",
			[]step{echoOf("acme", "/lf")}, true},
		{"head over 8 KiB, under MaxHeaderBytes", "GET /t/acme/big HTTP/1.1\r\nHost: router.test\r\nX-Big: " + big + "\r\n\r\n",
			[]step{{"GET", func(t *testing.T, c *rawClient, resp *http.Response, body []byte) {
				var e echoReply
				if resp.StatusCode != 200 || json.Unmarshal(body, &e) != nil {
					t.Fatalf("got %d %.200q", resp.StatusCode, body)
				}
				if e.Headers.Get("X-Big") != big || e.Path != "/big" {
					t.Fatalf("backend got X-Big of %d bytes, path %q", len(e.Headers.Get("X-Big")), e.Path)
				}
			}}}, true},
		{"two pipelined GETs in one write",
			"GET /t/acme/one HTTP/1.1\r\nHost: router.test\r\n\r\nGET /t/calm/two HTTP/1.1\r\nHost: router.test\r\n\r\n",
			[]step{echoOf("acme", "/one"), echoOf("calm", "/two")}, true},
		{"fast-path POST body then a pipelined GET",
			"POST /t/acme/upload HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\nContent-Length: 11\r\n\r\nhello world" +
				"GET /t/calm/after-body HTTP/1.1\r\nHost: router.test\r\n\r\n",
			[]step{bodyOf("hello world"), echoOf("calm", "/after-body")}, true},
		{"fast-path GET then a chunked upload in one write",
			"GET /t/acme/first HTTP/1.1\r\nHost: router.test\r\n\r\n" + chunkedUpload,
			[]step{echoOf("acme", "/first"), bodyOf("hello world")}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRouter(t, r)
			c.send(tc.request)
			for _, s := range tc.steps {
				resp, body := c.readOK(s.method)
				s.check(t, c, resp, body)
			}
			if tc.followUp {
				c.expectEcho("acme", "/t/acme/follow-up")
			}
		})
	}

	t.Run("fast-path GET then a chunked upload on one connection", func(t *testing.T) {
		c := dialRouter(t, r)
		c.expectEcho("acme", "/t/acme/first")
		c.send(chunkedUpload)
		resp, body := c.readOK("POST")
		bodyOf("hello world").check(t, c, resp, body)
		c.expectEcho("calm", "/t/calm/last")
	})

	t.Run("fast-path head and body arriving in pieces", func(t *testing.T) {
		c := dialRouter(t, r)
		for _, piece := range []string{"POST /t/acme/upl", "oad HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r", "\nContent-Length: 11\r\n", "\r\nhello", " world"} {
			c.send(piece)
			time.Sleep(30 * time.Millisecond)
		}
		resp, body := c.readOK("POST")
		bodyOf("hello world").check(t, c, resp, body)
		c.expectEcho("calm", "/t/calm/after-pieces")
	})

	t.Run("backend answering a 4 MiB fast-path upload without reading it", func(t *testing.T) {
		c := dialRouter(t, r)
		const size = 4 << 20
		go func() {
			_, _ = fmt.Fprintf(c.conn, "POST /t/acme/reject HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\nContent-Length: %d\r\n\r\n", size)
			_, _ = c.conn.Write(make([]byte, size))
		}()
		resp, body := c.readOK("POST")
		if resp.StatusCode != 413 || string(body) != "rejected unread\n" {
			t.Fatalf("got %d %q, want the backend's 413", resp.StatusCode, body)
		}
	})

	t.Run("Expect: 100-continue", func(t *testing.T) {
		c := dialRouter(t, r)
		c.send("POST /t/acme/upload HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
		resp, _ := c.readOK("POST")
		if resp.StatusCode != 100 {
			t.Fatalf("got %d before the body was sent, want 100 Continue", resp.StatusCode)
		}
		c.send("hello world")
		resp, body := c.readOK("POST")
		bodyOf("hello world").check(t, c, resp, body)
		c.expectEcho("acme", "/t/acme/follow-up")
	})
}

// The router's own answers on the fast path are JSON; a connection whose
// request body was not read is closed after, any other stays usable.
func TestRouterFastPathRouterErrors(t *testing.T) {
	const maxBody = 1 << 20
	raws := map[string]rawReply{
		"slow": {later: "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate", delay: 1500 * time.Millisecond},
	}
	r := fastPathStack(t, raws, func(c *router.Config) {
		c.MaxBodyBytes = maxBody
		c.MaxHeaderBytes = 4 << 10 // so a head of 5 KiB is refused on the fast path
		c.UpstreamHeaderTimeout = 700 * time.Millisecond
	})
	cases := []struct {
		name    string
		request string
		status  int
		code    string
		after   string // closed: the connection must be closed; kept: it must serve the next request; either
	}{
		{"unknown tenant", "GET /t/nosuch/x HTTP/1.1\r\nHost: router.test\r\n\r\n", 404, "unknown_tenant", "kept"},
		{"no tenant", "GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, "no_tenant", "kept"},
		{"a domain no tenant has, naming no tenant otherwise", "GET /x HTTP/1.1\r\nHost: router.test\r\n\r\n", 404, "unknown_tenant", "kept"},
		{"bad bearer token", "GET /x HTTP/1.1\r\nHost: router.test\r\nAuthorization: Bearer not.a.token\r\n\r\n", 401, "bad_token", "kept"},
		{"host and path name different tenants", "GET /t/acme/x HTTP/1.1\r\nHost: calm.saas.test\r\n\r\n", 400, "tenant_conflict", "kept"},
		{"head over MaxHeaderBytes", "GET /t/acme/x HTTP/1.1\r\nHost: router.test\r\nX-Big: " + strings.Repeat("h", 5<<10) + "\r\n\r\n", 431, "headers_too_large", "kept"},
		{"Content-Length over MaxBodyBytes", fmt.Sprintf("POST /t/acme/x HTTP/1.1\r\nHost: router.test\r\nContent-Length: %d\r\n\r\npartial body", maxBody+1), 413, "body_too_large", "closed"},
		{"unknown tenant with a body", "POST /t/nosuch/x HTTP/1.1\r\nHost: router.test\r\nContent-Length: 5\r\n\r\nhello", 404, "unknown_tenant", "either"},
		{"unknown tenant with Connection: close", "GET /t/nosuch/x HTTP/1.1\r\nHost: router.test\r\nConnection: close\r\n\r\n", 404, "unknown_tenant", "closed"},
		{"no healthy backend", "GET /t/lonely/x HTTP/1.1\r\nHost: router.test\r\n\r\n", 503, "no_healthy_backend", "kept"},
		// The body is a whole request for another tenant: it must never be
		// read as one (the router answered without reading the body).
		{"no healthy backend with a body that looks like a request", "POST /t/lonely/x HTTP/1.1\r\nHost: router.test\r\nContent-Length: 42\r\n\r\nGET /t/calm/x HTTP/1.1\r\nHost: smuggled\r\n\r\n", 503, "no_healthy_backend", "closed"},
		{"unknown tenant with a body that looks like a request", "POST /t/nosuch/x HTTP/1.1\r\nHost: router.test\r\nContent-Length: 42\r\n\r\nGET /t/calm/x HTTP/1.1\r\nHost: smuggled\r\n\r\n", 404, "unknown_tenant", "closed"},
		{"backend slower than UpstreamHeaderTimeout", "GET /t/acme/raw/slow HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\n\r\n", 504, "upstream_timeout", "kept"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRouter(t, r)
			c.send(tc.request)
			method, _, _ := strings.Cut(tc.request, " ")
			resp, body := c.readOK(method)
			checkRouterError(t, resp, body, tc.status, tc.code)
			if tc.status == 503 && resp.Header.Get("Retry-After") == "" {
				t.Errorf("503 without Retry-After")
			}
			if tc.after == "closed" || tc.after == "either" && resp.Close {
				if !resp.Close {
					t.Errorf("the answer does not say Connection: close")
				}
				c.expectClosed()
				return
			}
			if resp.Close {
				t.Errorf("the answer says Connection: close")
			}
			if extra := c.unsolicited(); len(extra) > 0 {
				t.Errorf("after the %d, before any other request, the router sent %d more bytes: %.300q", tc.status, len(extra), extra)
			}
			c.expectEcho("acme", "/t/acme/next")
		})
	}
}
