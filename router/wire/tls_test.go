package wire

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// testCert is a self-signed certificate for sni.test, and a pool trusting it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sni.test"}, DNSNames: []string{"sni.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// tlsFront starts a TLS server with cfg (its TLS config set here) and
// returns its address; it is shut down when the test ends.
func tlsFront(t *testing.T, cfg ServerConfig, cert tls.Certificate) string {
	t.Helper()
	cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}, Certificates: []tls.Certificate{cert}}
	s := NewServer(cfg)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l) //nolint:errcheck
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return l.Addr().String()
}

// On a TLS listener, http/1.1 (or no ALPN) is the fast path's and h2 is
// net/http's, served on the connection the server already handshook; a
// request handed off, and every request under NetHTTPOnly, reaches
// net/http with its Request.TLS (the SNI) as if net/http had accepted
// it; ResponseHeader is on every answer; OnConn tells which served it.
func TestTLSServerByALPN(t *testing.T) {
	cert, pool := testCert(t)
	fallback := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Engine", "net/http")
		if r.TLS == nil || r.TLS.ServerName != "sni.test" {
			w.WriteHeader(http.StatusTeapot) // net/http did not see the TLS state
		}
	})
	for _, c := range []struct {
		name        string
		alpn        []string
		handler     Handler
		netHTTPOnly bool
		wantProto   string
		wantEngine  string
		// OnConn's counts: connections the fast path took, and handed off.
		wantFast, wantHanded int32
	}{
		{"http/1.1: fast path", []string{"http/1.1"}, testHandler{}, false, "HTTP/1.1", "", 1, 0},
		{"no ALPN: fast path", nil, testHandler{}, false, "HTTP/1.1", "", 1, 0},
		{"h2: net/http", []string{"h2", "http/1.1"}, testHandler{}, false, "HTTP/2.0", "net/http", 0, 1},
		{"http/1.1 handed off by the handler", []string{"http/1.1"}, handOffHandler{}, false, "HTTP/1.1", "net/http", 1, 1},
		{"NetHTTPOnly: net/http", []string{"http/1.1"}, testHandler{}, true, "HTTP/1.1", "net/http", 0, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			var fast, handed atomic.Int32
			cfg := testServerConfig(5 * time.Second)
			cfg.Fallback, cfg.Handler, cfg.NetHTTPOnly = fallback, c.handler, c.netHTTPOnly
			cfg.ResponseHeader = http.Header{"Strict-Transport-Security": {"max-age=60"}}
			cfg.OnConn = func(h bool) {
				if h {
					handed.Add(1)
				} else {
					fast.Add(1)
				}
			}
			addr := tlsFront(t, cfg, cert)
			resp := tlsGet(t, addr, c.alpn, pool)
			if resp.StatusCode != 200 || resp.Proto != c.wantProto || resp.Header.Get("X-Engine") != c.wantEngine {
				t.Fatalf("%d %s engine %q, want 200 %s engine %q", resp.StatusCode, resp.Proto, resp.Header.Get("X-Engine"), c.wantProto, c.wantEngine)
			}
			if got := resp.Header.Values("Strict-Transport-Security"); len(got) != 1 || got[0] != "max-age=60" {
				t.Fatalf("Strict-Transport-Security %q, want [max-age=60]", got)
			}
			if fast.Load() != c.wantFast || handed.Load() != c.wantHanded {
				t.Fatalf("OnConn: fast %d, handed off %d; want %d, %d", fast.Load(), handed.Load(), c.wantFast, c.wantHanded)
			}
		})
	}
}

// tlsGet does GET /p over TLS with the ALPN list alpn (nil: none): with
// net/http's HTTP/2-only client when it offers h2, else HTTP/1.1 bytes.
func tlsGet(t *testing.T, addr string, alpn []string, pool *x509.CertPool) *http.Response {
	t.Helper()
	if slices.Contains(alpn, "h2") {
		protos := new(http.Protocols)
		protos.SetHTTP2(true)
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: protos,
			TLSClientConfig: &tls.Config{RootCAs: pool},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}}
		resp, err := hc.Get("https://sni.test/p")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	tc, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "sni.test", RootCAs: pool, NextProtos: alpn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(tc, "GET /p HTTP/1.1\r\nHost: sni.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// A client that connects and never finishes its handshake neither blocks
// Shutdown (it is cut short at once) nor the accept loop.
func TestTLSServerShutdownDuringHandshake(t *testing.T) {
	cert, pool := testCert(t)
	cfg := testServerConfig(time.Minute)
	cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}, Certificates: []tls.Certificate{cert}}
	s := NewServer(cfg)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	silent, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if resp := tlsGet(t, l.Addr().String(), []string{"http/1.1"}, pool); resp.StatusCode != 200 {
		t.Fatalf("a second client waited on the first's handshake: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a handshake pending: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("the silent connection is still open after Shutdown: %v", err)
	}
}
