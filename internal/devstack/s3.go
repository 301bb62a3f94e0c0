package devstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ErrWeedNotFound is returned (wrapped) when no SeaweedFS binary can be found.
var ErrWeedNotFound = errors.New("weed binary not found; run `make tools` to build bin/weed")

const (
	s3ReadyTimeout = 90 * time.Second
	s3StopGrace    = 5 * time.Second
	// s3ProbeBucket is where the readiness probe writes (and deletes) an object.
	s3ProbeBucket = "switchyard-ready"
)

// S3Options configures StartS3.
type S3Options struct {
	// Binary is the SeaweedFS executable (weed). If empty, bin/weed in the
	// nearest directory (upwards from the working directory) containing
	// go.mod is used, then weed on $PATH.
	Binary string
	// DataDir keeps the server's data; if empty, a temporary directory is
	// used and removed by Stop.
	DataDir string
	// LogOutput receives the server's output (default: discarded).
	LogOutput io.Writer
}

// S3 is a SeaweedFS server (master, volume, filer and S3 gateway in one
// process, `weed server -s3`) on loopback ports: a real S3-compatible
// object store with one identity whose keys are random per start.
type S3 struct {
	binary    string
	args      []string
	port      int
	accessKey string
	secretKey string
	output    io.Writer
	tail      *tailBuffer
	tempDirs  []string

	mu      sync.Mutex
	proc    *process
	stopped bool
}

// StartS3 starts a SeaweedFS server with its S3 gateway on free loopback
// ports and waits until an object can be written and read through it.
// Stop it with Stop.
func StartS3(ctx context.Context, opts S3Options) (*S3, error) {
	binary, err := resolveWeedBinary(opts.Binary)
	if err != nil {
		return nil, err
	}
	return retryPortConflicts(func() (*S3, error) { return startS3(ctx, binary, opts) })
}

func startS3(ctx context.Context, binary string, opts S3Options) (*S3, error) {
	s := &S3{binary: binary, tail: &tailBuffer{}, accessKey: randomHex(10), secretKey: randomHex(20)}
	s.output = childOutput(s.tail, opts.LogOutput, "")
	tmp, err := os.MkdirTemp("", "switchyard-s3-")
	if err != nil {
		return nil, fmt.Errorf("devstack: s3 dir: %w", err)
	}
	s.tempDirs = append(s.tempDirs, tmp)
	dataDir := opts.DataDir
	if dataDir == "" {
		dataDir = filepath.Join(tmp, "data")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("devstack: s3 data dir: %w", err)
	}
	configFile := filepath.Join(tmp, "s3.json")
	if err := s.writeConfig(configFile); err != nil {
		_ = s.Stop()
		return nil, err
	}
	if err := s.buildArgs(dataDir, configFile); err != nil {
		_ = s.Stop()
		return nil, err
	}
	if err := s.launch(); err != nil {
		_ = s.Stop()
		return nil, err
	}
	if err := s.waitReady(ctx); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// writeConfig writes the S3 identities file: one admin identity.
func (s *S3) writeConfig(path string) error {
	cfg := map[string]any{"identities": []map[string]any{{
		"name":        "switchyard",
		"credentials": []map[string]string{{"accessKey": s.accessKey, "secretKey": s.secretKey}},
		"actions":     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}}}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("devstack: s3 config: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("devstack: s3 config: %w", err)
	}
	return nil
}

// buildArgs picks the ports (every listener explicit, on loopback; the
// extra gateways off) and builds the command line.
func (s *S3) buildArgs(dataDir, configFile string) error {
	ports, err := freePorts(8)
	if err != nil {
		return err
	}
	s.port = ports[0]
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	s.args = []string{"server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir=" + dataDir,
		"-master.port=" + p(1), "-master.port.grpc=" + p(2), "-master.telemetry=false",
		"-master.volumeSizeLimitMB=64", "-volume.max=200",
		"-volume.port=" + p(3), "-volume.port.grpc=" + p(4),
		"-filer.port=" + p(5), "-filer.port.grpc=" + p(6),
		"-filer.localSocket=" + filepath.Join(filepath.Dir(configFile), "filer.sock"),
		"-s3", "-s3.port=" + p(0), "-s3.port.grpc=" + p(7),
		"-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.config=" + configFile,
		"-s3.localSocket=" + filepath.Join(filepath.Dir(configFile), "s3.sock"),
	}
	return nil
}

// Endpoint is the S3 gateway's address, "127.0.0.1:port" (plain HTTP).
func (s *S3) Endpoint() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// AccessKey is the access key of the server's one identity.
func (s *S3) AccessKey() string { return s.accessKey }

// SecretKey is the secret key of the server's one identity.
func (s *S3) SecretKey() string { return s.secretKey }

// Client returns a new minio client for the server.
func (s *S3) Client() (*minio.Client, error) {
	return minio.New(s.Endpoint(), &minio.Options{
		Creds:  credentials.NewStaticV4(s.accessKey, s.secretKey, ""),
		Secure: false,
	})
}

func (s *S3) launch() error {
	proc, err := startProcess(procSpec{name: "weed server", path: s.binary, args: s.args, output: s.output}, s.tail)
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	s.mu.Lock()
	s.proc = proc
	s.mu.Unlock()
	return nil
}

// waitReady polls until an object can be put, read back and deleted.
func (s *S3) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s3ReadyTimeout)
	defer cancel()
	client, err := s.Client()
	if err != nil {
		return fmt.Errorf("devstack: s3 client: %w", err)
	}
	var lastErr error
	for {
		if s.proc.exited() {
			return fmt.Errorf("devstack: %w%s", s.proc.exitError(s.tail), withTail(s.tail))
		}
		if lastErr = s.probe(ctx, client); lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("devstack: s3 not ready at %s: %w (last error: %w)%s", s.Endpoint(), ctx.Err(), lastErr, withTail(s.tail))
		case <-s.proc.done:
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *S3) probe(ctx context.Context, c *minio.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.MakeBucket(ctx, s3ProbeBucket, minio.MakeBucketOptions{}); err != nil {
		if ok, e := c.BucketExists(ctx, s3ProbeBucket); e != nil || !ok {
			return fmt.Errorf("make bucket: %w", err)
		}
	}
	body := []byte("ok")
	if _, err := c.PutObject(ctx, s3ProbeBucket, "probe", bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	obj, err := c.GetObject(ctx, s3ProbeBucket, "probe", minio.GetObjectOptions{})
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	got, err := io.ReadAll(obj)
	_ = obj.Close()
	if err != nil || !bytes.Equal(got, body) {
		return fmt.Errorf("get: read back %q: %w", got, err)
	}
	return c.RemoveObject(ctx, s3ProbeBucket, "probe", minio.RemoveObjectOptions{})
}

// Stop terminates the server (SIGTERM, then SIGKILL after 5s) and removes
// its temporary files. Stop is idempotent.
func (s *S3) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	var errs []error
	if s.proc != nil {
		if err := s.proc.stop(syscall.SIGTERM, s3StopGrace); err != nil {
			errs = append(errs, fmt.Errorf("devstack: %w", err))
		}
	}
	for _, dir := range s.tempDirs {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("devstack: remove %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// LogTail returns the last lines the server printed.
func (s *S3) LogTail() string { return s.tail.String() }

// resolveWeedBinary finds the weed executable; see S3Options.Binary.
func resolveWeedBinary(explicit string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("devstack: weed binary: %w: %w", err, ErrWeedNotFound)
		}
		return explicit, nil
	}
	var looked []string
	if root, err := moduleRoot(); err == nil {
		candidate := filepath.Join(root, "bin", "weed")
		if st, err := os.Stat(candidate); err == nil && !st.IsDir() {
			return candidate, nil
		}
		looked = append(looked, candidate)
	}
	if p, err := exec.LookPath("weed"); err == nil {
		return p, nil
	}
	looked = append(looked, "$PATH")
	return "", fmt.Errorf("devstack: looked in %v: %w", looked, ErrWeedNotFound)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
