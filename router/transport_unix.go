//go:build unix

package router

import "syscall"

// fdIdleAndOpen reads from an idle connection's non-blocking socket: no
// data yet (EAGAIN) means it is still open; end of file means the backend
// closed it; bytes mean the backend sent something unasked (say a 408), so
// the connection is not usable either.
func fdIdleAndOpen(fd uintptr) bool {
	var b [1]byte
	_, err := syscall.Read(int(fd), b[:])
	return err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
}
