package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/switchyard/switchyard/router"
)

// addEdgeFlags adds the router's TLS, HTTP/2 and redirect flags; the
// returned function finishes the config after Parse (reads the CA file).
func addEdgeFlags(fs *flag.FlagSet, c *router.EdgeConfig) func() error {
	fs.StringVar(&c.Listen, "tls-listen", "", "TLS listener address (HTTP/1.1 and h2 by ALPN; certificates from Consul by SNI); empty: none")
	fs.StringVar(&c.DefaultCert, "tls-default-cert", "default", "name of the certificate served for a name no certificate covers (the base domain's wildcard)")
	fs.StringVar(&c.UnknownSNI, "tls-unknown-sni", router.UnknownSNIDefault, "a server name no certificate covers: default (serve the default certificate) or refuse (fail the handshake)")
	fs.DurationVar(&c.ExpiryWarning, "tls-expiry-warning", 21*24*time.Hour, "certificates expiring sooner show in /readyz and /metrics")
	fs.DurationVar(&c.HSTSMaxAge, "hsts-max-age", 0, "send Strict-Transport-Security with this max-age on the TLS listener (0: off)")
	fs.BoolVar(&c.HSTSIncludeSubdomains, "hsts-include-subdomains", false, "add includeSubDomains to Strict-Transport-Security")
	fs.BoolVar(&c.RedirectHTTPS, "redirect-https", false, "the plaintext listener redirects every request to https (308) and proxies nothing")
	fs.BoolVar(&c.DisableH2C, "no-h2c", false, "do not serve h2c (HTTP/2 with prior knowledge) on the plaintext listener")
	fs.IntVar(&c.HTTP2.MaxConcurrentStreams, "h2-max-streams", 128, "HTTP/2 streams per connection")
	fs.IntVar(&c.HTTP2.MaxReadFrameSize, "h2-max-frame", 64<<10, "largest HTTP/2 frame read")
	fs.IntVar(&c.HTTP2.MaxReceiveBufferPerStream, "h2-stream-window", 256<<10, "HTTP/2 flow-control window per stream")
	fs.IntVar(&c.HTTP2.MaxReceiveBufferPerConnection, "h2-conn-window", 1<<20, "HTTP/2 flow-control window per connection")
	caFile := fs.String("backend-ca", "", "PEM file of the CAs trusted for h2 (TLS) backends (default: the system roots)")
	return func() error {
		if *caFile == "" {
			return nil
		}
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("backend CA: %w", err)
		}
		c.BackendRootCAs = x509.NewCertPool()
		if !c.BackendRootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("backend CA %s: no PEM certificate in it", *caFile)
		}
		return nil
	}
}

// runCerts: switchyard certs put <name> --cert chain.pem --key key.pem.
func runCerts(ctx context.Context, args []string) error {
	verb, rest := splitFirstArg(args)
	fs := flag.NewFlagSet("certs "+verb, flag.ContinueOnError)
	c := addAPIFlags(fs)
	certFile := fs.String("cert", "", "PEM certificate chain, leaf first")
	keyFile := fs.String("key", "", "PEM private key (sent to the control API, never printed)")
	name, rest := splitFirstArg(rest)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if verb != "put" || name == "" || *certFile == "" || *keyFile == "" {
		return errors.New("usage: switchyard certs put <name> --cert chain.pem --key key.pem")
	}
	certPEM, err := os.ReadFile(*certFile)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	var info struct {
		Name     string    `json:"name"`
		DNSNames []string  `json:"dns_names"`
		NotAfter time.Time `json:"not_after"`
	}
	if _, err := c.do(ctx, "PUT", "/v1/certificates/"+name, map[string]string{"cert_pem": string(certPEM), "key_pem": string(keyPEM)}, &info); err != nil {
		return err
	}
	fmt.Printf("certificate %s: %v, expires %s\n", info.Name, info.DNSNames, info.NotAfter.Format(time.RFC3339))
	return nil
}
