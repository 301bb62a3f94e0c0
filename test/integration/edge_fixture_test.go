package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/router"
)

// The TLS, HTTP/2 and gRPC tests' fixture: a test CA made in-process,
// certificates it issues stored in Consul through the catalog, a router
// with a TLS listener, and a gRPC test service defined without protoc (a
// hand-registered ServiceDesc over a raw-bytes codec).

// testCA issues certificates for the tests.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pool    *x509.CertPool
	pemFile string // the CA certificate, for curl --cacert
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "switchyard test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	ca.pemFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca.pemFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

var serials = big.NewInt(100)

// issue returns a PEM certificate for names (DNS names; an IP address
// goes in as one), valid until notAfter, and its PEM key.
func (ca *testCA) issue(t testing.TB, notAfter time.Time, names ...string) (certPEM, keyPEM string, serial *big.Int) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial = new(big.Int).Add(serials, big.NewInt(1))
	serials = serial
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})), serial
}

// putCert issues a certificate for names and stores it in Consul as name.
func (ca *testCA) putCert(t testing.TB, store *catalog.Store, name string, notAfter time.Time, names ...string) *big.Int {
	t.Helper()
	certPEM, keyPEM, serial := ca.issue(t, notAfter, names...)
	if _, err := store.PutCertificate(context.Background(), catalog.Certificate{Name: name, CertPEM: certPEM, KeyPEM: keyPEM}); err != nil {
		t.Fatalf("put certificate %s: %v", name, err)
	}
	return serial
}

// edgeRouter is a router with a TLS listener.
type edgeRouter struct {
	*runningRouter
	tlsAddr string // 127.0.0.1:port
	port    string
}

func (s *stack) edgeRouter(edit func(*router.Config)) *edgeRouter {
	s.t.Helper()
	rr := s.router(func(c *router.Config) {
		withTLS(c)
		if edit != nil {
			edit(c)
		}
	})
	return asEdge(s.t, rr)
}

// withTLS gives a router config a TLS listener on a free port.
func withTLS(c *router.Config) { c.TLS.Listen = "127.0.0.1:0" }

// asEdge is a running router started with a TLS listener (withTLS).
func asEdge(t testing.TB, rr *runningRouter) *edgeRouter {
	t.Helper()
	addr, err := rr.TLSAddr(context.Background())
	if err != nil || addr == "" {
		t.Fatalf("tls address: %q %v", addr, err)
	}
	_, port, _ := net.SplitHostPort(addr)
	return &edgeRouter{runningRouter: rr, tlsAddr: addr, port: port}
}

// tlsClient is an HTTP client dialing the router's TLS listener whatever
// the URL's host (so SNI and Host are the URL's), HTTP/2 if h2.
func (e *edgeRouter) tlsClient(ca *testCA, h2 bool) *http.Client {
	protos := new(http.Protocols)
	if h2 {
		protos.SetHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		Protocols:       protos,
		TLSClientConfig: &tls.Config{RootCAs: ca.pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, e.tlsAddr)
		},
	}}
}

// peerCert makes a TLS handshake with serverName and returns the leaf the
// router served (verification off: the test inspects what it got).
func (e *edgeRouter) peerCert(serverName string) (*x509.Certificate, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.tlsAddr,
		&tls.Config{ServerName: serverName, InsecureSkipVerify: true}) //nolint:gosec // the test inspects the served certificate
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// rawCodec is the gRPC test service's codec: messages are raw bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "raw" }

// The echo service: Unary answers "<tenant>:<msg>" (the tenant from the
// router's X-Tenant-Id), Count streams n messages, Chat echoes each message.
const echoService = "switchyard.test.Echo"

type echoServer interface{}

func tenantOf(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-tenant-id"); len(v) == 1 {
		return v[0]
	}
	return "?"
}

var echoDesc = grpc.ServiceDesc{
	ServiceName: echoService,
	HandlerType: (*echoServer)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "Unary", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		var in []byte
		if err := dec(&in); err != nil {
			return nil, err
		}
		out := []byte(tenantOf(ctx) + ":" + string(in))
		return &out, nil
	}}},
	Streams: []grpc.StreamDesc{
		{StreamName: "Count", ServerStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
			var in []byte
			if err := ss.RecvMsg(&in); err != nil {
				return err
			}
			n, _ := strconv.Atoi(string(in))
			for i := 0; i < n; i++ {
				out := []byte(strconv.Itoa(i))
				if err := ss.SendMsg(&out); err != nil {
					return err
				}
			}
			return nil
		}},
		{StreamName: "Chat", ServerStreams: true, ClientStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
			for {
				var in []byte
				if err := ss.RecvMsg(&in); errors.Is(err, io.EOF) {
					return nil
				} else if err != nil {
					return err
				}
				out := append([]byte(tenantOf(ss.Context())+":"), in...)
				if err := ss.SendMsg(&out); err != nil {
					return err
				}
			}
		}},
	},
}

// startGRPCBackend serves the echo service over h2c (or over TLS, given
// grpc.Creds) and registers it in Consul as service (with a TCP check).
func startGRPCBackend(t testing.TB, consul *api.Client, service string, opts ...grpc.ServerOption) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(append(opts, grpc.ForceServerCodec(rawCodec{}))...)
	srv.RegisterService(&echoDesc, nil)
	go func() { _ = srv.Serve(ln) }()
	addr := ln.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	id := service + "-" + addr
	err = consul.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: service, Address: "127.0.0.1", Port: p,
		Check: &api.AgentServiceCheck{TCP: addr, Interval: "300ms", Timeout: "2s", DeregisterCriticalServiceAfter: "1m", Status: api.HealthPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(); _ = consul.Agent().ServiceDeregister(id) })
	return addr
}
