package router

import (
	"crypto/tls"
	"net/http"
	"net/http/httputil"
	"reflect"
	"testing"
)

// setXForwarded sets what httputil's SetXForwarded sets on an outbound
// header with no X-Forwarded-* left.
func TestSetXForwardedMatchesHTTPUtil(t *testing.T) {
	for _, c := range []struct {
		name       string
		remoteAddr string
		host       string
		tls        bool
	}{
		{"ipv4 plaintext", "10.1.2.3:5555", "acme.saas.test", false},
		{"ipv6 over TLS", "[2001:db8::1]:443", "app.acme.example", true},
		{"no port: no X-Forwarded-For", "10.1.2.3", "saas.test", false},
		{"no Host", "127.0.0.1:1", "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := &http.Request{RemoteAddr: c.remoteAddr, Host: c.host, Header: http.Header{}}
			if c.tls {
				in.TLS = &tls.ConnectionState{}
			}
			want := http.Header{"Accept": {"*/*"}}
			(&httputil.ProxyRequest{In: in, Out: &http.Request{Header: want}}).SetXForwarded()
			got := http.Header{"Accept": {"*/*"}}
			setXForwarded(in, got, make([]string, 3))
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}
}
