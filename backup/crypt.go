package backup

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Key is an operator-held AES-256 key. It never appears in logs or
// errors: String and LogValue print only its id.
type Key struct{ raw []byte }

// NewKey wraps 32 raw key bytes.
func NewKey(raw []byte) (*Key, error) {
	if len(raw) != 32 {
		return nil, fmt.Errorf("%w: an AES-256 key is 32 bytes, got %d", ErrInvalid, len(raw))
	}
	return &Key{raw: bytes.Clone(raw)}, nil
}

// ParseKey reads a key written as 64 hex digits, as base64 of 32 bytes, or
// as 32 raw bytes (surrounding whitespace ignored for the text forms).
func ParseKey(data []byte) (*Key, error) {
	if len(data) == 32 {
		return NewKey(data)
	}
	s := strings.TrimSpace(string(data))
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return NewKey(b)
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == 32 {
		return NewKey(b)
	}
	return nil, fmt.Errorf("%w: a key is 64 hex digits, base64 of 32 bytes or 32 raw bytes", ErrInvalid)
}

// LoadKey reads the key from the file at path if path is set, else from
// the environment variable env if it is set; (nil, nil) when neither is.
func LoadKey(path, env string) (*Key, error) {
	switch {
	case path != "":
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("backup key file: %w", err)
		}
		return ParseKey(data)
	case env != "" && os.Getenv(env) != "":
		return ParseKey([]byte(os.Getenv(env)))
	}
	return nil, nil
}

// ID names the key without revealing it: 16 hex digits of a domain-
// separated SHA-256 of it.
func (k *Key) ID() string {
	sum := sha256.Sum256(append([]byte("switchyard-backup-key-id\x00"), k.raw...))
	return hex.EncodeToString(sum[:8])
}

// String prints the key's id only.
func (k *Key) String() string { return "key:" + k.ID() }

// LogValue logs the key's id only.
func (k *Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

const (
	sealMagic   = "SYBK\x01"
	segmentSize = 64 << 10
	prefixSize  = 8
)

// sealWriter encrypts a stream in segments of segmentSize with AES-256-GCM:
// a header (magic, nonce prefix), then per segment its ciphertext length
// and ciphertext. Each segment's nonce is the prefix and its index; its
// additional data binds the object name, the index and whether it is the
// last, so segments cannot be reordered, swapped between objects or cut
// off.
type sealWriter struct {
	w      io.Writer
	aead   cipher.AEAD
	prefix [prefixSize]byte
	name   string
	buf    []byte
	index  uint32
	closed bool
}

func newAEAD(k *Key) (cipher.AEAD, error) {
	block, err := aes.NewCipher(k.raw)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// newSealWriter starts a sealed stream for object name on w.
func newSealWriter(w io.Writer, k *Key, name string) (*sealWriter, error) {
	aead, err := newAEAD(k)
	if err != nil {
		return nil, err
	}
	s := &sealWriter{w: w, aead: aead, name: name, buf: make([]byte, 0, segmentSize)}
	if _, err := rand.Read(s.prefix[:]); err != nil {
		return nil, err
	}
	if _, err := w.Write(append([]byte(sealMagic), s.prefix[:]...)); err != nil {
		return nil, err
	}
	return s, nil
}

func segmentAD(name string, index uint32, final bool) []byte {
	ad := make([]byte, 0, len(name)+5)
	ad = append(ad, name...)
	ad = binary.BigEndian.AppendUint32(ad, index)
	if final {
		return append(ad, 1)
	}
	return append(ad, 0)
}

func (s *sealWriter) nonce(index uint32) []byte {
	n := make([]byte, 0, 12)
	n = append(n, s.prefix[:]...)
	return binary.BigEndian.AppendUint32(n, index)
}

func (s *sealWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		room := segmentSize - len(s.buf)
		take := min(room, len(p))
		s.buf = append(s.buf, p[:take]...)
		p, n = p[take:], n+take
		if len(s.buf) == segmentSize && len(p) > 0 {
			if err := s.flush(false); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (s *sealWriter) flush(final bool) error {
	ct := s.aead.Seal(nil, s.nonce(s.index), s.buf, segmentAD(s.name, s.index, final))
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(ct)))
	if _, err := s.w.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := s.w.Write(ct); err != nil {
		return err
	}
	s.index++
	s.buf = s.buf[:0]
	return nil
}

// Close writes the last segment (it does not close the underlying writer).
func (s *sealWriter) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	return s.flush(true)
}

// openReader decrypts a stream sealWriter wrote; any change to it is
// ErrCorrupt, a different key ErrWrongKey.
type openReader struct {
	r      *bufio.Reader
	aead   cipher.AEAD
	prefix [prefixSize]byte
	name   string
	index  uint32
	plain  []byte
	done   bool
}

func newOpenReader(r io.Reader, k *Key, name string) (*openReader, error) {
	aead, err := newAEAD(k)
	if err != nil {
		return nil, err
	}
	o := &openReader{r: bufio.NewReaderSize(r, segmentSize+64), aead: aead, name: name}
	hdr := make([]byte, len(sealMagic)+prefixSize)
	if _, err := io.ReadFull(o.r, hdr); err != nil || string(hdr[:len(sealMagic)]) != sealMagic {
		return nil, fmt.Errorf("%w: %s: not a sealed object", ErrCorrupt, name)
	}
	copy(o.prefix[:], hdr[len(sealMagic):])
	return o, nil
}

func (o *openReader) Read(p []byte) (int, error) {
	for len(o.plain) == 0 {
		if o.done {
			return 0, io.EOF
		}
		if err := o.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, o.plain)
	o.plain = o.plain[n:]
	return n, nil
}

func (o *openReader) next() error {
	var hdr [4]byte
	if _, err := io.ReadFull(o.r, hdr[:]); err != nil {
		return fmt.Errorf("%w: %s: truncated after segment %d", ErrCorrupt, o.name, o.index)
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size > segmentSize+uint32(o.aead.Overhead()) {
		return fmt.Errorf("%w: %s: segment %d length %d", ErrCorrupt, o.name, o.index, size)
	}
	ct := make([]byte, size)
	if _, err := io.ReadFull(o.r, ct); err != nil {
		return fmt.Errorf("%w: %s: truncated in segment %d", ErrCorrupt, o.name, o.index)
	}
	nonce := append(append([]byte{}, o.prefix[:]...), binary.BigEndian.AppendUint32(nil, o.index)...)
	plain, err := o.aead.Open(nil, nonce, ct, segmentAD(o.name, o.index, false))
	if err != nil {
		plain, err = o.aead.Open(nil, nonce, ct, segmentAD(o.name, o.index, true))
		if err != nil {
			return fmt.Errorf("%w: %s: segment %d fails authentication", ErrCorrupt, o.name, o.index)
		}
		o.done = true
		if _, err := o.r.ReadByte(); !errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: %s: data after the last segment", ErrCorrupt, o.name)
		}
	}
	o.index++
	o.plain = plain
	return nil
}
