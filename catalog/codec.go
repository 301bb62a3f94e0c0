package catalog

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Layout in Consul KV, under a prefix (default "switchyard"):
//
//	<prefix>/tenants/manifest        JSON: bucket count and one version per bucket
//	<prefix>/tenants/b/<bucket hex>  gzip of a bucket: header line, one line per tenant
//	<prefix>/config/targets/<id>     JSON Target
//	<prefix>/config/policy           JSON PlanPolicy
//
// Tenants are hashed into a fixed number of buckets (4096 by default), so a
// million tenants are ~250 per bucket and ~6 KB compressed. A tenant write is
// one Consul transaction that CASes its bucket and the manifest, bumping that
// bucket's version in the manifest. Routers watch only the manifest (a single
// small key) and fetch just the buckets whose version moved: one change costs
// a router one bucket, not the catalog.

// bucketMagic starts every bucket; the number after it is the bucket version.
const bucketMagic = "sy1"

// BucketOf returns the bucket a tenant id hashes into (FNV-1a, 32 bits).
func BucketOf(id string, buckets int) int {
	return int(fnv32(id) % uint32(buckets))
}

var gzipWriters = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return w
}}

// encodeBucket serialises tenants (sorted by id) with a version header.
// Line format: id TAB plan TAB tier TAB target TAB state TAB epoch TAB labels
// [TAB limits [TAB residency]] where labels are URL-query encoded and limits, only present
// for a tenant with a limits override, is encodeOverride's form. Ids, plans, tiers, targets and states
// are validated identifiers and never contain tabs or newlines. Residency,
// only present for a tenant with a residency constraint (limits is then
// present too, empty when there is no override), is its regions joined by
// commas; regions are validated ids.
func encodeBucket(version uint64, tenants map[string]*Tenant) ([]byte, error) {
	ids := make([]string, 0, len(tenants))
	for id := range tenants {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var raw bytes.Buffer
	fmt.Fprintf(&raw, "%s %d\n", bucketMagic, version)
	for _, id := range ids {
		t := tenants[id]
		raw.WriteString(t.ID)
		raw.WriteByte('\t')
		raw.WriteString(t.Plan)
		raw.WriteByte('\t')
		raw.WriteString(string(t.Tier))
		raw.WriteByte('\t')
		raw.WriteString(t.Target)
		raw.WriteByte('\t')
		raw.WriteString(string(t.State))
		raw.WriteByte('\t')
		raw.WriteString(strconv.FormatUint(t.Epoch, 10))
		raw.WriteByte('\t')
		if len(t.Labels) > 0 {
			v := url.Values{}
			for k, val := range t.Labels {
				v.Set(k, val)
			}
			raw.WriteString(v.Encode())
		}
		if t.Limits != nil || len(t.Residency) > 0 {
			// Only tenants with an override have the eighth field, so a
			// catalog without overrides reads as before to older readers.
			raw.WriteByte('\t')
			if t.Limits != nil {
				raw.WriteString(encodeOverride(t.Limits))
			}
		}
		if len(t.Residency) > 0 {
			// Likewise the ninth, residency: only resident tenants have it.
			raw.WriteByte('\t')
			raw.WriteString(strings.Join(t.Residency, ","))
		}
		raw.WriteByte('\n')
	}
	var out bytes.Buffer
	zw := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(zw)
	zw.Reset(&out)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// decodeBucketRaw gunzips a bucket and calls line for every tenant line with
// its fields split (the eighth, limits, and the ninth, residency, "" when
// absent). It returns the bucket version.
func decodeBucketRaw(data []byte, line func(fields [9]string) error) (uint64, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return 0, fmt.Errorf("bucket: %w", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return 0, fmt.Errorf("bucket: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	if !sc.Scan() {
		return 0, fmt.Errorf("bucket: empty")
	}
	head := sc.Text()
	rest, ok := strings.CutPrefix(head, bucketMagic+" ")
	if !ok {
		return 0, fmt.Errorf("bucket: bad header %q", head)
	}
	version, err := strconv.ParseUint(rest, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bucket: bad version: %w", err)
	}
	for sc.Scan() {
		var f [9]string
		text := sc.Text()
		for i := 0; i < 6; i++ {
			j := strings.IndexByte(text, '\t')
			if j < 0 {
				return 0, fmt.Errorf("bucket: short line %q", sc.Text())
			}
			f[i], text = text[:j], text[j+1:]
		}
		f[6], text, _ = strings.Cut(text, "\t")
		f[7], f[8], _ = strings.Cut(text, "\t")
		if err := line(f); err != nil {
			return 0, err
		}
	}
	return version, sc.Err()
}

// decodeBucket returns the full tenant records of a bucket.
func decodeBucket(data []byte) (uint64, map[string]*Tenant, error) {
	tenants := make(map[string]*Tenant)
	version, err := decodeBucketRaw(data, func(f [9]string) error {
		epoch, err := strconv.ParseUint(f[5], 10, 64)
		if err != nil {
			return fmt.Errorf("bucket: tenant %s: bad epoch: %w", f[0], err)
		}
		t := &Tenant{ID: f[0], Plan: f[1], Tier: Tier(f[2]), Target: f[3], State: State(f[4]), Epoch: epoch}
		if f[7] != "" {
			o, err := decodeOverride(f[7])
			if err != nil {
				return fmt.Errorf("bucket: tenant %s: %w", f[0], err)
			}
			t.Limits = &o
		}
		if f[8] != "" {
			t.Residency = strings.Split(f[8], ",")
		}
		if f[6] != "" {
			v, err := url.ParseQuery(f[6])
			if err != nil {
				return fmt.Errorf("bucket: tenant %s: bad labels: %w", f[0], err)
			}
			t.Labels = make(map[string]string, len(v))
			for k := range v {
				t.Labels[k] = v.Get(k)
			}
		}
		tenants[t.ID] = t
		return nil
	})
	return version, tenants, err
}
