package backup

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
)

// List returns the manifests of the complete backups in s, of tenant
// ("" for every tenant), newest first. Manifests are read, not verified
// (Restore verifies); an unreadable one is skipped.
func List(ctx context.Context, s Store, tenant string) ([]*Manifest, error) {
	p := ""
	if tenant != "" {
		p = tenant + "/"
	}
	names, err := s.List(ctx, p)
	if err != nil {
		return nil, err
	}
	var out []*Manifest
	for _, n := range names {
		if !strings.HasSuffix(n, "/"+manifestName) {
			continue
		}
		rc, err := s.Get(ctx, n)
		if err != nil {
			continue
		}
		data, err := io.ReadAll(io.LimitReader(rc, 64<<20))
		rc.Close()
		if err != nil {
			continue
		}
		if m, err := decodeManifest(data); err == nil {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}

// Delete removes a backup: its manifest first (so it is no longer listed
// or restorable), then its objects. A missing backup is ErrNotFound.
func Delete(ctx context.Context, s Store, id string) error {
	p, err := prefix(id)
	if err != nil {
		return err
	}
	names, err := s.List(ctx, p)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err := s.Delete(ctx, p+manifestName); err != nil {
		return err
	}
	for _, n := range names {
		if err := s.Delete(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// Describe reads a backup's manifest without verifying it (Restore does);
// a missing backup is ErrNotFound.
func Describe(ctx context.Context, s Store, id string) (*Manifest, error) {
	data, err := readManifest(ctx, s, id)
	if err != nil {
		return nil, err
	}
	return decodeManifest(data)
}

// readManifest reads a backup's manifest as stored (at most 64 MiB).
func readManifest(ctx context.Context, s Store, id string) ([]byte, error) {
	p, err := prefix(id)
	if err != nil {
		return nil, err
	}
	rc, err := s.Get(ctx, p+manifestName)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read manifest of %s: %w", id, err)
	}
	return data, nil
}
