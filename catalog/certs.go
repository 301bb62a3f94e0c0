package catalog

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// Certificate is a TLS certificate chain and its private key, stored under
// Keys.Certificate(Name) for every router to serve by SNI. The key is
// written by the control API and read by routers only: it never appears in
// an API answer or a log (String and the JSON of CertificateInfo leave it out).
type Certificate struct {
	Name    string    `json:"name"`
	CertPEM string    `json:"cert_pem"`
	KeyPEM  string    `json:"key_pem"`
	Updated time.Time `json:"updated"`
}

// ErrBadCertificate: a certificate that cannot be served (unparsable PEM,
// a key that does not match, no DNS names, or expired).
var ErrBadCertificate = errors.New("bad certificate")

// CertificateInfo is what may be shown of a certificate: never its key.
type CertificateInfo struct {
	Name      string    `json:"name"`
	DNSNames  []string  `json:"dns_names"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Updated   time.Time `json:"updated"`
}

// String never prints the key.
func (c Certificate) String() string { return "certificate " + c.Name }

// Parse checks the certificate and its key and returns the pair, with its
// leaf parsed, and what may be shown of it.
func (c Certificate) Parse(now time.Time) (*tls.Certificate, CertificateInfo, error) {
	if !ValidCertName(c.Name) {
		return nil, CertificateInfo{}, fmt.Errorf("%w: name %q must be lowercase letters, digits, '.', '-' or '_' (1-128)", ErrBadCertificate, c.Name)
	}
	pair, err := tls.X509KeyPair([]byte(c.CertPEM), []byte(c.KeyPEM))
	if err != nil {
		// The error of X509KeyPair names no key material.
		return nil, CertificateInfo{}, fmt.Errorf("%w %q: %w", ErrBadCertificate, c.Name, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, CertificateInfo{}, fmt.Errorf("%w %q: %w", ErrBadCertificate, c.Name, err)
		}
		pair.Leaf = leaf
	}
	if len(leaf.DNSNames) == 0 {
		return nil, CertificateInfo{}, fmt.Errorf("%w %q: it names no DNS names (subjectAltName)", ErrBadCertificate, c.Name)
	}
	if now.After(leaf.NotAfter) {
		return nil, CertificateInfo{}, fmt.Errorf("%w %q: expired at %s", ErrBadCertificate, c.Name, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	info := CertificateInfo{Name: c.Name, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Updated: c.Updated}
	for _, n := range leaf.DNSNames {
		info.DNSNames = append(info.DNSNames, strings.ToLower(n))
	}
	return &pair, info, nil
}

// ValidCertName: 1-128 lowercase letters, digits, '.', '-', '_', not
// starting with '.'.
func ValidCertName(s string) bool {
	if len(s) == 0 || len(s) > 128 || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// PutCertificate checks c and stores it (replacing any of the same name);
// every router picks it up through its watch, without a restart.
func (s *Store) PutCertificate(ctx context.Context, c Certificate) (CertificateInfo, error) {
	c.Updated = time.Now().UTC()
	_, info, err := c.Parse(c.Updated)
	if err != nil {
		return CertificateInfo{}, err
	}
	data, err := json.Marshal(c)
	if err != nil {
		return CertificateInfo{}, err
	}
	if _, err := s.client.KV().Put(&api.KVPair{Key: s.keys.Certificate(c.Name), Value: data}, writeOpts(ctx)); err != nil {
		return CertificateInfo{}, fmt.Errorf("put certificate %q: %w", c.Name, err)
	}
	return info, nil
}

// DecodeCertificate reads a stored certificate.
func DecodeCertificate(data []byte) (Certificate, error) {
	var c Certificate
	if err := json.Unmarshal(data, &c); err != nil {
		return Certificate{}, fmt.Errorf("%w: %w", ErrBadCertificate, err)
	}
	return c, nil
}

// NamesUnderBase lists the names (a wildcard by its parent) a certificate
// covers that are the base domain or under it. Only the default
// certificate may cover those: any other is for a custom domain, and must
// never be served for a tenant's subdomain.
func NamesUnderBase(names []string, base string) []string {
	var out []string
	for _, n := range names {
		if UnderDomain(strings.TrimPrefix(n, "*."), base) {
			out = append(out, n)
		}
	}
	return out
}
