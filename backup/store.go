package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Store keeps backup objects under slash-separated names. It is what this
// package needs of a place to put backups; DirStore and S3Store implement
// it.
type Store interface {
	// Region is the store's region label, checked against a tenant's
	// residency before anything is written.
	Region() string
	// Put writes an object from r (size -1 if unknown), replacing any.
	Put(ctx context.Context, name string, r io.Reader, size int64) error
	// Get opens an object; a missing one is ErrNotFound.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// List returns the names of the objects under prefix, sorted.
	List(ctx context.Context, prefix string) ([]string, error)
	// Delete removes an object; a missing one is not an error.
	Delete(ctx context.Context, name string) error
}

var (
	_ Store = (*DirStore)(nil)
	_ Store = (*S3Store)(nil)
)

// DirStore keeps objects as files under a directory.
type DirStore struct {
	dir    string
	region string
}

// NewDirStore returns a store in dir (created if missing) labelled region.
func NewDirStore(dir, region string) (*DirStore, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: store directory is empty", ErrInvalid)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("backup store: %w", err)
	}
	return &DirStore{dir: dir, region: region}, nil
}

// Region is the store's region label.
func (d *DirStore) Region() string { return d.region }

func (d *DirStore) path(name string) (string, error) {
	clean := filepath.Clean("/" + name)
	if clean != "/"+name || strings.Contains(name, "\\") {
		return "", fmt.Errorf("%w: object name %q", ErrInvalid, name)
	}
	return filepath.Join(d.dir, filepath.FromSlash(name)), nil
}

// Put writes the object to a temporary file and renames it into place.
func (d *DirStore) Put(ctx context.Context, name string, r io.Reader, _ int64) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("backup store: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".put-*")
	if err != nil {
		return fmt.Errorf("backup store: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := io.Copy(f, ctxReader{ctx, r}); err != nil {
		f.Close()
		return fmt.Errorf("backup store: write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("backup store: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("backup store: %w", err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return fmt.Errorf("backup store: %w", err)
	}
	return nil
}

// Get opens the object's file.
func (d *DirStore) Get(_ context.Context, name string) (io.ReadCloser, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("backup store: %w", err)
	}
	return f, nil
}

// List walks the directory.
func (d *DirStore) List(_ context.Context, prefix string) ([]string, error) {
	var names []string
	err := filepath.WalkDir(d.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), ".put-") {
			return nil
		}
		rel, err := filepath.Rel(d.dir, p)
		if err != nil {
			return err
		}
		if name := filepath.ToSlash(rel); strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backup store: list: %w", err)
	}
	sort.Strings(names)
	return names, nil
}

// Delete removes the object's file.
func (d *DirStore) Delete(_ context.Context, name string) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("backup store: %w", err)
	}
	return nil
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// S3Config locates a bucket in an S3-compatible object store.
type S3Config struct {
	Endpoint  string `json:"endpoint"` // host:port
	Bucket    string `json:"bucket"`
	AccessKey string `json:"access_key"`
	SecretKey string `json:"-"`
	Secure    bool   `json:"secure"` // HTTPS
	// Prefix is prepended to every object name ("" for none).
	Prefix string `json:"prefix,omitempty"`
	// Region is the store's region label (for residency).
	Region string `json:"region"`
}

// Validate says what is missing.
func (c *S3Config) Validate() error {
	var errs []string
	if c.Endpoint == "" {
		errs = append(errs, "endpoint is empty")
	}
	if c.Bucket == "" {
		errs = append(errs, "bucket is empty")
	}
	if c.AccessKey == "" || c.SecretKey == "" {
		errs = append(errs, "access and secret keys are required")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: s3 store: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// S3Store keeps objects in a bucket of an S3-compatible store.
type S3Store struct {
	client *minio.Client
	cfg    S3Config
}

// NewS3Store connects to the bucket, creating it if it does not exist.
func NewS3Store(ctx context.Context, cfg S3Config) (*S3Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: cfg.Secure,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 store: %w", err)
	}
	ok, err := client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("s3 store: bucket %s: %w", cfg.Bucket, err)
	}
	if !ok {
		if err := client.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{}); err != nil {
			return nil, fmt.Errorf("s3 store: make bucket %s: %w", cfg.Bucket, err)
		}
	}
	return &S3Store{client: client, cfg: cfg}, nil
}

// Region is the store's region label.
func (s *S3Store) Region() string { return s.cfg.Region }

// Put uploads the object (multipart when large or of unknown size).
func (s *S3Store) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream"}
	if size < 0 {
		opts.PartSize = 16 << 20
	}
	if _, err := s.client.PutObject(ctx, s.cfg.Bucket, s.cfg.Prefix+name, r, size, opts); err != nil {
		return fmt.Errorf("s3 store: put %s: %w", name, err)
	}
	return nil
}

// Get opens the object; a missing one is ErrNotFound.
func (s *S3Store) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	obj, err := s.client.GetObject(ctx, s.cfg.Bucket, s.cfg.Prefix+name, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("s3 store: get %s: %w", name, err)
	}
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		return nil, fmt.Errorf("s3 store: get %s: %w", name, err)
	}
	return obj, nil
}

// List lists the objects under prefix.
func (s *S3Store) List(ctx context.Context, prefix string) ([]string, error) {
	var names []string
	for obj := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.cfg.Prefix + prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("s3 store: list %s: %w", prefix, obj.Err)
		}
		names = append(names, strings.TrimPrefix(obj.Key, s.cfg.Prefix))
	}
	sort.Strings(names)
	return names, nil
}

// Delete removes the object.
func (s *S3Store) Delete(ctx context.Context, name string) error {
	if err := s.client.RemoveObject(ctx, s.cfg.Bucket, s.cfg.Prefix+name, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("s3 store: delete %s: %w", name, err)
	}
	return nil
}
