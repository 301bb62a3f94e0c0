package orders

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"
)

func TestConfigValidate(t *testing.T) {
	client, err := api.NewClient(api.DefaultConfig()) // no I/O until used
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string // substring of the error; "" for valid
	}{
		{"default", func(*Config) {}, ""},
		{"explicit id", func(c *Config) { c.ServiceID = "app-shared-a"; c.Listen = "127.0.0.1:8081" }, ""},
		{"empty listen defaults", func(c *Config) { c.Listen = "" }, ""},
		{"bad listen", func(c *Config) { c.Listen = "localhost" }, "listen"},
		{"no service", func(c *Config) { c.ServiceName = "" }, "service name"},
		{"bad service", func(c *Config) { c.ServiceName = "App_Shared" }, "service name"},
		{"bad id", func(c *Config) { c.ServiceID = "a/b" }, "service id"},
		{"no consul", func(c *Config) { c.Consul = nil }, "consul"},
		{"negative drain", func(c *Config) { c.DrainDelay = -1 }, "drain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig("app-shared", client)
			tc.mod(&cfg)
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalidConfig)):
				t.Fatalf("error %v, want one mentioning %q wrapping ErrInvalidConfig", err, tc.want)
			}
			if _, nerr := New(cfg); (nerr == nil) != (err == nil) {
				t.Fatalf("New error %v disagrees with Validate %v", nerr, err)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter bool
	}{
		{"not found", fmt.Errorf("get: %w", errNotFound), 404, CodeNotFound, false},
		{"fenced", fmt.Errorf("insert order: %w", &pq.Error{Code: pqerror.RaiseException, Message: "switchyard: tenant acme is fenced"}), 503, CodeTenantFenced, true},
		{"other raise", &pq.Error{Code: pqerror.RaiseException, Message: "app: quantity too big"}, 500, CodeInternal, false},
		{"fence text, other code", &pq.Error{Code: pqerror.UniqueViolation, Message: "switchyard: tenant acme is fenced"}, 500, CodeInternal, false},
		{"admin shutdown", &pq.Error{Code: pqerror.AdminShutdown, Message: "terminating connection"}, 503, CodeDBUnavailable, true},
		{"read only", &pq.Error{Code: pqerror.ReadOnlySQLTransaction, Message: "read-only"}, 503, CodeDBUnavailable, true},
		{"missing database", &pq.Error{Code: pqerror.InvalidCatalogName, Message: "database does not exist"}, 503, CodeDBUnavailable, true},
		{"connection refused", fmt.Errorf("dial: %w", syscall.ECONNREFUSED), 503, CodeDBUnavailable, true},
		{"timeout", fmt.Errorf("query: %w", context.DeadlineExceeded), 503, CodeDBUnavailable, true},
		{"syntax error", &pq.Error{Code: pqerror.SyntaxError, Message: "syntax error at SELECT"}, 500, CodeInternal, false},
		{"field error", fieldError("item", "item is required"), 400, CodeInvalidField, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := classify(tc.err)
			if got.status != tc.status || got.body.Error != tc.code || got.retryAfter != tc.retryAfter {
				t.Fatalf("classify = %d %s retry=%v, want %d %s retry=%v", got.status, got.body.Error, got.retryAfter, tc.status, tc.code, tc.retryAfter)
			}
			if got.status >= http.StatusInternalServerError && (strings.Contains(got.body.Message, "SELECT") || strings.Contains(got.body.Message, "switchyard: tenant")) {
				t.Fatalf("message leaks the database error: %q", got.body.Message)
			}
		})
	}
}

func TestSchemaSQL(t *testing.T) {
	s := SchemaSQL()
	for _, want := range []string{"CREATE TABLE IF NOT EXISTS orders", "CREATE TABLE IF NOT EXISTS order_events", "PRIMARY KEY (tenant_id, id)", "ON DELETE CASCADE"} {
		if !strings.Contains(s, want) {
			t.Errorf("schema lacks %q", want)
		}
	}
}
