//go:build !linux

package wire

import "net"

func newSysConn(c net.Conn) net.Conn { return c }

// peerClosed is only known on Linux (TCP_INFO).
func peerClosed(uintptr) bool { return false }
