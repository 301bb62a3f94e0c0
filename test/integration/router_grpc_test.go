package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router"
)

// grpcStack adds gRPC targets to an edge stack: grpc-1 (h2c backends
// serving the echo service), grpc-down (no instance at all), tenants
// grpcco and grpclim (plan "starter", limited to a burst of 1) on grpc-1,
// grpcdown on grpc-down.
func newGRPCStack(t *testing.T) (*edgeStack, *edgeRouter) {
	t.Helper()
	es := newEdgeStack(t)
	ctx := testContext(t)
	for _, tg := range []catalog.Target{
		{ID: "grpc-1", Tier: catalog.TierShared, Service: "app-grpc", DSN: "postgres://postgres@127.0.0.1:1/g", BackendProtocol: catalog.BackendH2C},
		{ID: "grpc-down", Tier: catalog.TierShared, Service: "app-grpc-none", DSN: "postgres://postgres@127.0.0.1:1/g", BackendProtocol: catalog.BackendH2C},
		{ID: "grpc-tls", Tier: catalog.TierShared, Service: "app-grpc-tls", DSN: "postgres://postgres@127.0.0.1:1/g", BackendProtocol: catalog.BackendH2},
	} {
		if err := es.store.CreateTarget(ctx, tg); err != nil {
			t.Fatal(err)
		}
	}
	startGRPCBackend(t, es.consul.Client(), "app-grpc")
	// The h2 (TLS) backend's certificate names its address, from the test CA
	// the router trusts for backends.
	certPEM, keyPEM, _ := es.ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1")
	pair, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	startGRPCBackend(t, es.consul.Client(), "app-grpc-tls", grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}})))
	es.tenant("grpcco", "free", catalog.TierShared, "grpc-1")
	es.tenant("grpcsec", "free", catalog.TierShared, "grpc-tls")
	es.tenant("grpclim", "starter", catalog.TierShared, "grpc-1")
	es.tenant("grpcdown", "free", catalog.TierShared, "grpc-down")
	setPlanLimits(t, es.store, "starter", catalog.Limits{RequestsPerSecond: 0.01, Burst: 1})
	return es, es.edgeRouter(func(c *router.Config) { c.TLS.BackendRootCAs = es.ca.pool })
}

// grpcConn dials the router: over TLS (SNI and :authority authority) or
// over h2c on the plaintext listener.
func grpcConn(t *testing.T, es *edgeStack, e *edgeRouter, overTLS bool, authority string) *grpc.ClientConn {
	t.Helper()
	target, creds := "passthrough:///"+strings.TrimPrefix(e.url, "http://"), insecure.NewCredentials()
	if overTLS {
		target = "passthrough:///" + e.tlsAddr
		creds = credentials.NewTLS(&tls.Config{RootCAs: es.ca.pool, ServerName: authority})
	}
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds), grpc.WithAuthority(authority),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func unary(ctx context.Context, cc *grpc.ClientConn, msg string) (string, error) {
	in, out := []byte(msg), []byte(nil)
	err := cc.Invoke(ctx, "/"+echoService+"/Unary", &in, &out)
	return string(out), err
}

// A Go gRPC client reaches a gRPC backend through the router: unary,
// server-streaming and bidi, over TLS (by subdomain and by token) and
// h2c; trailers (the call's status) pass through.
func TestRouterGRPCThroughToBackend(t *testing.T) {
	es, e := newGRPCStack(t)
	tok := router.SignToken(jwtSecret, "grpcco", time.Hour)
	for _, c := range []struct {
		name      string
		overTLS   bool
		authority string
		md        metadata.MD
	}{
		{"TLS by subdomain", true, "grpcco.saas.test", nil},
		{"TLS by token", true, "saas.test", metadata.Pairs("authorization", "Bearer "+tok)},
		{"h2c by subdomain", false, "grpcco.saas.test", nil},
		{"to an h2 (TLS) backend", true, "grpcsec.saas.test", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			ctx = metadata.NewOutgoingContext(ctx, c.md)
			cc := grpcConn(t, es, e, c.overTLS, c.authority)
			tenant := "grpcco"
			if strings.HasPrefix(c.authority, "grpcsec.") {
				tenant = "grpcsec"
			}
			if got, err := unary(ctx, cc, "hi"); err != nil || got != tenant+":hi" {
				t.Fatalf("unary: %q %v", got, err)
			}
			checkServerStream(ctx, t, cc)
			checkBidi(ctx, t, cc, tenant)
		})
	}
	// A plaintext HTTP/1.1 request for a tenant whose backends speak h2c
	// leaves the fast path for net/http, which forwards it over h2c: the
	// gRPC server answers it (415: not a gRPC call), not a 502.
	resp, err := http.Get(e.url + "/t/grpcco/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("HTTP/1.1 to an h2c backend: %d, want the gRPC server's 415", resp.StatusCode)
	}
}

func checkServerStream(ctx context.Context, t *testing.T, cc *grpc.ClientConn) {
	t.Helper()
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/"+echoService+"/Count")
	if err != nil {
		t.Fatal(err)
	}
	n := []byte("5")
	if err := st.SendMsg(&n); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		var m []byte
		if err := st.RecvMsg(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("server stream: %v", err)
		}
		got = append(got, string(m))
	}
	if strings.Join(got, ",") != "0,1,2,3,4" {
		t.Fatalf("server stream got %v", got)
	}
}

func checkBidi(ctx context.Context, t *testing.T, cc *grpc.ClientConn, tenant string) {
	t.Helper()
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/"+echoService+"/Chat")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ { // each answer arrives before the next message is sent: truly both ways
		m := []byte("m" + strconv.Itoa(i))
		if err := st.SendMsg(&m); err != nil {
			t.Fatal(err)
		}
		var r []byte
		if err := st.RecvMsg(&r); err != nil || string(r) != tenant+":m"+strconv.Itoa(i) {
			t.Fatalf("bidi %d: %q %v", i, r, err)
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var r []byte
	if err := st.RecvMsg(&r); !errors.Is(err, io.EOF) {
		t.Fatalf("bidi end: %v (want the OK status in trailers)", err)
	}
}

// When the router answers a gRPC call itself, the client gets a gRPC
// status, not an HTTP error page.
func TestRouterGRPCStatusFromRouter(t *testing.T) {
	es, e := newGRPCStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lim := grpcConn(t, es, e, true, "grpclim.saas.test")
	if _, err := unary(ctx, lim, "first"); err != nil { // the burst of 1
		t.Fatalf("first call of a limited tenant: %v", err)
	}
	for _, c := range []struct {
		name      string
		overTLS   bool
		authority string
		want      codes.Code
	}{
		{"unknown tenant", true, "nosuch.saas.test", codes.NotFound},
		{"unknown tenant over h2c", false, "nosuch.saas.test", codes.NotFound},
		{"rate limited", true, "grpclim.saas.test", codes.ResourceExhausted},
		{"no healthy instance", true, "grpcdown.saas.test", codes.Unavailable},
		{"no tenant named", true, "saas.test", codes.InvalidArgument},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := unary(ctx, grpcConn(t, es, e, c.overTLS, c.authority), "x")
			if status.Code(err) != c.want {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

// Rapid reset (CVE-2023-44487): a client opening streams and resetting
// them at once, as fast as it can, on one connection. The router's HTTP/2
// server runs at most MaxConcurrentStreams handlers per connection and
// sends GOAWAY when more queue up; another tenant's requests meanwhile all
// succeed.
func TestRouterH2RapidResetDoesNotHurtOthers(t *testing.T) {
	es := newEdgeStack(t)
	e := es.edgeRouter(func(c *router.Config) { c.TLS.HTTP2.MaxConcurrentStreams = 2 }) // 8 waiting handlers end the connection
	other := e.tlsClient(es.ca, true)
	var total, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := other.Get("https://globex.saas.test/ok")
				total.Add(1)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	sent, goaway := rapidReset(t, strings.TrimPrefix(e.url, "http://"), 20000)
	close(stop)
	wg.Wait()
	t.Logf("attacker: %d streams opened and reset, connection ended by: %s; the other tenant: %d requests, %d failed", sent, goaway, total.Load(), failed.Load())
	if failed.Load() != 0 || total.Load() == 0 {
		t.Fatalf("the other tenant: %d of %d requests failed", failed.Load(), total.Load())
	}
	if goaway != "GOAWAY ENHANCE_YOUR_CALM" {
		t.Fatalf("the attacking connection was not cut off (%s)", goaway)
	}
	// The router still serves the attacker's tenant on a new connection.
	resp, err := other.Get("https://acme.saas.test/after")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the attack: %v %v", resp, err)
	}
	resp.Body.Close()
}

// rapidReset opens n streams on one h2c connection to addr, each reset
// right after its HEADERS, and reports how many it sent and how the
// connection ended (GOAWAY code, or "still open").
func rapidReset(t *testing.T, addr string, n int) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "acme.saas.test"}, {":path", "/rapid"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := hb.Bytes()
	ended := make(chan string, 1)
	go func() { ended <- readUntilGoAway(fr) }()
	sent := 0
	for i := 0; i < n; i++ {
		id := uint32(2*i + 1)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}); err != nil {
			break
		}
		if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			break
		}
		sent++
	}
	select {
	case how := <-ended:
		return sent, how
	case <-time.After(20 * time.Second): // the router may still be reading what the kernel buffered
		return sent, "still open"
	}
}

func readUntilGoAway(fr *http2.Framer) string {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return "read error: " + err.Error()
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			return fmt.Sprintf("GOAWAY %v", ga.ErrCode)
		}
	}
}
