package catalog

import (
	"fmt"

	"github.com/hashicorp/consul/api"
	"reflect"
	"sort"
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
		want usageKeyName
		ok   bool
	}{
		{s.usageKey(minute, "r1.ab12"), usageKeyName{minute, "r1.ab12", 1, 0}, true},
		{s.usagePartKey(minute, "r1.ab12", 4, 3), usageKeyName{minute, "r1.ab12", 4, 3}, true},
		{s.usagePartKey(minute, "r1.ab12", 1, 0), usageKeyName{minute, "r1.ab12", 1, 0}, true},
		{"sy/usage/2026120206/07/r1/p4-4", usageKeyName{}, false},
		{"sy/usage/2026120206/07/r1/p1-0", usageKeyName{}, false},
		{"sy/usage/2026120206/07/r1/x", usageKeyName{}, false},
		{"sy/usage/2026120206/61/r1", usageKeyName{}, false},
		{"sy/usage/20261202/07/r1", usageKeyName{}, false},
		{"sy/usage/2026120206/07", usageKeyName{}, false},
		{"other/usage/2026120206/07/r1", usageKeyName{}, false},
	}
	for _, tc := range cases {
		got, ok := s.parseUsageKey(tc.key)
		if ok != tc.ok || ok && got != tc.want {
			t.Errorf("parseUsageKey(%q) = %+v, %v; want %+v, %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
	if k := s.usageKey(minute, "r1.ab12"); k != "sy/usage/2026120206/07/r1.ab12" {
		t.Fatalf("usage key %q", k)
	}
}

// A minute too big for one value is split so that every part fits, each
// tenant in exactly one part, never in fewer parts than asked.
func TestUsageSplitsIntoParts(t *testing.T) {
	defer func(v int) { maxUsageValueBytes = v }(maxUsageValueBytes)
	maxUsageValueBytes = 2 << 10
	cases := []struct {
		tenants, least, wantMin int
	}{
		{10, 1, 1},
		{10, 4, 4},
		{3000, 1, 8},
	}
	for _, tc := range cases {
		tenants := map[string]UsageCounts{}
		for i := 0; i < tc.tenants; i++ {
			tenants[fmt.Sprintf("tenant-%d", i)] = UsageCounts{Requests: [5]uint64{0, uint64(i*7919) % 1000}, BytesOut: uint64(i * 104729)}
		}
		values, err := encodeUsageParts(tenants, tc.least)
		if err != nil {
			t.Fatal(err)
		}
		if len(values) < tc.wantMin || len(values)&(len(values)-1) != 0 {
			t.Fatalf("%d tenants, least %d: %d parts", tc.tenants, tc.least, len(values))
		}
		back := map[string]UsageCounts{}
		for i, v := range values {
			if len(v) > maxUsageValueBytes {
				t.Fatalf("part %d: %d bytes", i, len(v))
			}
			part, err := DecodeUsage(v)
			if err != nil {
				t.Fatal(err)
			}
			for id, c := range part {
				if _, dup := back[id]; dup || usagePart(id, len(values)) != i {
					t.Fatalf("tenant %s in part %d (dup %v)", id, i, dup)
				}
				back[id] = c
			}
		}
		if !reflect.DeepEqual(back, tenants) {
			t.Fatalf("%d tenants in, %d out", len(tenants), len(back))
		}
	}
}

// Per source and minute the reader takes the largest complete set of parts.
func TestUsageReaderTakesLargestCompleteSet(t *testing.T) {
	s := NewStore(nil, "sy")
	minute := time.Date(2026, 12, 2, 6, 7, 0, 0, time.UTC)
	key := func(src string, parts, i int) *api.KVPair {
		return &api.KVPair{Key: s.usagePartKey(minute, src, parts, i)}
	}
	cases := []struct {
		name  string
		pairs api.KVPairs
		want  []string
	}{
		{"one key", api.KVPairs{key("a", 1, 0)}, []string{key("a", 1, 0).Key}},
		{"larger set still being written", api.KVPairs{key("a", 1, 0), key("a", 4, 0), key("a", 4, 2)}, []string{key("a", 1, 0).Key}},
		{"larger set whole, smaller not yet deleted", api.KVPairs{key("a", 1, 0), key("a", 2, 0), key("a", 2, 1)}, []string{key("a", 2, 0).Key, key("a", 2, 1).Key}},
		{"sources apart", api.KVPairs{key("a", 1, 0), key("b", 2, 0), key("b", 2, 1)}, []string{key("a", 1, 0).Key, key("b", 2, 0).Key, key("b", 2, 1).Key}},
		{"nothing whole", api.KVPairs{key("a", 4, 1)}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, keys := range s.completeUsageKeys(tc.pairs) {
				for _, p := range keys {
					got = append(got, p.Key)
				}
			}
			sort.Strings(got)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}
