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

// DefaultUsageRetention is how long usage minutes are kept.
const DefaultUsageRetention = 7 * 24 * time.Hour

// MaxUsageValueBytes is the largest usage value a source writes (Consul's
// limit is 512 KiB).
const MaxUsageValueBytes = 500 << 10

// ErrUsageTooLarge: one source's minute does not fit one Consul value.
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
}

const usageHourLayout = "2006010215"

func (s *Store) usagePrefix() string { return s.prefix + "/usage/" }

func (s *Store) usageHourPrefix(t time.Time) string {
	return s.usagePrefix() + t.UTC().Format(usageHourLayout) + "/"
}

func (s *Store) usageKey(minute time.Time, source string) string {
	m := minute.UTC()
	return s.usageHourPrefix(m) + fmt.Sprintf("%02d", m.Minute()) + "/" + source
}

// parseUsageKey reads the minute out of a usage key.
func (s *Store) parseUsageKey(key string) (time.Time, bool) {
	rest, ok := strings.CutPrefix(key, s.usagePrefix())
	if !ok {
		return time.Time{}, false
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) != 3 {
		return time.Time{}, false
	}
	h, err := time.ParseInLocation(usageHourLayout, parts[0], time.UTC)
	if err != nil {
		return time.Time{}, false
	}
	m, err := strconv.Atoi(parts[1])
	if err != nil || m < 0 || m > 59 {
		return time.Time{}, false
	}
	return h.Add(time.Duration(m) * time.Minute), true
}

// PutUsage writes a source's running totals of one minute.
func (s *Store) PutUsage(ctx context.Context, m UsageMinute) error {
	data, err := EncodeUsage(m.Tenants)
	if err != nil {
		return err
	}
	if len(data) > MaxUsageValueBytes {
		return fmt.Errorf("%w: %d tenants, %d bytes", ErrUsageTooLarge, len(m.Tenants), len(data))
	}
	if _, err := s.client.KV().Put(&api.KVPair{Key: s.usageKey(m.Minute, m.Source), Value: data}, writeOpts(ctx)); err != nil {
		return fmt.Errorf("put usage %s: %w", m.Minute.Format(time.RFC3339), err)
	}
	return nil
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
		for _, p := range pairs {
			minute, ok := s.parseUsageKey(p.Key)
			if !ok || minute.Before(from) || !minute.Before(to) {
				continue
			}
			tenants, err := DecodeUsage(p.Value)
			if err != nil {
				return fmt.Errorf("usage key %s: %w", p.Key, err)
			}
			for t, c := range tenants {
				fn(minute, t, c)
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
