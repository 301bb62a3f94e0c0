//go:build linux

package wire

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// sysConn does a connection's reads and writes as raw system calls on its
// non-blocking socket, through the poller (syscall.RawConn: deadlines and
// waiting work as for any net.Conn). A socket read or write never blocks,
// so it need not be announced to the scheduler as a system call that might
// (entersyscall/exitsyscall); announced, every one that happens to span a
// scheduler tick gets its P handed to another thread and back — measured
// here as ~10% of the router's CPU (sysmon waking every 20 µs, futex
// hand-offs). Used for the fast path's client and backend connections.
type sysConn struct {
	net.Conn
	rc syscall.RawConn
}

// newSysConn wraps c, or returns it as it is if it has no raw access.
func newSysConn(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &sysConn{Conn: c, rc: rc}
}

func (c *sysConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n uintptr
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, _, errno = syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch errno {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait until readable
			}
			return true
		}
	})
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return int(n), nil
}

func (c *sysConn) Write(p []byte) (int, error) {
	written := 0
	var errno syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		for written < len(p) {
			n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[written])), uintptr(len(p)-written))
			switch e {
			case 0:
				written += int(n)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // wait until writable
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return written, c.opError("write", err)
	case errno != 0:
		return written, c.opError("write", os.NewSyscallError("write", errno))
	}
	return written, nil
}

// opError wraps err as net.Conn methods do, so callers' checks (timeouts,
// closed connections) see the same errors.
func (c *sysConn) opError(op string, err error) error {
	if oe := (*net.OpError)(nil); errors.As(err, &oe) {
		return err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// peerClosed reports whether the peer of a TCP socket has closed its side
// or reset the connection, whatever it sent first and nobody has read yet
// (over TLS, a close_notify alert comes before the end of file, so a peek
// at the socket finds data): the socket is in CLOSE_WAIT or CLOSE.
func peerClosed(fd uintptr) bool {
	const tcpClose, tcpCloseWait = 7, 8 // include/net/tcp_states.h
	var info syscall.TCPInfo
	n := uint32(unsafe.Sizeof(info))
	_, _, errno := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, fd, syscall.SOL_TCP, syscall.TCP_INFO,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&n)), 0)
	return errno == 0 && (info.State == tcpClose || info.State == tcpCloseWait)
}
