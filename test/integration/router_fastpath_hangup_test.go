package integration

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
)

// A client that hangs up while a response body is stalled (a quiet event
// stream, a backend stuck mid-body) is noticed on both engines: the request
// leaves the in-flight count (which would block a freeze of the tenant) and
// the backend connection is closed, within a few seconds. The fast path
// reads nothing from the client while relaying; it checks the client each
// second the stream is quiet.
func TestRouterFastPathClientHangupEndsStalledStream(t *testing.T) {
	s := newStack(t)
	stop := make(chan struct{})
	defer close(stop)
	backendGaveUp := make(chan string, 4)
	startBackend(t, s.consul.Client(), "app-shared", quietStream(stop, backendGaveUp))
	s.tenant("acme", "free", catalog.TierShared, "pool-1")
	r := s.router(nil)
	waitFor(t, 10*time.Second, "served", func() bool {
		resp, _ := get(t, &http.Client{Timeout: 5 * time.Second}, r.url+"/t/acme/", nil)
		return resp.StatusCode == 200
	})

	for _, tc := range []struct{ name, extra string }{{"net/http path", netHTTPWay}, {"fast path", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(conn, "GET /t/acme/stream HTTP/1.1\r\nHost: router.test\r\nX-Test-Route: 1\r\n%s\r\n", tc.extra)
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%v %v", resp, err)
			}
			line, _ := bufio.NewReader(resp.Body).ReadString('\n')
			if line != "data: first\n" {
				t.Fatalf("first event %q", line)
			}
			if n := r.Inflight().Count("acme"); n != 1 {
				t.Fatalf("in flight while streaming: %d", n)
			}
			conn.Close() // the client goes away
			deadline := time.Now().Add(3 * time.Second)
			for r.Inflight().Count("acme") != 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			n := r.Inflight().Count("acme")
			gaveUp := false
			select {
			case <-backendGaveUp:
				gaveUp = true
			default:
			}
			t.Logf("3s after the client hung up: in flight %d, backend request cancelled %v", n, gaveUp)
			if n != 0 {
				t.Errorf("the abandoned request is still in flight 3s after the client hung up")
			}
		})
	}
}

// quietStream is a backend that sends one server-sent event and then
// nothing until stop, and reports the path of each request whose client
// (the router) gave up on it first.
func quietStream(stop <-chan struct{}, gaveUp chan<- string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select { // a quiet stream
		case <-r.Context().Done():
			gaveUp <- r.URL.Path
		case <-stop:
		}
	})
}
