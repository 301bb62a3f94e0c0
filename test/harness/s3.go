package harness

import (
	"context"
	"os"
	"testing"

	"github.com/switchyard/switchyard/internal/devstack"
)

type (
	// S3 is a running SeaweedFS server with its S3 gateway.
	S3 = devstack.S3
	// S3Options configures StartS3.
	S3Options = devstack.S3Options
)

// StartS3 starts a SeaweedFS S3 server; an unnamed binary is taken from
// $SWITCHYARD_WEED when it is set.
func StartS3(ctx context.Context, opts S3Options) (*S3, error) {
	if opts.Binary == "" {
		opts.Binary = os.Getenv("SWITCHYARD_WEED")
	}
	return devstack.StartS3(ctx, opts)
}

// S3T starts a SeaweedFS S3 server for the test and stops it (removing its
// data) when the test ends, logging its output tail if the test failed. A
// missing weed binary fails the test (run `make tools`).
func S3T(t testing.TB) *S3 {
	t.Helper()
	out, path := testLogFile(t, "weed.log")
	s, err := StartS3(t.Context(), S3Options{LogOutput: out})
	if err != nil {
		t.Fatalf("start s3: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("s3 %s log tail (full log: %s):\n%s", s.Endpoint(), path, s.LogTail())
		}
		if err := s.Stop(); err != nil {
			t.Errorf("stop s3: %v", err)
		}
	})
	return s
}
