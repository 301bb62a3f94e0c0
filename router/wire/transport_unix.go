//go:build unix

package wire

import (
	"syscall"
	"unsafe"
)

// fdIdleAndOpen reads from an idle connection's non-blocking socket: no
// data yet (EAGAIN) means it is still open; end of file means the backend
// closed it; bytes mean the backend sent something unasked (say a 408), so
// the connection is not usable either.
func fdIdleAndOpen(fd uintptr) bool {
	var b [1]byte
	// Non-blocking: a raw call, not announced to the scheduler (see sysConn).
	_, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), 1)
	return errno == syscall.EAGAIN || errno == syscall.EWOULDBLOCK
}

// peerGone peeks at a socket without consuming or blocking: end of file or
// an error (a reset) means the peer has gone; data or nothing yet means it
// is there.
func peerGone(fd uintptr) bool {
	var b [1]byte
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case err == nil:
		return n == 0
	case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR:
		return false
	}
	return true
}
