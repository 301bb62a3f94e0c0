package integration

import (
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
)

// The net/http engine (TLS, HTTP/2, h2c) relays a response body of known
// length as it arrives: what the backend sent reaches the client while the
// backend still holds the rest (the router does not sit on it until the
// body is complete), and a body that arrives whole is relayed whole, with
// its Content-Length.
func TestRouterRelaysKnownLengthBodyAsItArrives(t *testing.T) {
	testContext(t)
	s := newStack(t)
	var mu sync.Mutex
	releases := map[string]chan struct{}{} // X-Test-Release -> closed when the rest may go
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		release := releases[r.Header.Get("X-Test-Release")]
		mu.Unlock()
		w.Header().Set("Content-Length", "10")
		if release == nil { // all at once
			_, _ = io.WriteString(w, "whole-body")
			return
		}
		_, _ = io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		case <-time.After(20 * time.Second):
		}
		_, _ = io.WriteString(w, "-last")
	})
	startBackend(t, s.consul.Client(), "app-shared", handler)
	s.tenant("acme", "free", catalog.TierShared, "pool-1")
	ca := newTestCA(t)
	ca.putCert(t, s.store, "default", time.Now().Add(30*24*time.Hour), "*.saas.test", "saas.test")
	e := s.edgeRouter(nil)
	cases := []struct {
		name  string
		hc    *http.Client
		url   string
		proto int
	}{
		{"TLS HTTP/2", e.tlsClient(ca, true), "https://saas.test/t/acme/relay", 2},
		{"TLS HTTP/1.1", e.tlsClient(ca, false), "https://saas.test/t/acme/relay", 1},
		{"h2c", &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Protocols: h2cOnly()}}, e.url + "/t/acme/relay", 2},
	}
	for i, c := range cases {
		t.Run(c.name+" in parts", func(t *testing.T) {
			key := strconv.Itoa(i)
			release := make(chan struct{})
			mu.Lock()
			releases[key] = release
			mu.Unlock()
			defer func() {
				select {
				case <-release:
				default:
					close(release)
				}
			}()
			req, _ := http.NewRequest("GET", c.url, nil)
			req.Header.Set("X-Test-Route", "1")
			req.Header.Set("X-Test-Release", key)
			resp, err := c.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.ProtoMajor != c.proto || resp.ContentLength != 10 {
				t.Fatalf("status %d over HTTP/%d, length %d", resp.StatusCode, resp.ProtoMajor, resp.ContentLength)
			}
			first := make(chan string, 1)
			go func() {
				b := make([]byte, 5)
				n, _ := io.ReadFull(resp.Body, b)
				first <- string(b[:n])
			}()
			select {
			case got := <-first:
				if got != "first" {
					t.Fatalf("first part %q", got)
				}
			case <-time.After(8 * time.Second):
				t.Fatal("the first part did not arrive while the backend held the rest: buffered")
			}
			close(release)
			rest, err := io.ReadAll(resp.Body)
			if err != nil || string(rest) != "-last" {
				t.Fatalf("rest %q %v", rest, err)
			}
		})
		t.Run(c.name+" whole", func(t *testing.T) {
			req, _ := http.NewRequest("GET", c.url, nil)
			req.Header.Set("X-Test-Route", "1")
			resp, err := c.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 200 || resp.ContentLength != 10 || string(body) != "whole-body" {
				t.Fatalf("status %d length %d body %q %v", resp.StatusCode, resp.ContentLength, body, err)
			}
		})
	}
}
