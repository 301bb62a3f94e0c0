package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/switchyard/switchyard/router"
)

// certs put sends the files' PEM to PUT /v1/certificates/<name>; wrong
// usage is refused before anything is sent.
func TestCertsPut(t *testing.T) {
	type seen struct {
		method, path string
		body         map[string]string
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]string
		_ = json.NewDecoder(r.Body).Decode(&b)
		got <- seen{r.Method, r.URL.Path, b}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"name":"acme","dns_names":["app.acme.example"],"not_after":"2030-01-01T00:00:00Z"}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := os.WriteFile(cert, []byte("CERT"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, []byte("KEY"), 0o600); err != nil {
		t.Fatal(err)
	}
	api := []string{"-controller", srv.URL, "-token", "t"}
	if err := runCerts(context.Background(), append([]string{"put", "acme", "--cert", cert, "--key", key}, api...)); err != nil {
		t.Fatal(err)
	}
	s := <-got
	if s.method != "PUT" || s.path != "/v1/certificates/acme" || s.body["cert_pem"] != "CERT" || s.body["key_pem"] != "KEY" {
		t.Fatalf("sent %+v", s)
	}
	for _, args := range [][]string{{"put", "acme", "--cert", cert}, {"put", "--cert", cert, "--key", key}, {"ls"}} {
		if err := runCerts(context.Background(), append(args, api...)); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	select {
	case s := <-got:
		t.Fatalf("a refused usage sent %+v", s)
	default:
	}
}

// The edge flags fill the router's EdgeConfig; a CA file without a
// certificate is refused.
func TestEdgeFlags(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c router.EdgeConfig
	finish := addEdgeFlags(fs, &c)
	bad := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"-tls-listen", ":8443", "-tls-unknown-sni", "refuse", "-redirect-https", "-hsts-max-age", "1h", "-h2-max-streams", "64", "-backend-ca", bad}); err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":8443" || c.UnknownSNI != router.UnknownSNIRefuse || !c.RedirectHTTPS || c.HSTSMaxAge.Hours() != 1 || c.HTTP2.MaxConcurrentStreams != 64 {
		t.Fatalf("config %+v", c)
	}
	if err := finish(); err == nil {
		t.Fatal("a CA file without a certificate was accepted")
	}
}
