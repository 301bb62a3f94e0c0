package backup

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/catalog"
)

// TestHiddenKeysAreNoTenantIDs: staging and retained keys can never be a
// tenant's id, and say whose they are.
func TestHiddenKeysAreNoTenantIDs(t *testing.T) {
	for _, tc := range []struct{ kind, tenant string }{{"s", "acme"}, {"r", "acme"}, {"r", strings.Repeat("a", 63)}} {
		k := hiddenKey(tc.kind, tc.tenant)
		if catalog.ValidID(k) || !strings.HasPrefix(k, "~"+tc.kind+"~") || !strings.HasSuffix(k, "~"+tc.tenant) {
			t.Errorf("hiddenKey(%q, %q) = %q", tc.kind, tc.tenant, k)
		}
	}
}

// TestPurgeKeyOnlyRetained: the purge refuses, before touching the
// database, any key that is not a retained copy's.
func TestPurgeKeyOnlyRetained(t *testing.T) {
	for _, key := range []string{"acme", "~s~x~acme", "", "~r"} {
		if _, err := purgeKey(context.Background(), nil, nil, "tenant_id", key); !errors.Is(err, ErrInvalid) {
			t.Errorf("purgeKey(%q): %v, want ErrInvalid", key, err)
		}
	}
}
