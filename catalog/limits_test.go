package catalog

import (
	"errors"
	"testing"
	"unsafe"
)

func f64(v float64) *float64 { return &v }
func i64(v int64) *int64     { return &v }

func TestLimitsValidate(t *testing.T) {
	cases := []struct {
		name  string
		l     Limits
		field string // "" valid
	}{
		{"none", Limits{}, ""},
		{"all", Limits{RequestsPerSecond: 10, Burst: 20, ConcurrentRequests: 5, MaxBodyBytes: 1 << 20}, ""},
		{"negative rate", Limits{RequestsPerSecond: -1, Burst: 1}, LimitRequestsPerSecond},
		{"zero burst with a rate", Limits{RequestsPerSecond: 10}, LimitBurst},
		{"burst without a rate", Limits{Burst: 10}, LimitBurst},
		{"negative concurrency", Limits{ConcurrentRequests: -1}, LimitConcurrentRequests},
		{"negative body", Limits{MaxBodyBytes: -5}, LimitMaxBodyBytes},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { checkField(t, c.l.Validate(), c.field) })
	}
}

func TestLimitsOverrideValidate(t *testing.T) {
	cases := []struct {
		name  string
		o     *LimitsOverride
		field string
	}{
		{"nil", nil, ""},
		{"concurrency only", &LimitsOverride{ConcurrentRequests: i64(3)}, ""},
		{"lift the rate", &LimitsOverride{RequestsPerSecond: f64(0), Burst: i64(0)}, ""},
		{"rate without burst", &LimitsOverride{RequestsPerSecond: f64(5)}, LimitBurst},
		{"burst without rate", &LimitsOverride{Burst: i64(5)}, LimitRequestsPerSecond},
		{"zero burst with a rate", &LimitsOverride{RequestsPerSecond: f64(5), Burst: i64(0)}, LimitBurst},
		{"negative body", &LimitsOverride{MaxBodyBytes: i64(-1)}, LimitMaxBodyBytes},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { checkField(t, c.o.Validate(), c.field) })
	}
}

func checkField(t *testing.T, err error, field string) {
	t.Helper()
	var fe *FieldError
	switch {
	case field == "" && err != nil:
		t.Fatalf("unexpected error %v", err)
	case field != "" && (!errors.As(err, &fe) || fe.Field != field || !errors.Is(err, ErrInvalid)):
		t.Fatalf("error %v, want a FieldError for %s", err, field)
	}
}

func TestPolicyLimitsNameKnownPlans(t *testing.T) {
	p := DefaultPlanPolicy()
	p.Limits = map[string]Limits{"free": {RequestsPerSecond: 5, Burst: 10}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	p.Limits["gold"] = Limits{ConcurrentRequests: 1}
	if err := p.Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("limits for an unknown plan: %v", err)
	}
}

// TestSnapshotLimits: the override travels through the bucket encoding
// into the slot, and Limits merges it over the plan's without allocating.
func TestSnapshotLimits(t *testing.T) {
	tenants := millionTenants(300)
	tenants[7].Limits = &LimitsOverride{RequestsPerSecond: f64(50), Burst: i64(100)}
	tenants[8].Limits = &LimitsOverride{ConcurrentRequests: i64(0)}
	tenants[9].Plan = "starter"
	policy := DefaultPlanPolicy()
	policy.Limits = map[string]Limits{"free": {RequestsPerSecond: 5, Burst: 10, ConcurrentRequests: 2, MaxBodyBytes: 1000}}
	s, err := snapshotWithPolicy(tenants, 16, &policy)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		id   string
		want Limits
	}{
		{tenants[0].ID, Limits{RequestsPerSecond: 5, Burst: 10, ConcurrentRequests: 2, MaxBodyBytes: 1000}},
		{tenants[7].ID, Limits{RequestsPerSecond: 50, Burst: 100, ConcurrentRequests: 2, MaxBodyBytes: 1000}},
		{tenants[8].ID, Limits{RequestsPerSecond: 5, Burst: 10, MaxBodyBytes: 1000}},
		{tenants[9].ID, Limits{}},
	}
	for _, c := range cases {
		r, ok := s.Lookup(c.id)
		if got := s.Limits(r); !ok || got != c.want {
			t.Fatalf("%s: limits %+v, want %+v", c.id, got, c.want)
		}
	}
	r, _ := s.Lookup(tenants[7].ID)
	if n := testing.AllocsPerRun(100, func() { _ = s.Limits(r) }); n != 0 {
		t.Fatalf("Limits allocates %v times", n)
	}
	// The full record reads the override back.
	data, err := encodeBucket(1, map[string]*Tenant{tenants[7].ID: &tenants[7]})
	if err != nil {
		t.Fatal(err)
	}
	_, back, err := decodeBucket(data)
	if err != nil {
		t.Fatal(err)
	}
	if o := back[tenants[7].ID].Limits; o == nil || *o.RequestsPerSecond != 50 || *o.Burst != 100 || o.ConcurrentRequests != nil {
		t.Fatalf("decoded override %+v", o)
	}
}

// TestSlotSize: the plan and override codes fit in the slot's padding.
func TestSlotSize(t *testing.T) {
	if n := unsafe.Sizeof(slot{}); n != 24 {
		t.Fatalf("slot is %d bytes, want 24", n)
	}
}

// BenchmarkSnapshotLimits is a request's cost to find its tenant's limits:
// the lookup and Limits (plan's merged with an override), at one million
// tenants over a cache-warm working set. It must not allocate.
func BenchmarkSnapshotLimits(b *testing.B) {
	tenants := millionTenants(1_000_000)
	for i := 0; i < len(tenants); i += 10 {
		tenants[i].Limits = &LimitsOverride{ConcurrentRequests: i64(int64(i%7 + 1))}
	}
	policy := DefaultPlanPolicy()
	policy.Limits = map[string]Limits{"free": {RequestsPerSecond: 5, Burst: 10, MaxBodyBytes: 1 << 20}}
	s, err := snapshotWithPolicy(tenants, DefaultBuckets, &policy)
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = tenants[i*7919%len(tenants)].ID
	}
	b.ReportAllocs()
	b.ResetTimer()
	sum := 0.0
	for i := 0; i < b.N; i++ {
		r, _ := s.Lookup(ids[i&63])
		sum += s.Limits(r).RequestsPerSecond
	}
	if sum != 5*float64(b.N) {
		b.Fatalf("limits not found: %v", sum)
	}
}
