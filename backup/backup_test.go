package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
)

func testKey(t *testing.T) *Key {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	k, err := NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func seal(t *testing.T, k *Key, name string, plain []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := newSealWriter(&out, k, name)
	if err != nil {
		t.Fatal(err)
	}
	// Odd-sized writes cross segment boundaries.
	for p := plain; len(p) > 0; {
		n := min(len(p), 7777)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func open(k *Key, name string, sealed []byte) ([]byte, error) {
	r, err := newOpenReader(bytes.NewReader(sealed), k, name)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestSealRoundTrip(t *testing.T) {
	k := testKey(t)
	for _, size := range []int{0, 1, segmentSize - 1, segmentSize, segmentSize + 1, 3*segmentSize + 17} {
		plain := make([]byte, size)
		_, _ = rand.Read(plain)
		got, err := open(k, "obj", seal(t, k, "obj", plain))
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("size %d: round trip differs", size)
		}
	}
}

func TestSealRefusesTampering(t *testing.T) {
	k := testKey(t)
	plain := bytes.Repeat([]byte("row\tdata\n"), 3*segmentSize/9)
	sealed := seal(t, k, "tables/000.copy.gz.enc", plain)
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)/2] ^= 0x01
	segLen := 4 + segmentSize + 16
	hdr := len(sealMagic) + prefixSize
	cases := []struct {
		name   string
		key    *Key
		object string
		data   []byte
	}{
		{"one byte flipped", k, "tables/000.copy.gz.enc", flipped},
		{"wrong key", testKey(t), "tables/000.copy.gz.enc", sealed},
		{"other object's name", k, "tables/001.copy.gz.enc", sealed},
		{"last segment cut off", k, "tables/000.copy.gz.enc", sealed[:hdr+segLen]},
		{"truncated mid segment", k, "tables/000.copy.gz.enc", sealed[:len(sealed)-5]},
		{"trailing bytes", k, "tables/000.copy.gz.enc", append(bytes.Clone(sealed), 0)},
		{"not sealed", k, "tables/000.copy.gz.enc", plain},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := open(c.key, c.object, c.data)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("want ErrCorrupt, got %v", err)
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	raw := bytes.Repeat([]byte{0xab}, 32)
	cases := []struct {
		name string
		in   string
		ok   bool
	}{
		{"hex", strings.Repeat("ab", 32) + "\n", true},
		{"base64", "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=", true},
		{"raw", string(raw), true},
		{"short hex", strings.Repeat("ab", 31), false},
		{"garbage", "not a key", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := ParseKey([]byte(c.in))
			if c.ok != (err == nil) {
				t.Fatalf("ok=%v, err=%v", c.ok, err)
			}
			if c.ok && !bytes.Equal(k.raw, raw) {
				t.Fatal("parsed to other bytes")
			}
			if c.ok && strings.Contains(k.String(), "abab") {
				t.Fatal("String shows the key")
			}
		})
	}
}

func TestRowHasher(t *testing.T) {
	rows := "acme\t1\tfoo\n" + "acme\t2\tb\\tar\n"
	cases := []struct {
		name   string
		chunks []string
		expect string
		same   bool // same hash as rows for tenant acme
		err    error
	}{
		{"one chunk", []string{rows}, "acme", true, nil},
		{"split mid row", []string{rows[:7], rows[7:15], rows[15:]}, "acme", true, nil},
		{"other tenant id, same rows", []string{strings.ReplaceAll(rows, "acme", "beta")}, "", true, nil},
		{"changed value", []string{strings.Replace(rows, "foo", "fop", 1)}, "", false, nil},
		{"reordered", []string{"acme\t2\tb\\tar\n" + "acme\t1\tfoo\n"}, "", false, nil},
		{"row of another tenant", []string{rows + "beta\t3\tx\n"}, "acme", false, ErrCorrupt},
	}
	ref := newRowHasher(0, "")
	_, _ = ref.Write([]byte(rows))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newRowHasher(0, c.expect)
			var err error
			for _, ch := range c.chunks {
				if _, err = h.Write([]byte(ch)); err != nil {
					break
				}
			}
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("want %v, got %v", c.err, err)
				}
				return
			}
			if err != nil || h.finish() != nil {
				t.Fatal(err)
			}
			if (h.Sum() == ref.Sum()) != c.same || h.rows != 2 && c.same {
				t.Fatalf("hash equal=%v rows=%d, want equal=%v", h.Sum() == ref.Sum(), h.rows, c.same)
			}
		})
	}
}

func TestKeyRewriter(t *testing.T) {
	var out bytes.Buffer
	w := newKeyRewriter(&out, 1, "clone")
	_, _ = w.Write([]byte("1\tacme\tx\n2\tac"))
	_, _ = w.Write([]byte("me\ty\n"))
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "1\tclone\tx\n2\tclone\ty\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestManifestSeal(t *testing.T) {
	k := testKey(t)
	cases := []struct {
		name    string
		key     *Key
		openKey *Key
		mutate  func([]byte) []byte
		err     error
	}{
		{"plain intact", nil, nil, nil, nil},
		{"sealed intact", k, k, nil, nil},
		{"plain row count changed", nil, nil, func(b []byte) []byte { return bytes.Replace(b, []byte(`"rows": 5`), []byte(`"rows": 6`), 1) }, ErrCorrupt},
		{"sealed row count changed", k, k, func(b []byte) []byte { return bytes.Replace(b, []byte(`"rows": 5`), []byte(`"rows": 6`), 1) }, ErrCorrupt},
		{"sealed, no key", k, nil, nil, ErrWrongKey},
		{"sealed, wrong key", k, testKey(t), nil, ErrWrongKey},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := &Manifest{Format: FormatVersion, ID: NewID("acme", time.Now()), Tenant: "acme", Tables: []TableEntry{{Rows: 5, Hash: "h"}}}
			if c.key != nil {
				m.Encryption, m.KeyID = "aes-256-gcm", c.key.ID()
			}
			data, err := m.encode(keyBytes(c.key))
			if err != nil {
				t.Fatal(err)
			}
			if c.mutate != nil {
				data = c.mutate(data)
			}
			_, err = verifyManifest(data, c.openKey)
			if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
				t.Fatalf("want %v, got %v", c.err, err)
			}
		})
	}
}

func TestIDs(t *testing.T) {
	id := NewID("acme-eu", time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC))
	if tenant, err := TenantOf(id); err != nil || tenant != "acme-eu" {
		t.Fatalf("TenantOf(%s) = %q, %v", id, tenant, err)
	}
	for _, bad := range []string{"", "acme", "acme.x", "ACME.a.b", "acme.a/b.c", "../x.a.b"} {
		if _, err := TenantOf(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("TenantOf(%q): want ErrInvalid, got %v", bad, err)
		}
	}
}

func TestResidency(t *testing.T) {
	dir, err := NewDirStore(t.TempDir(), "us")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		residency []string
		err       error
	}{{nil, nil}, {[]string{"us"}, nil}, {[]string{"eu", "us"}, nil}, {[]string{"eu"}, ErrResidency}}
	for _, c := range cases {
		tn := catalog.Tenant{ID: "acme", Residency: c.residency}
		if err := CheckResidency(&tn, dir); !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("residency %v: want %v, got %v", c.residency, c.err, err)
		}
	}
}

func TestDirStore(t *testing.T) {
	ctx := context.Background()
	s, err := NewDirStore(t.TempDir(), "eu")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "a/b/c", strings.NewReader("hello"), -1); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "../escape", strings.NewReader("x"), -1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("escape: want ErrInvalid, got %v", err)
	}
	names, err := s.List(ctx, "a/")
	if err != nil || len(names) != 1 || names[0] != "a/b/c" {
		t.Fatalf("list: %v %v", names, err)
	}
	if err := s.Delete(ctx, "a/b/c"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "a/b/c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get deleted: want ErrNotFound, got %v", err)
	}
}
