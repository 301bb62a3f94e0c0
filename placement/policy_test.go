package placement

import (
	"errors"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/catalog"
)

func TestTierFor(t *testing.T) {
	def := catalog.DefaultPlanPolicy()
	bad := catalog.PlanPolicy{Tiers: map[string]catalog.Tier{"weird": "moon"}}
	cases := []struct {
		name   string
		policy catalog.PlanPolicy
		plan   string
		want   catalog.Tier
		err    error
	}{
		{"free", def, "free", catalog.TierShared, nil},
		{"starter", def, "starter", catalog.TierShared, nil},
		{"pro", def, "pro", catalog.TierDedicatedDB, nil},
		{"enterprise", def, "enterprise", catalog.TierDedicatedCluster, nil},
		{"unknown plan", def, "platinum", "", ErrUnknownPlan},
		{"empty plan", def, "", "", ErrUnknownPlan},
		{"empty policy", catalog.PlanPolicy{}, "free", "", ErrUnknownPlan},
		{"invalid tier", bad, "weird", "", ErrInvalidConfig},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := TierFor(c.policy, c.plan)
			if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			if got != c.want {
				t.Fatalf("tier = %q, want %q", got, c.want)
			}
		})
	}
	_, err := TierFor(def, "platinum")
	if !strings.Contains(err.Error(), "enterprise, free, pro, starter") {
		t.Fatalf("error should list known plans: %v", err)
	}
}

func TestEligible(t *testing.T) {
	eu := pool("eu-1", 0, "region", "eu", "residency", "de", "compliance", "hipaa")
	cases := []struct {
		name   string
		tenant map[string]string
		target catalog.Target
		cfg    Config
		err    error
		msg    string
	}{
		{name: "no labels", target: eu},
		{name: "region match", tenant: kv("region", "eu"), target: eu},
		{name: "all match", tenant: kv("region", "eu", "residency", "de", "compliance", "hipaa"), target: eu},
		{name: "region mismatch", tenant: kv("region", "us"), target: eu, err: ErrConstraint, msg: "tenant requires region=us, target has region=eu"},
		{name: "residency mismatch", tenant: kv("residency", "fr"), target: eu, err: ErrConstraint, msg: "residency=fr"},
		{name: "compliance missing on target", tenant: kv("compliance", "pci"), target: pool("p", 0), err: ErrConstraint, msg: "target has no compliance label"},
		{name: "unconstrained key ignored", tenant: kv("team", "blue"), target: eu},
		{name: "target extra labels fine", tenant: kv("region", "eu"), target: pool("p", 0, "region", "eu", "disk", "ssd")},
		{name: "two failures named", tenant: kv("region", "us", "residency", "us"), target: eu, err: ErrConstraint, msg: "region=us, target has region=eu; tenant requires residency=us"},
		{name: "custom keys", tenant: kv("team", "blue"), target: eu, cfg: Config{ConstraintKeys: []string{"team"}}, err: ErrConstraint, msg: "team=blue"},
		{name: "custom keys drop region", tenant: kv("region", "us"), target: eu, cfg: Config{ConstraintKeys: []string{"team"}}},
		{name: "empty keys disable", tenant: kv("region", "us"), target: eu, cfg: Config{ConstraintKeys: []string{}}},
		{name: "cordoned", target: catalog.Target{ID: "c", Cordoned: true}, err: ErrCordoned, msg: "takes no new tenants"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Eligible(catalog.Tenant{ID: "t", Labels: c.tenant}, c.target, c.cfg)
			if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			if err != nil && !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err %q does not say %q", err, c.msg)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  RebalanceConfig
		ok   bool
	}{
		{"zero", RebalanceConfig{}, true},
		{"full", RebalanceConfig{Config: Config{Headroom: Headroom{0.2}, ConstraintKeys: []string{"a"}}, Metric: MetricRPS, Spread: 0.05, MaxMoves: 10}, true},
		{"negative headroom", RebalanceConfig{Config: Config{Headroom: Headroom{-0.1}}}, false},
		{"full headroom", RebalanceConfig{Config: Config{Headroom: Headroom{1}}}, false},
		{"empty key", RebalanceConfig{Config: Config{ConstraintKeys: []string{""}}}, false},
		{"bad metric", RebalanceConfig{Metric: "cpu"}, false},
		{"negative spread", RebalanceConfig{Spread: -0.1}, false},
		{"huge spread", RebalanceConfig{Spread: 1}, false},
		{"negative moves", RebalanceConfig{MaxMoves: -1}, false},
	}
	for _, c := range cases {
		err := c.cfg.Validate()
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
			t.Errorf("%s: err = %v, ok want %v", c.name, err, c.ok)
		}
	}
	if got := (Config{ConstraintKeys: []string{"a", "b", "a"}}).constraintKeys(); strings.Join(got, ",") != "a,b" {
		t.Errorf("constraint keys not deduplicated: %v", got)
	}
}
