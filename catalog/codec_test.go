package catalog

import (
	"errors"
	"fmt"
	"hash/fnv"
	"reflect"
	"strings"
	"testing"
)

func TestBucketRoundTrip(t *testing.T) {
	in := map[string]*Tenant{
		"acme":  {ID: "acme", Plan: "pro", Tier: TierDedicatedDB, Target: "db-1", State: StateActive, Epoch: 7, Labels: map[string]string{"region": "eu", "note": "a&b=c d"}},
		"bolt":  {ID: "bolt", Plan: "free", Tier: TierShared, Target: "pool-1", State: StateFrozen, Epoch: 1},
		"x-y-z": {ID: "x-y-z", Plan: "enterprise", Tier: TierDedicatedCluster, Target: "cl-1", State: StateDisabled, Epoch: 1 << 40},
	}
	data, err := encodeBucket(42, in)
	if err != nil {
		t.Fatal(err)
	}
	version, out, err := decodeBucket(data)
	if err != nil {
		t.Fatal(err)
	}
	if version != 42 {
		t.Fatalf("version = %d, want 42", version)
	}
	if len(out) != len(in) {
		t.Fatalf("decoded %d tenants, want %d", len(out), len(in))
	}
	for id, want := range in {
		got := out[id]
		if got == nil || fmt.Sprint(*got) != fmt.Sprint(*want) {
			t.Errorf("tenant %s: got %+v, want %+v", id, got, want)
		}
	}
	names := newNameTable()
	view, err := decodeBucketView(data, names)
	if err != nil {
		t.Fatal(err)
	}
	e := view.find("x-y-z", fnv32("x-y-z"))
	if e == nil || tierCodes[e.tier] != TierDedicatedCluster || stateCodes[e.state] != StateDisabled || e.epoch != 1<<40 || names.targets.list[e.target] != "cl-1" {
		t.Errorf("view entry = %+v", e)
	}
	if view.find("x-y", fnv32("x-y")) != nil {
		t.Error("found a prefix of an id")
	}
}

func TestDecodeBucketRejectsGarbage(t *testing.T) {
	for name, data := range map[string][]byte{
		"not gzip": []byte("hello"),
		"empty":    nil,
	} {
		if _, _, err := decodeBucket(data); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func TestTenantValidate(t *testing.T) {
	ok := Tenant{ID: "acme", Plan: "pro", Tier: TierShared, Target: "pool-1", State: StateActive}
	cases := []struct {
		name  string
		edit  func(*Tenant)
		field string // substring the error must name; "" = valid
	}{
		{"valid", func(*Tenant) {}, ""},
		{"uppercase id", func(t *Tenant) { t.ID = "Acme" }, "id"},
		{"id with dot", func(t *Tenant) { t.ID = "a.b" }, "id"},
		{"id too long", func(t *Tenant) { t.ID = strings.Repeat("a", 64) }, "id"},
		{"empty plan", func(t *Tenant) { t.Plan = "" }, "plan"},
		{"bad tier", func(t *Tenant) { t.Tier = "gold" }, "tier"},
		{"bad state", func(t *Tenant) { t.State = "gone" }, "state"},
		{"tab in label", func(t *Tenant) { t.Labels = map[string]string{"region": "eu\tx"} }, "label"},
		{"bad label key", func(t *Tenant) { t.Labels = map[string]string{"Region": "eu"} }, "label key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tn := ok
			tc.edit(&tn)
			err := tn.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %v does not name %q", err, tc.field)
			}
		})
	}
}

func TestDSNFor(t *testing.T) {
	shared := Target{ID: "pool-1", Tier: TierShared, Service: "app", DSN: "postgres://u@h:5432/pool?sslmode=disable"}
	ded := Target{ID: "db-1", Tier: TierDedicatedDB, Service: "app", DSN: "postgres://u@h:5432/postgres?sslmode=disable"}
	if got, _ := shared.DSNFor("acme"); got != shared.DSN {
		t.Errorf("shared DSN = %s", got)
	}
	got, err := ded.DSNFor("acme-co")
	if err != nil || got != "postgres://u@h:5432/tenant_acme_co?sslmode=disable" {
		t.Errorf("dedicated DSN = %s, %v", got, err)
	}
}

func TestBucketOfIsFNV1a(t *testing.T) {
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("tenant-%d", i)
		h := fnv.New32a()
		h.Write([]byte(id))
		if BucketOf(id, 4096) != int(h.Sum32()%4096) {
			t.Fatalf("hash mismatch for %s", id)
		}
	}
}

func TestBucketRoundTripResidency(t *testing.T) {
	conc := int64(5)
	cases := []struct {
		name string
		in   Tenant
	}{
		{"residency only", Tenant{ID: "acme", Plan: "pro", Tier: TierShared, Target: "pool-eu", State: StateActive, Epoch: 3, Residency: []string{"eu"}}},
		{"several regions and labels", Tenant{ID: "bolt", Plan: "pro", Tier: TierShared, Target: "pool-eu", State: StateActive, Epoch: 1,
			Labels: map[string]string{"region": "eu"}, Residency: []string{"eu", "eu2", "ch-1"}}},
		{"residency and limits", Tenant{ID: "cask", Plan: "pro", Tier: TierShared, Target: "pool-eu", State: StateActive, Epoch: 1,
			Limits: &LimitsOverride{ConcurrentRequests: &conc}, Residency: []string{"eu2"}}},
		{"limits only", Tenant{ID: "dune", Plan: "pro", Tier: TierShared, Target: "pool-eu", State: StateActive, Epoch: 1, Limits: &LimitsOverride{ConcurrentRequests: &conc}}},
		{"neither", Tenant{ID: "echo", Plan: "pro", Tier: TierShared, Target: "pool-eu", State: StateActive, Epoch: 1}},
	}
	in := map[string]*Tenant{}
	for i := range cases {
		in[cases[i].in.ID] = &cases[i].in
	}
	data, err := encodeBucket(9, in)
	if err != nil {
		t.Fatal(err)
	}
	_, out, err := decodeBucket(data)
	if err != nil {
		t.Fatal(err)
	}
	names := newNameTable()
	view, err := decodeBucketView(data, names)
	if err != nil {
		t.Fatalf("router view: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := out[tc.in.ID]; got == nil || !reflect.DeepEqual(*got, tc.in) {
				t.Fatalf("decoded %+v, want %+v", got, tc.in)
			}
			if view.find(tc.in.ID, fnv32(tc.in.ID)) == nil {
				t.Fatalf("router view lacks %s", tc.in.ID)
			}
		})
	}
}

func TestTenantValidateResidency(t *testing.T) {
	cases := []struct {
		name      string
		residency []string
		wantErr   string // substring; "" = valid
	}{
		{"none", nil, ""},
		{"one", []string{"eu"}, ""},
		{"several", []string{"eu", "eu-2", "us1"}, ""},
		{"uppercase", []string{"EU"}, `region "EU" must be a lowercase id`},
		{"empty", []string{""}, `region "" must be a lowercase id`},
		{"comma", []string{"eu,us"}, `region "eu,us" must be a lowercase id`},
		{"duplicate", []string{"eu", "us", "eu"}, `region "eu" is listed twice`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tn := Tenant{ID: "acme", Plan: "pro", Tier: TierShared, Target: "pool-1", State: StateActive, Residency: tc.residency}
			err := tn.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want ErrInvalid naming %q", err, tc.wantErr)
			}
		})
	}
}

func TestResidentIn(t *testing.T) {
	cases := []struct {
		residency []string
		region    string
		want      bool
	}{
		{nil, "us", true},
		{nil, "", true},
		{[]string{"eu"}, "eu", true},
		{[]string{"eu", "eu2"}, "eu2", true},
		{[]string{"eu"}, "us", false},
		{[]string{"eu"}, "", false}, // a target without a region takes no resident tenant
	}
	for _, tc := range cases {
		tn := Tenant{Residency: tc.residency}
		if got := tn.ResidentIn(tc.region); got != tc.want {
			t.Errorf("%v ResidentIn(%q) = %v, want %v", tc.residency, tc.region, got, tc.want)
		}
	}
	tg := Target{Labels: map[string]string{"region": "eu"}}
	if tg.Region() != "eu" || (&Target{}).Region() != "" {
		t.Errorf("Region() = %q / %q", tg.Region(), (&Target{}).Region())
	}
}
