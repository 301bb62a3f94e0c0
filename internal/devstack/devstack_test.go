package devstack

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestFreePort(t *testing.T) {
	t.Parallel()
	seen := make(map[int]bool)
	for range 50 {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		seen[port] = true
		// Retry briefly: a child being forked by a parallel test holds
		// copies of our descriptors, including FreePort's probe socket, until
		// it execs.
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			var l net.Listener
			if l, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
				_ = l.Close()
				break
			}
		}
		if err != nil {
			t.Fatalf("port %d not bindable: %v", port, err)
		}
	}
}

func TestPrefixWriter(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w := &prefixWriter{w: &buf, prefix: []byte("[n1] "), atStart: true}
	for _, s := range []string{"a\nb", "c\n", "\nd\n"} {
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := buf.String(), "[n1] a\n[n1] bc\n[n1] \n[n1] d\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestTailBuffer(t *testing.T) {
	t.Parallel()
	var tb tailBuffer
	for i := range tailLines + 10 {
		fmt.Fprintf(&tb, "line %d\n", i)
	}
	s := tb.String()
	if !bytes.HasPrefix([]byte(s), []byte("line 10\n")) || !bytes.HasSuffix([]byte(s), []byte(fmt.Sprintf("line %d", tailLines+9))) {
		t.Fatalf("unexpected tail:\n%s", s)
	}
}

func TestResolveConsulBinaryMissing(t *testing.T) {
	t.Parallel()
	_, err := resolveConsulBinary("/nonexistent/consul")
	if !errors.Is(err, ErrConsulNotFound) {
		t.Fatalf("err = %v, want ErrConsulNotFound", err)
	}
}

func TestResolvePostgresBinDirMissing(t *testing.T) {
	t.Parallel()
	_, err := resolvePostgresBinDir("/nonexistent")
	if !errors.Is(err, ErrPostgresNotFound) {
		t.Fatalf("err = %v, want ErrPostgresNotFound", err)
	}
}

func TestPostgresPortTaken(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	p, err := StartPostgres(t.Context(), PostgresOptions{Port: port})
	if err == nil {
		_ = p.Stop()
		t.Fatal("started on a taken port")
	}
	if !errors.Is(err, errPortInUse) || !strings.Contains(err.Error(), "log tail") {
		t.Fatalf("err = %v, want a port conflict with the log tail", err)
	}
}
