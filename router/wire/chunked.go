package wire

import (
	"bufio"
	"bytes"
	"errors"
)

// The fast path's relay of a backend's chunked response body. It passes the
// body through as it is (sizes, extensions, trailers) and checks its
// framing as strictly as net/http reads it (net/http/internal's chunked
// reader and body.readTrailer), so the response ends exactly where the
// backend ended it and whatever the client receives, net/http reads the
// same way; FuzzChunkedBody checks that.

// Limits net/http applies to a chunked body.
const (
	maxChunkLine   = 4096     // a chunk-size line, without its CRLF
	maxChunkExcess = 16 << 10 // framing overhead beyond what the data pays for
	maxTrailer     = 4096     // the trailer section with its final blank line
)

// relayChunked copies a chunked body from src to dst. wait, if not nil,
// waits for src to have more (see Conn.waitBackend).
func relayChunked(dst *bufio.Writer, src *bufio.Reader, wait func() error) error {
	var excess int64
	for {
		l, err := chunkLine(dst, src, wait)
		if err != nil {
			return err
		}
		if len(l)-2 >= maxChunkLine {
			return ErrBadChunk
		}
		excess += int64(len(l))
		size, ok := chunkSize(l[:len(l)-2])
		if !ok {
			return ErrBadChunk
		}
		excess = max(excess-16-2*size, 0)
		if excess > maxChunkExcess {
			return ErrBadChunk
		}
		if _, err := dst.Write(l); err != nil {
			return ErrClientWrite
		}
		if size == 0 {
			return relayTrailer(dst, src, wait)
		}
		if err := relayN(dst, src, size, wait); err != nil {
			return err
		}
		crlf, err := src.Peek(2)
		if err != nil {
			return err
		}
		if crlf[0] != '\r' || crlf[1] != '\n' {
			return ErrBadChunk
		}
		if _, err := dst.Write(crlf); err != nil {
			return ErrClientWrite
		}
		_, _ = src.Discard(2)
	}
}

// relayTrailer copies the trailer fields and the final blank line: each a
// "name: value" field (no folding, no control bytes), all within
// maxTrailer bytes.
func relayTrailer(dst *bufio.Writer, src *bufio.Reader, wait func() error) error {
	total := 0
	for {
		l, err := chunkLine(dst, src, wait)
		if err != nil {
			return err
		}
		total += len(l)
		if total > maxTrailer {
			return ErrBadChunk
		}
		if len(l) > 2 && !trailerField(l[:len(l)-2]) {
			return ErrBadChunk
		}
		if _, err := dst.Write(l); err != nil {
			return ErrClientWrite
		}
		if len(l) == 2 {
			return nil
		}
	}
}

// trailerField: a token, a colon, a field value.
func trailerField(l []byte) bool {
	colon := bytes.IndexByte(l, ':')
	return colon > 0 && allToken(l[:colon]) && allFieldValue(l[colon+1:])
}

// chunkLine reads one CRLF-terminated line of chunked framing (a CR
// anywhere else, a bare LF or a line over the read buffer is refused),
// flushing dst and waiting when src has nothing buffered.
func chunkLine(dst *bufio.Writer, src *bufio.Reader, wait func() error) ([]byte, error) {
	if src.Buffered() == 0 {
		if err := dst.Flush(); err != nil {
			return nil, ErrClientWrite
		}
		if wait != nil {
			if err := wait(); err != nil {
				return nil, err
			}
		}
	}
	l, err := src.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, ErrBadChunk
		}
		return nil, err
	}
	if len(l) < 2 || bytes.IndexByte(l, '\r') != len(l)-2 {
		return nil, ErrBadChunk
	}
	return l, nil
}

// chunkSize parses a chunk-size line (without CRLF) as net/http does:
// trailing whitespace dropped, the extension cut at ';', then hex digits
// only (at most 15, so the size fits an int64).
func chunkSize(b []byte) (int64, bool) {
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	if i := bytes.IndexByte(b, ';'); i >= 0 {
		b = b[:i]
	}
	if len(b) == 0 || len(b) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	return n, true
}
