//go:build !unix

package wire

func fdIdleAndOpen(uintptr) bool { return true }

func peerGone(uintptr) bool { return false }
