package controller

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The verification fetch against a real HTTP server the domain is
// resolved to: only 200 with the token as the body verifies, within the
// size limit and the timeout, and a redirect may not leave the domain.
// The server's behaviour is chosen by the token asked for.
func TestFetchDomainToken(t *testing.T) {
	const domain = "app.acme.com"
	const prefix = "/.well-known/switchyard/"
	tokenServer := func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.TrimPrefix(r.URL.Path, prefix)))
	}
	other := httptest.NewServer(http.HandlerFunc(tokenServer))
	defer other.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.URL.Path, prefix)
		switch {
		case r.Host != domain || !strings.HasPrefix(r.URL.Path, prefix):
			http.Error(w, "wrong host or path", http.StatusMisdirectedRequest)
		case tok == "wrong-body":
			_, _ = w.Write([]byte("not-the-token"))
		case tok == "with-newline":
			_, _ = w.Write([]byte(tok + "\n"))
		case tok == "too-big":
			_, _ = w.Write([]byte(tok + strings.Repeat(" ", 5000)))
		case tok == "missing":
			http.NotFound(w, r)
		case tok == "slow":
			time.Sleep(time.Second)
			tokenServer(w, r)
		case tok == "elsewhere":
			http.Redirect(w, r, other.URL+r.URL.Path, http.StatusFound)
		case tok == "same-host" && r.URL.RawQuery == "":
			http.Redirect(w, r, r.URL.Path+"?moved=1", http.StatusFound)
		case tok == "loop":
			http.Redirect(w, r, r.URL.Path, http.StatusFound)
		default:
			tokenServer(w, r)
		}
	}))
	defer srv.Close()
	s := &Server{cfg: Config{Domains: DomainsConfig{VerifyResolve: map[string]string{domain: strings.TrimPrefix(srv.URL, "http://")},
		VerifyTimeout: 500 * time.Millisecond}}}
	s.cfg.Domains.SetDefaults()
	// Not in VerifyResolve: localhost is looked up and, being loopback,
	// refused unless private addresses are allowed.
	if err := s.fetchDomainToken(context.Background(), "localhost", "x"); !errors.Is(err, errVerification) || !strings.Contains(err.Error(), "not a public address") {
		t.Fatalf("fetch from localhost: %v, want a refusal of a non-public address", err)
	}
	open := &Server{cfg: s.cfg}
	open.cfg.Domains.VerifyAllowPrivate = true
	if err := open.fetchDomainToken(context.Background(), "localhost", "x"); err == nil || strings.Contains(err.Error(), "not a public address") {
		t.Fatalf("fetch from localhost with private addresses allowed: %v, want it dialled (and fail otherwise)", err)
	}
	cases := []struct {
		token string
		ok    bool
	}{
		{"0123456789abcdef0123456789abcdef", true},
		{"with-newline", true},
		{"same-host", true},
		{"wrong-body", false},
		{"missing", false},
		{"too-big", false},
		{"slow", false},
		{"elsewhere", false},
		{"loop", false},
	}
	for _, tc := range cases {
		t.Run(tc.token, func(t *testing.T) {
			err := s.fetchDomainToken(context.Background(), domain, tc.token)
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, errVerification) {
				t.Fatalf("error %v is not errVerification", err)
			}
		})
	}
}

func TestDomainsConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  DomainsConfig
		ok   bool
	}{
		{"empty", DomainsConfig{}, true},
		{"base and resolve", DomainsConfig{BaseDomain: "saas.test", VerifyResolve: map[string]string{"app.acme.com": "127.0.0.1:8080"}}, true},
		{"bad base", DomainsConfig{BaseDomain: "not a domain"}, false},
		{"resolve without port", DomainsConfig{VerifyResolve: map[string]string{"app.acme.com": "127.0.0.1"}}, false},
		{"resolve of a bad name", DomainsConfig{VerifyResolve: map[string]string{"*.acme.com": "127.0.0.1:1"}}, false},
		{"negative timeout", DomainsConfig{VerifyTimeout: -1}, false},
	}
	for _, tc := range cases {
		if err := tc.cfg.Validate(); tc.ok != (err == nil) {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	m, err := ParseVerifyResolve("App.Acme.com=127.0.0.1:1, shop.bolt.io=[::1]:2")
	if err != nil || m["app.acme.com"] != "127.0.0.1:1" || m["shop.bolt.io"] != "[::1]:2" || len(m) != 2 {
		t.Fatalf("ParseVerifyResolve = %v, %v", m, err)
	}
	if _, err := ParseVerifyResolve("app.acme.com"); err == nil {
		t.Fatal("an entry without = was accepted")
	}
}
