// Package backup backs up one tenant from any tier and restores it onto any
// target: one REPEATABLE READ snapshot across the tenant's tables (the
// migrator's table discovery), their schema, the tenant's catalog record
// and a manifest with per-table row counts and content hashes, every
// object gzip-compressed and optionally sealed with AES-256-GCM, kept in a
// Store (a local directory or an S3-compatible object store).
//
// Layout of one backup in a store (id = <tenant>.<time>.<random>):
//
//	<tenant>/<id>/manifest.json        the manifest (plain JSON, sealed by a checksum or MAC)
//	<tenant>/<id>/tenant.json.gz       the catalog record
//	<tenant>/<id>/schema.json.gz       the tables as migrator.DiscoverTables describes them
//	<tenant>/<id>/schema.sql.gz        their DDL (pg_dump --schema-only)
//	<tenant>/<id>/tables/<n>.copy.gz   table n's rows, COPY text format, in key order
//
// Sealed objects end in ".enc" as well.
package backup

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

// FormatVersion is the manifest format this package writes and reads.
const FormatVersion = 1

// Sentinel errors callers branch on.
var (
	// ErrCorrupt: an object's or the manifest's bytes are not what the
	// manifest recorded (a flipped byte, a truncated object).
	ErrCorrupt = errors.New("backup is corrupt")
	// ErrWrongKey: the backup is encrypted and the key given is not its key
	// (or no key was given).
	ErrWrongKey = errors.New("wrong or missing encryption key")
	// ErrResidency: the store's region is not one the tenant may live in.
	ErrResidency = errors.New("residency forbids this store")
	// ErrNotFound: no such backup.
	ErrNotFound = errors.New("backup not found")
	// ErrInvalid: a request is malformed.
	ErrInvalid = errors.New("invalid backup request")
)

// Manifest describes one backup; it is what restore verifies against.
type Manifest struct {
	Format    int       `json:"format"`
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	CreatedAt time.Time `json:"created_at"`
	// Source is where the tenant's data was read from.
	Source Source `json:"source"`
	// Snapshot is the exported snapshot id (pg_export_snapshot) all tables
	// were read in, and its transaction snapshot (txid_current_snapshot).
	Snapshot    string `json:"snapshot"`
	SnapshotTxn string `json:"snapshot_txn"`
	Region      string `json:"region"`
	Compression string `json:"compression"` // "gzip"
	// Encryption is "" or "aes-256-gcm"; KeyID names the key (a digest of
	// it, never the key) so a wrong key is refused up front.
	Encryption string       `json:"encryption,omitempty"`
	KeyID      string       `json:"key_id,omitempty"`
	KeyColumn  string       `json:"key_column"`
	Tables     []TableEntry `json:"tables"`
	// Sequences are the last values of the sequences feeding the tables
	// (a restore raises the destination's to at least these).
	Sequences map[string]int64 `json:"sequences,omitempty"`
	// DDLObject holds the tables' DDL (pg_dump --schema-only): a restore
	// into a database without the tables creates them with it.
	DDLObject string        `json:"ddl_object,omitempty"`
	Objects   []ObjectEntry `json:"objects"`
	// Seal is SHA-256 (unencrypted) or HMAC-SHA-256 under the key
	// (encrypted) of the manifest with Seal empty.
	Seal string `json:"seal"`
}

// Source is the tier and target a backup was taken from.
type Source struct {
	Tier   catalog.Tier `json:"tier"`
	Target string       `json:"target"`
}

// TableEntry is one table in a backup.
type TableEntry struct {
	Table migrator.Table `json:"table"`
	Rows  int64          `json:"rows"`
	// Hash is the content hash of the tenant's rows (see rowHasher): equal
	// rows hash equal whatever tenant id they carry.
	Hash   string `json:"hash"`
	Object string `json:"object"`
}

// ObjectEntry is one stored object: its name (relative to the backup) and
// the size and SHA-256 of its stored bytes.
type ObjectEntry struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Rows is the total row count.
func (m *Manifest) Rows() int64 {
	var n int64
	for _, t := range m.Tables {
		n += t.Rows
	}
	return n
}

// Bytes is the stored size: the sum of its objects' sizes.
func (m *Manifest) Bytes() int64 {
	var n int64
	for _, o := range m.Objects {
		n += o.Size
	}
	return n
}

// Object returns the entry of the named object.
func (m *Manifest) Object(name string) (ObjectEntry, bool) {
	for _, o := range m.Objects {
		if o.Name == name {
			return o, true
		}
	}
	return ObjectEntry{}, false
}

// NewID returns a new backup id for tenant: "<tenant>.<UTC time>.<random>".
// Tenant ids never contain a dot, so TenantOf recovers the tenant.
func NewID(tenant string, at time.Time) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s.%s.%s", tenant, at.UTC().Format("20060102T150405Z"), hex.EncodeToString(b))
}

// TenantOf returns the tenant of a backup id, or ErrInvalid.
func TenantOf(id string) (string, error) {
	tenant, rest, ok := strings.Cut(id, ".")
	if !ok || !catalog.ValidID(tenant) || strings.Count(rest, ".") != 1 || strings.ContainsAny(rest, "/\\") {
		return "", fmt.Errorf("%w: backup id %q is not <tenant>.<time>.<random>", ErrInvalid, id)
	}
	return tenant, nil
}

// prefix is where a backup's objects live in its store.
func prefix(id string) (string, error) {
	tenant, err := TenantOf(id)
	if err != nil {
		return "", err
	}
	return tenant + "/" + id + "/", nil
}

// manifestName is the manifest's object name within a backup.
const manifestName = "manifest.json"

// seal computes the manifest's seal: HMAC under key if key is set.
func (m *Manifest) seal(key []byte) (string, error) {
	c := *m
	c.Seal = ""
	data, err := json.Marshal(&c)
	if err != nil {
		return "", err
	}
	if key != nil {
		mac := hmac.New(sha256.New, key)
		mac.Write(data)
		return hex.EncodeToString(mac.Sum(nil)), nil
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

// encode seals and serialises the manifest.
func (m *Manifest) encode(key []byte) ([]byte, error) {
	s, err := m.seal(key)
	if err != nil {
		return nil, err
	}
	m.Seal = s
	return json.MarshalIndent(m, "", "  ")
}

// decodeManifest parses a manifest without checking its seal (listing).
func decodeManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %w", ErrCorrupt, err)
	}
	if m.Format != FormatVersion {
		return nil, fmt.Errorf("%w: manifest format %d, this version reads %d", ErrCorrupt, m.Format, FormatVersion)
	}
	return &m, nil
}

// verifyManifest parses a manifest and checks its seal under key (which
// must match the manifest's key id if the backup is encrypted).
func verifyManifest(data []byte, key *Key) (*Manifest, error) {
	m, err := decodeManifest(data)
	if err != nil {
		return nil, err
	}
	var raw []byte
	if m.Encryption != "" {
		if key == nil {
			return nil, fmt.Errorf("%w: backup %s is encrypted (key %s)", ErrWrongKey, m.ID, m.KeyID)
		}
		if key.ID() != m.KeyID {
			return nil, fmt.Errorf("%w: backup %s was sealed with key %s, given key %s", ErrWrongKey, m.ID, m.KeyID, key.ID())
		}
		raw = key.raw
	}
	want, err := m.seal(raw)
	if err != nil {
		return nil, err
	}
	if !hmac.Equal([]byte(want), []byte(m.Seal)) {
		return nil, fmt.Errorf("%w: manifest of %s does not match its seal", ErrCorrupt, m.ID)
	}
	return m, nil
}
