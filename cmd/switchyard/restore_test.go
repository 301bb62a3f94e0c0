package main

import (
	"context"
	"strings"
	"testing"
)

// TestRunRestoreUsage: flag combinations that cannot be a restore are
// refused before any request is sent (the controller URL is unreachable).
func TestRunRestoreUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"acme"},
		{"acme", "--from", "b"}, // neither --as nor --in-place
		{"acme", "--from", "b", "--as", "x", "--in-place"},        // both
		{"acme", "--in-place"},                                    // no backup
		{"acme", "--from", "b", "--in-place", "--target", "cl-1"}, // in place stays on the tenant's target
		{"acme", "--from", "b", "--as", "x", "extra"},
	} {
		err := runRestore(context.Background(), append(args, "--controller", "http://127.0.0.1:1"))
		if err == nil || !strings.HasPrefix(err.Error(), "usage:") {
			t.Errorf("restore %v: %v, want a usage error", args, err)
		}
	}
}
