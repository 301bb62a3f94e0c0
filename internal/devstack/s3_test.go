package devstack

import (
	"errors"
	"strings"
	"testing"
)

func TestResolveWeedBinaryMissing(t *testing.T) {
	t.Parallel()
	_, err := resolveWeedBinary("/nonexistent/weed")
	if !errors.Is(err, ErrWeedNotFound) {
		t.Fatalf("err = %v, want ErrWeedNotFound", err)
	}
}

func TestS3ArgsAllLoopbackAndExplicit(t *testing.T) {
	t.Parallel()
	s := &S3{}
	if err := s.buildArgs("/data", "/cfg/s3.json"); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"-ip=127.0.0.1": true, "-ip.bind=127.0.0.1": true, "-s3": true, "-s3.config=/cfg/s3.json": true,
		"-s3.port.iceberg=0": true, "-s3.port.lance=0": true, "-master.telemetry=false": true}
	ports := 0
	for _, a := range s.args {
		delete(want, a)
		if strings.Contains(a, ".port=") || strings.Contains(a, ".port.grpc=") {
			ports++
		}
	}
	if len(want) != 0 {
		t.Fatalf("missing args %v in %v", want, s.args)
	}
	if ports < 8 {
		t.Fatalf("%d explicit ports, want 8 (HTTP and gRPC of master, volume, filer, s3): %v", ports, s.args)
	}
}
