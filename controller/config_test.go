package controller

import (
	"context"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
)

func TestCommandProvisioner(t *testing.T) {
	ok := CommandProvisioner(`printf '{"id":"cl-%s","tier":"dedicated-cluster","service":"app-cl","dsn":"postgres://x@127.0.0.1:1/app"}' "$SWITCHYARD_TENANT"`)
	got, err := ok(context.Background(), "acme")
	if err != nil || got.ID != "cl-acme" || got.Tier != catalog.TierDedicatedCluster {
		t.Fatalf("provisioner: %+v %v", got, err)
	}
	for name, cmd := range map[string]string{"fails": "echo nope >&2; exit 3", "not json": "echo hello"} {
		if _, err := CommandProvisioner(cmd)(context.Background(), "acme"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Tokens: map[string]Role{"0123456789abcdef": RoleOperator}}
	good.SetDefaults()
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, edit := range map[string]func(*Config){
		"no tokens":    func(c *Config) { c.Tokens = nil },
		"short token":  func(c *Config) { c.Tokens = map[string]Role{"short": RoleViewer} },
		"bad role":     func(c *Config) { c.Tokens = map[string]Role{"0123456789abcdef": "root"} },
		"short secret": func(c *Config) { c.WebhookSecret = []byte("x") },
		"bad listen":   func(c *Config) { c.Listen = "nowhere" },
		"negative TTL": func(c *Config) { c.IdempotencyTTL = -time.Second },
	} {
		c := good
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ParseTokens("a:b,c"); err == nil {
		t.Error("ParseTokens accepted an entry without a role")
	}
}
