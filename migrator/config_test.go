package migrator

import (
	"testing"
	"time"
)

func TestConfigDefaultsAndValidate(t *testing.T) {
	var zero Config
	zero.SetDefaults()
	if err := zero.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if zero.PGBinDir != DefaultPGBinDir || zero.LockTTL != 10*time.Second || zero.ID == "" || zero.Hooks == nil {
		t.Fatalf("defaults not filled in: %+v", zero)
	}
	cases := []struct {
		name string
		edit func(*Config)
	}{
		{"absolute prefix", func(c *Config) { c.Prefix = "/switchyard" }},
		{"blank prefix", func(c *Config) { c.Prefix = " " }},
		{"id with a slash", func(c *Config) { c.ID = "a/b" }},
		{"negative lock ttl", func(c *Config) { c.LockTTL = -time.Second }},
		{"negative convergence window", func(c *Config) { c.ConvergenceWindow = -time.Second }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := Config{}
			cfg.SetDefaults()
			c.edit(&cfg)
			if err := cfg.Validate(); err == nil {
				t.Fatalf("%+v validated", cfg)
			}
		})
	}
}
