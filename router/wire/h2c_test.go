package wire

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"
)

// handOffRequests hands every request to net/http (as the router does for
// a tenant whose backends speak HTTP/2).
type handOffRequests struct{ c *Conn }

func (r handOffRequests) ServeRequest(*RequestHead) bool { r.c.HandOff(); return false }
func (r handOffRequests) Refuse(error)                   {}

type handOffHandler struct{}

func (handOffHandler) Open(c *Conn) RequestServer { return handOffRequests{c} }

// A connection starting with the HTTP/2 preface goes to net/http and is
// served as h2c when H2C is on (never when off); the fast path keeps
// HTTP/1.1; a request the handler hands off is served by net/http whole.
func TestH2CPrefaceAndHandOff(t *testing.T) {
	fallback := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Engine", "net/http")
		w.Write([]byte(r.URL.Path)) //nolint:errcheck
	})
	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	h1 := new(http.Protocols)
	h1.SetHTTP1(true)
	for _, c := range []struct {
		name        string
		h2cOn       bool
		handler     Handler
		client      *http.Protocols
		wantProto   int
		wantEngine  string
		wantFailure bool
	}{
		{"h2c on, h2c client", true, testHandler{}, h2c, 2, "net/http", false},
		{"h2c on, HTTP/1.1 client: fast path", true, testHandler{}, h1, 1, "", false},
		{"h2c off, h2c client", false, testHandler{}, h2c, 0, "", true},
		{"hand-off from the fast path", true, handOffHandler{}, h1, 1, "net/http", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testServerConfig(5 * time.Second)
			cfg.Fallback, cfg.H2C, cfg.Handler = fallback, c.h2cOn, c.handler
			s := NewServer(cfg)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go s.Serve(l) //nolint:errcheck
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = s.Shutdown(ctx)
			}()
			hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Protocols: c.client}}
			defer hc.CloseIdleConnections()
			resp, err := hc.Get("http://" + l.Addr().String() + "/p")
			if c.wantFailure {
				if err == nil {
					resp.Body.Close()
					if resp.ProtoMajor == 2 {
						t.Fatal("served h2c with H2C off")
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.ProtoMajor != c.wantProto || resp.Header.Get("X-Engine") != c.wantEngine || resp.StatusCode != 200 {
				t.Fatalf("HTTP/%d %d engine %q, want HTTP/%d engine %q", resp.ProtoMajor, resp.StatusCode, resp.Header.Get("X-Engine"), c.wantProto, c.wantEngine)
			}
		})
	}
}
