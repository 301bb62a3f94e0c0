package catalog

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// Usage metering in Consul KV (README "Usage metering"):
//
//	<prefix>/usage/<YYYYMMDDHH>/<MM>/<source>   gzip, one line per tenant:
//	    <tenant> <1xx> <2xx> <3xx> <4xx> <5xx> <bytes in> <bytes out> <upstream µs>
//
// A source is one router process (its id and a random incarnation), so a
// restarted router writes new keys and never overwrites, or adds to, what
// its previous process published. Each source is the only writer of its
// keys: it rewrites the key of a minute with the minute's running totals
// every flush, so a reader sums every source's key of a minute. Whole hours
// go at once when they pass the retention.
//
// A minute too big for one Consul value is split by tenant (FNV-1a of the
// id modulo P, a power of two) into P keys <source>/p<P>-<i>, every part
// written even when empty. P never shrinks within a minute, and a writer
// moving to a larger P writes all its parts before deleting the smaller
// P's keys, so a reader takes, per source and minute, the largest P whose
// parts are all there: a crash between the two leaves either the old
// complete set or the new one, never both counted.

// DefaultUsageRetention is how long usage minutes are kept.
const DefaultUsageRetention = 7 * 24 * time.Hour

// maxUsageValueBytes is the largest usage value a source writes (Consul's
// limit is 512 KiB); a var for tests.
var maxUsageValueBytes = 500 << 10

// maxUsageParts bounds the keys one source's minute is split into.
const maxUsageParts = 1024

// ErrUsageTooLarge: one source's minute does not fit maxUsageParts values.
var ErrUsageTooLarge = errors.New("usage minute exceeds the Consul value limit")

// StatusClasses is the number of status classes counted (1xx to 5xx).
const StatusClasses = 5

// UsageCounts is a tenant's usage over some period.
type UsageCounts struct {
	// Requests by status class: [0] 1xx … [4] 5xx.
	Requests       [StatusClasses]uint64
	BytesIn        uint64
	BytesOut       uint64
	UpstreamMicros uint64
}

// Add adds o to u.
func (u *UsageCounts) Add(o UsageCounts) {
	for i := range u.Requests {
		u.Requests[i] += o.Requests[i]
	}
	u.BytesIn += o.BytesIn
	u.BytesOut += o.BytesOut
	u.UpstreamMicros += o.UpstreamMicros
}

// Total is the number of requests.
func (u UsageCounts) Total() uint64 {
	var n uint64
	for _, v := range u.Requests {
		n += v
	}
	return n
}

// IsZero reports whether nothing was counted.
func (u UsageCounts) IsZero() bool { return u == UsageCounts{} }

// UsageMinute is one source's counts of one minute.
type UsageMinute struct {
	Minute  time.Time // truncated to the minute, UTC
	Source  string
	Tenants map[string]UsageCounts
	// Parts is how many keys the minute was last written as (0: never);
	// PutUsage updates it.
	Parts int
}

const usageHourLayout = "2006010215"

func (s *Store) usagePrefix() string { return s.keys.Usage() }

func (s *Store) usageHourPrefix(t time.Time) string {
	return s.usagePrefix() + t.UTC().Format(usageHourLayout) + "/"
}

func (s *Store) usageKey(minute time.Time, source string) string {
	m := minute.UTC()
	return s.usageHourPrefix(m) + fmt.Sprintf("%02d", m.Minute()) + "/" + source
}

// usageKeyName is what a usage key names.
type usageKeyName struct {
	minute      time.Time
	source      string
	parts, part int // 1, 0 for a minute in one key
}

// parseUsageKey reads a usage key.
func (s *Store) parseUsageKey(key string) (usageKeyName, bool) {
	k := usageKeyName{parts: 1}
	rest, ok := strings.CutPrefix(key, s.usagePrefix())
	if !ok {
		return k, false
	}
	f := strings.SplitN(rest, "/", 4)
	if len(f) < 3 || f[2] == "" {
		return k, false
	}
	k.source = f[2]
	if len(f) == 4 {
		p, i, ok := strings.Cut(strings.TrimPrefix(f[3], "p"), "-")
		var err1, err2 error
		k.parts, err1 = strconv.Atoi(p)
		k.part, err2 = strconv.Atoi(i)
		if !ok || err1 != nil || err2 != nil || k.parts < 2 || k.part < 0 || k.part >= k.parts {
			return k, false
		}
	}
	h, err := time.ParseInLocation(usageHourLayout, f[0], time.UTC)
	if err != nil {
		return k, false
	}
	m, err := strconv.Atoi(f[1])
	if err != nil || m < 0 || m > 59 || len(f[1]) != 2 {
		return k, false
	}
	k.minute = h.Add(time.Duration(m) * time.Minute)
	return k, true
}

// completeUsageKeys keeps, per source and minute, the keys of the largest
// part count whose parts are all present.
func (s *Store) completeUsageKeys(pairs api.KVPairs) map[string][]*api.KVPair {
	type group struct {
		minute time.Time
		source string
	}
	byLevel := map[group]map[int][]*api.KVPair{}
	for _, p := range pairs {
		k, ok := s.parseUsageKey(p.Key)
		if !ok {
			continue
		}
		g := group{k.minute, k.source}
		if byLevel[g] == nil {
			byLevel[g] = map[int][]*api.KVPair{}
		}
		byLevel[g][k.parts] = append(byLevel[g][k.parts], p)
	}
	out := map[string][]*api.KVPair{}
	for g, levels := range byLevel {
		best := 0
		for parts, ps := range levels {
			if len(ps) == parts && parts > best {
				best = parts
			}
		}
		if best > 0 {
			out[g.minute.Format(time.RFC3339)+" "+g.source] = levels[best]
		}
	}
	return out
}

// usagePartKey is part i of a minute written as parts keys.
func (s *Store) usagePartKey(minute time.Time, source string, parts, i int) string {
	if parts <= 1 {
		return s.usageKey(minute, source)
	}
	return s.usageKey(minute, source) + "/p" + strconv.Itoa(parts) + "-" + strconv.Itoa(i)
}

// PutUsage writes a source's running totals of one minute, in as many
// parts as it takes (never fewer than m.Parts), and records the count in m.
func (s *Store) PutUsage(ctx context.Context, m *UsageMinute) error {
	values, err := encodeUsageParts(m.Tenants, max(m.Parts, 1))
	if err != nil {
		return err
	}
	for i, v := range values {
		if _, err := s.client.KV().Put(&api.KVPair{Key: s.usagePartKey(m.Minute, m.Source, len(values), i), Value: v}, writeOpts(ctx)); err != nil {
			return fmt.Errorf("put usage %s: %w", m.Minute.Format(time.RFC3339), err)
		}
	}
	if m.Parts > 0 && m.Parts != len(values) {
		for i := 0; i < m.Parts; i++ { // the smaller set, now that the larger one is whole
			if _, err := s.client.KV().Delete(s.usagePartKey(m.Minute, m.Source, m.Parts, i), writeOpts(ctx)); err != nil {
				return fmt.Errorf("delete usage %s: %w", m.Minute.Format(time.RFC3339), err)
			}
		}
	}
	m.Parts = len(values)
	return nil
}

// encodeUsageParts encodes tenants in as few parts as fit the value limit:
// a power of two, at least least.
func encodeUsageParts(tenants map[string]UsageCounts, least int) ([][]byte, error) {
	for parts := least; parts <= maxUsageParts; parts *= 2 {
		split := make([]map[string]UsageCounts, parts)
		for i := range split {
			split[i] = map[string]UsageCounts{}
		}
		for id, c := range tenants {
			split[usagePart(id, parts)][id] = c
		}
		values := make([][]byte, parts)
		fits := true
		for i, part := range split {
			v, err := EncodeUsage(part)
			if err != nil {
				return nil, err
			}
			values[i], fits = v, fits && len(v) <= maxUsageValueBytes
		}
		if fits {
			return values, nil
		}
	}
	return nil, fmt.Errorf("%w: %d tenants in %d parts", ErrUsageTooLarge, len(tenants), maxUsageParts)
}

// usagePart is the part of parts a tenant's line goes in.
func usagePart(id string, parts int) int {
	if parts <= 1 {
		return 0
	}
	return BucketOf(id, parts)
}

// ScanUsage calls fn for every tenant's counts of every source's minutes
// in [from, to) (minutes, UTC), hour by hour.
func (s *Store) ScanUsage(ctx context.Context, from, to time.Time, fn func(minute time.Time, tenant string, c UsageCounts)) error {
	from, to = from.UTC().Truncate(time.Minute), to.UTC()
	for h := from.Truncate(time.Hour); h.Before(to); h = h.Add(time.Hour) {
		pairs, _, err := s.client.KV().List(s.usageHourPrefix(h), readOpts(ctx))
		if err != nil {
			return fmt.Errorf("list usage %s: %w", h.Format(time.RFC3339), err)
		}
		for _, keys := range s.completeUsageKeys(pairs) {
			for _, p := range keys {
				k, _ := s.parseUsageKey(p.Key)
				if k.minute.Before(from) || !k.minute.Before(to) {
					continue
				}
				tenants, err := DecodeUsage(p.Value)
				if err != nil {
					return fmt.Errorf("usage key %s: %w", p.Key, err)
				}
				for t, c := range tenants {
					fn(k.minute, t, c)
				}
			}
		}
	}
	return nil
}

// PruneUsage deletes every hour of usage that ended before before.
func (s *Store) PruneUsage(ctx context.Context, before time.Time) (int, error) {
	hours, _, err := s.client.KV().Keys(s.usagePrefix(), "/", readOpts(ctx))
	if err != nil {
		return 0, fmt.Errorf("list usage hours: %w", err)
	}
	n := 0
	for _, k := range hours {
		name := strings.TrimSuffix(strings.TrimPrefix(k, s.usagePrefix()), "/")
		h, err := time.ParseInLocation(usageHourLayout, name, time.UTC)
		if err != nil || !h.Add(time.Hour).Before(before) {
			continue
		}
		if _, err := s.client.KV().DeleteTree(s.usageHourPrefix(h), writeOpts(ctx)); err != nil {
			return n, fmt.Errorf("prune usage %s: %w", name, err)
		}
		n++
	}
	return n, nil
}

// EncodeUsage is the value of a usage key: gzip of one line per tenant,
// sorted by tenant.
func EncodeUsage(tenants map[string]UsageCounts) ([]byte, error) {
	ids := make([]string, 0, len(tenants))
	for id := range tenants {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	line := make([]byte, 0, 256)
	for _, id := range ids {
		c := tenants[id]
		line = append(line[:0], id...)
		for _, v := range c.Requests {
			line = strconv.AppendUint(append(line, ' '), v, 10)
		}
		line = strconv.AppendUint(append(line, ' '), c.BytesIn, 10)
		line = strconv.AppendUint(append(line, ' '), c.BytesOut, 10)
		line = strconv.AppendUint(append(line, ' '), c.UpstreamMicros, 10)
		line = append(line, '\n')
		if _, err := zw.Write(line); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// DecodeUsage reads a usage value.
func DecodeUsage(data []byte) (map[string]UsageCounts, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("usage value: %w", err)
	}
	out := map[string]UsageCounts{}
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 1+StatusClasses+3 {
			return nil, fmt.Errorf("usage line %q: %d fields", sc.Text(), len(f))
		}
		var v [StatusClasses + 3]uint64
		for i := range v {
			if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
				return nil, fmt.Errorf("usage line %q: %w", sc.Text(), err)
			}
		}
		c := UsageCounts{BytesIn: v[5], BytesOut: v[6], UpstreamMicros: v[7]}
		copy(c.Requests[:], v[:5])
		out[f[0]] = c
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("usage value: %w", err)
	}
	return out, nil
}
