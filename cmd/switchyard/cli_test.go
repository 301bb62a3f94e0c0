package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
)

// rebalance and targets drain: a dry run unless --apply; the old --dry-run
// flag still parses; contradictions are refused.
func TestPlanFlags(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		wantApply bool
		wantErr   bool
	}{
		{nil, false, false},
		{[]string{"--dry-run"}, false, false},
		{[]string{"--dry-run=true"}, false, false},
		{[]string{"--apply"}, true, false},
		{[]string{"--apply=true"}, true, false},
		{[]string{"--apply", "--dry-run=false"}, true, false},
		{[]string{"--apply=false"}, false, false},
		{[]string{"--apply", "--dry-run"}, false, true},
		{[]string{"--dry-run=false"}, false, true},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		mode := addPlanFlags(fs, "test")
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("%v: parse: %v", tc.args, err)
		}
		apply, err := mode.applying()
		if (err != nil) != tc.wantErr || apply != tc.wantApply {
			t.Errorf("%v: apply=%v err=%v, want apply=%v error=%v", tc.args, apply, err, tc.wantApply, tc.wantErr)
		}
	}
}

// What the plan verbs send: "dry_run": true unless --apply, then false, so
// the outcome never rests on the server's default.
func TestPlanVerbsSendDryRunExplicitly(t *testing.T) {
	type seen struct {
		path string
		body map[string]any
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		_ = json.NewDecoder(r.Body).Decode(&b)
		got <- seen{r.URL.Path, b}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"dry_run": true, "plan": {"moves": []}}`))
	}))
	defer srv.Close()
	api := []string{"-controller", srv.URL, "-token", "t", "-o", "json"}
	for _, tc := range []struct {
		run      func(context.Context, []string) error
		args     []string
		wantPath string
		wantDry  bool
	}{
		{runRebalance, nil, "/v1/rebalance", true},
		{runRebalance, []string{"--dry-run"}, "/v1/rebalance", true},
		{runRebalance, []string{"--apply"}, "/v1/rebalance", false},
		{runTargets, []string{"drain", "pool-1"}, "/v1/targets/pool-1/drain", true},
		{runTargets, []string{"drain", "pool-1", "--dry-run"}, "/v1/targets/pool-1/drain", true},
		{runTargets, []string{"drain", "pool-1", "--apply"}, "/v1/targets/pool-1/drain", false},
	} {
		if err := tc.run(context.Background(), append(append([]string{}, tc.args...), api...)); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		s := <-got
		if s.path != tc.wantPath || s.body["dry_run"] != tc.wantDry {
			t.Errorf("%v: sent %s %v, want %s with dry_run %v", tc.args, s.path, s.body, tc.wantPath, tc.wantDry)
		}
	}
}

func TestParseRegions(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"", []string{}},
		{"eu", []string{"eu"}},
		{"eu,eu2", []string{"eu", "eu2"}},
		{" eu , eu2 ,", []string{"eu", "eu2"}},
		{"EU", []string{"EU"}}, // the controller refuses it, saying why
	}
	for _, tc := range cases {
		if got := parseRegions(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseRegions(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
