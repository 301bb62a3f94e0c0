package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

// tenants usage asks for the tenant's usage with the range given, and only that.
func TestTenantsUsageQuery(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.URL.Path + "?" + r.URL.RawQuery
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"points": [{"start": "2026-12-02T06:00:00Z", "requests": 3, "by_status_class": {"2xx": 3}}], "total": {"requests": 3}}`))
	}))
	defer srv.Close()
	api := []string{"-controller", srv.URL, "-token", "t", "-o", "json"}
	cases := []struct {
		args []string
		want string
	}{
		{nil, "/v1/tenants/acme/usage?"},
		{[]string{"--step", "5m"}, "/v1/tenants/acme/usage?step=5m"},
		{[]string{"--from", "2026-12-02T05:00:00Z", "--to", "1764655200", "--step", "1h"}, "/v1/tenants/acme/usage?from=2026-12-02T05%3A00%3A00Z&step=1h&to=1764655200"},
	}
	for _, tc := range cases {
		if err := runTenants(context.Background(), append(append([]string{"usage", "acme"}, tc.args...), api...)); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if q := <-got; q != tc.want {
			t.Errorf("%v: asked %s, want %s", tc.args, q, tc.want)
		}
	}
}
