package catalog

import (
	"reflect"
	"testing"
	"time"
)

func TestUsageCodecRoundTrip(t *testing.T) {
	cases := []struct {
		name    string
		tenants map[string]UsageCounts
	}{
		{"empty", map[string]UsageCounts{}},
		{"one", map[string]UsageCounts{"acme": {Requests: [5]uint64{1, 2, 3, 4, 5}, BytesIn: 6, BytesOut: 7, UpstreamMicros: 8}}},
		{"large numbers and many tenants", map[string]UsageCounts{
			"a":                   {Requests: [5]uint64{0, 1 << 62}, BytesOut: 1<<64 - 1},
			"tenant-with-hyphens": {Requests: [5]uint64{0, 0, 0, 0, 9}},
			"0":                   {},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, err := EncodeUsage(tc.tenants)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeUsage(data)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.tenants) {
				t.Fatalf("round trip: got %v, want %v", got, tc.tenants)
			}
		})
	}
}

func TestUsageDecodeRefusesGarbage(t *testing.T) {
	for _, data := range [][]byte{nil, []byte("not gzip")} {
		if _, err := DecodeUsage(data); err == nil {
			t.Fatalf("DecodeUsage(%q) accepted", data)
		}
	}
}

func TestUsageKeys(t *testing.T) {
	s := NewStore(nil, "sy")
	minute := time.Date(2026, 12, 2, 6, 7, 0, 0, time.UTC)
	cases := []struct {
		key  string
		want time.Time
		ok   bool
	}{
		{s.usageKey(minute, "r1.ab12"), minute, true},
		{"sy/usage/2026120206/61/r1", time.Time{}, false},
		{"sy/usage/20261202/07/r1", time.Time{}, false},
		{"sy/usage/2026120206/07", time.Time{}, false},
		{"other/usage/2026120206/07/r1", time.Time{}, false},
	}
	for _, tc := range cases {
		got, ok := s.parseUsageKey(tc.key)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("parseUsageKey(%q) = %v, %v; want %v, %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
	if k := s.usageKey(minute, "r1.ab12"); k != "sy/usage/2026120206/07/r1.ab12" {
		t.Fatalf("usage key %q", k)
	}
}
