package devstack

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

var (
	portsMu     sync.Mutex
	portsIssued = make(map[int]bool)
)

// Ports below minPort are left alone (well-known and registered services).
const minPort = 10000

// FreePort returns a loopback port that was free for both TCP and UDP at the
// time of the call (Consul's gossip listens on both). The same port is never
// returned twice within a process.
//
// Ports are taken from below the kernel's ephemeral range when it leaves room
// (on Linux by default 10000-32767): a port the kernel hands out for
// 127.0.0.1:0 is also a candidate for the local end of any outgoing
// connection, which could take it between FreePort and the bind, or while a
// killed server is down before Restart. Otherwise FreePort falls back to
// listening on 127.0.0.1:0.
//
// The port is only reserved by convention: another process may still bind it
// before the caller does.
func FreePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	lo, hi := portRange()
	const attempts = 200
	var lastErr error
	for range attempts {
		port := 0
		if hi > lo {
			port = lo + rand.IntN(hi-lo+1)
			if portsIssued[port] {
				continue
			}
		}
		port, err := probePort(port)
		if err != nil {
			lastErr = err
			continue
		}
		if portsIssued[port] {
			continue
		}
		portsIssued[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("devstack: find free port: none after %d attempts: %w", attempts, lastErr)
}

// probePort binds TCP and UDP on 127.0.0.1:port (0 for any) and returns the
// port if both succeeded.
func probePort(port int) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	port = l.Addr().(*net.TCPAddr).Port
	u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return 0, err
	}
	_ = u.Close()
	return port, nil
}

// portRange returns the range FreePort draws from, or (0, 0) to let the
// kernel choose.
func portRange() (lo, hi int) {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	fields := strings.Fields(string(data))
	if len(fields) != 2 {
		return 0, 0
	}
	ephemeralLo, err := strconv.Atoi(fields[0])
	if err != nil || ephemeralLo-1-minPort < 1000 {
		return 0, 0
	}
	return minPort, ephemeralLo - 1
}

// freePorts returns n distinct ports from FreePort.
func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	return ports, nil
}
