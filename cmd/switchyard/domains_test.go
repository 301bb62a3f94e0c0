package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
)

// What each domains verb asks the control API, and the verbs refused
// before any request.
func TestDomainsVerbs(t *testing.T) {
	type seen struct {
		method, path string
		body         map[string]any
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		_ = json.NewDecoder(r.Body).Decode(&b)
		got <- seen{r.Method, r.URL.Path, b}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"domain":"app.acme.com","tenant":"acme","state":"pending","token":"t","domains":[]}`))
	}))
	defer srv.Close()
	stdout := os.Stdout
	devnull, _ := os.Open(os.DevNull)
	os.Stdout = devnull
	defer func() { os.Stdout = stdout; devnull.Close() }()
	api := []string{"-controller", srv.URL, "-token", "t"}
	cases := []struct {
		args         []string
		method, path string
		domain       string // the body's domain, for add
		wantErr      bool
	}{
		{args: []string{"add", "acme", "app.acme.com"}, method: "POST", path: "/v1/tenants/acme/domains", domain: "app.acme.com"},
		{args: []string{"ls", "acme"}, method: "GET", path: "/v1/tenants/acme/domains"},
		{args: []string{"verify", "acme", "app.acme.com"}, method: "POST", path: "/v1/tenants/acme/domains/app.acme.com/verify"},
		{args: []string{"rm", "acme", "app.acme.com"}, method: "DELETE", path: "/v1/tenants/acme/domains/app.acme.com"},
		{args: []string{"add", "acme"}, wantErr: true},
		{args: []string{"verify"}, wantErr: true},
		{args: []string{"nonsense", "acme", "app.acme.com"}, wantErr: true},
	}
	for _, tc := range cases {
		err := runDomains(context.Background(), append(tc.args, api...))
		if tc.wantErr {
			if err == nil {
				t.Errorf("%v: no error", tc.args)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		s := <-got
		if s.method != tc.method || s.path != tc.path || (tc.domain != "" && s.body["domain"] != tc.domain) {
			t.Errorf("%v: sent %s %s %v, want %s %s domain %q", tc.args, s.method, s.path, s.body, tc.method, tc.path, tc.domain)
		}
	}
	select {
	case s := <-got:
		t.Fatalf("a refused verb sent %s %s", s.method, s.path)
	default:
	}
}
