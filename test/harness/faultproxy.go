package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// proxyMode is what a FaultProxy does with traffic.
type proxyMode int

const (
	modePass      proxyMode = iota // forward both ways
	modeCut                        // connections closed, new ones reset
	modeBlackhole                  // connections kept, every byte dropped
)

// FaultProxy is a TCP proxy on loopback in front of one target (a Consul
// agent, a PostgreSQL server): a test points one process at it and then
// breaks that process's path alone. Faults take effect at once on every
// connection, open or new:
//
//   - Cut closes every connection and resets new ones (the peer sees a
//     refused or reset connection, at once);
//   - Blackhole accepts and keeps connections but forwards nothing, either
//     way (the peer sees a timeout);
//   - Delay(d) holds every chunk d before forwarding it;
//   - Heal forwards again. Connections whose bytes a blackhole dropped are
//     closed, as their streams are corrupt.
//
// CutOn arms a one-shot cut triggered by a client's bytes, to aim a fault at
// one request (the migrator's catalog flip, say).
type FaultProxy struct {
	ln net.Listener

	mu      sync.Mutex
	target  string
	mode    proxyMode
	delay   time.Duration
	trigger *proxyTrigger
	conns   map[*proxyConn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// proxyTrigger is a one-shot cut armed by CutOn.
type proxyTrigger struct {
	match        func([]byte) bool
	afterForward bool
	fired        chan struct{}
}

// proxyConn is one client connection and its upstream.
type proxyConn struct {
	client, server net.Conn
	tainted        bool // bytes were dropped: the stream is corrupt
	once           sync.Once
}

func (c *proxyConn) close() {
	c.once.Do(func() {
		resetClose(c.client)
		if c.server != nil {
			_ = c.server.Close()
		}
	})
}

// resetClose closes a TCP connection with a reset, so the peer notices at
// once instead of reading EOF after its next write.
func resetClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// StartFaultProxy listens on a free loopback port and forwards every
// connection to target.
func StartFaultProxy(target string) (*FaultProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("harness: fault proxy listen: %w", err)
	}
	p := &FaultProxy{ln: ln, target: target, conns: make(map[*proxyConn]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *FaultProxy) Target() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.target
}

// SetTarget points new connections at another address; open ones keep
// theirs.
func (p *FaultProxy) SetTarget(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = addr
}

// Cut closes every connection and resets new ones until Heal.
func (p *FaultProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutLocked()
}

func (p *FaultProxy) cutLocked() {
	p.mode = modeCut
	for c := range p.conns {
		c.close()
		delete(p.conns, c)
	}
}

// Blackhole keeps connections open and accepts new ones, but forwards
// nothing either way until Heal.
func (p *FaultProxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = modeBlackhole
}

// Delay holds every chunk for d before forwarding it (0 for none). It
// combines with the mode: a delayed proxy can still be cut.
func (p *FaultProxy) Delay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// Heal forwards again without delay, disarms a trigger, and closes the
// connections a blackhole corrupted.
func (p *FaultProxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.delay, p.trigger = modePass, 0, nil
	for c := range p.conns {
		if c.tainted {
			c.close()
			delete(p.conns, c)
		}
	}
}

// CutOn arms a one-shot cut: the first chunk a client sends for which match
// is true cuts the proxy (as Cut). With afterForward false the chunk is
// dropped: the target never sees it. With afterForward true the chunk
// reaches the target, the answer is dropped, and the cut follows after
// hold (time for the target to act on it). The channel closes when the
// cut is in force. Heal disarms a trigger that has not fired.
func (p *FaultProxy) CutOn(match func([]byte) bool, afterForward bool) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.trigger = &proxyTrigger{match: match, afterForward: afterForward, fired: make(chan struct{})}
	return p.trigger.fired
}

// triggerHold is how long a CutOn with afterForward lets the target act on
// the forwarded chunk before the connections go.
const triggerHold = 300 * time.Millisecond

// Close stops the proxy and closes every connection. It is idempotent.
func (p *FaultProxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	err := p.ln.Close()
	for c := range p.conns {
		c.close()
		delete(p.conns, c)
	}
	p.mu.Unlock()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (p *FaultProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(client)
	}
}

// serve dials the target for one client connection and pumps both ways.
func (p *FaultProxy) serve(client net.Conn) {
	defer p.wg.Done()
	p.mu.Lock()
	mode, target, closed := p.mode, p.target, p.closed
	p.mu.Unlock()
	if closed || mode == modeCut {
		resetClose(client)
		return
	}
	c := &proxyConn{client: client}
	if mode != modeBlackhole {
		server, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			resetClose(client)
			return
		}
		c.server = server
	} else {
		c.tainted = true // never connected upstream: useless after Heal
	}
	p.mu.Lock()
	if p.closed || p.mode == modeCut {
		p.mu.Unlock()
		c.close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { p.pump(c, c.client, c.server, true) })
	if c.server != nil {
		wg.Go(func() { p.pump(c, c.server, c.client, false) })
	}
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// pump copies src to dst chunk by chunk, applying the proxy's faults to
// each chunk; upstream says the chunk goes client → target.
func (p *FaultProxy) pump(c *proxyConn, src, dst net.Conn, upstream bool) {
	defer c.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.forward(c, dst, buf[:n], upstream) {
			return
		}
		if err != nil {
			if errors.Is(err, io.EOF) && dst != nil {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
					return
				}
			}
			return
		}
	}
}

// forward applies the proxy's state to one chunk; false ends the pump.
func (p *FaultProxy) forward(c *proxyConn, dst net.Conn, chunk []byte, upstream bool) bool {
	p.mu.Lock()
	mode, delay := p.mode, p.delay
	tr := p.trigger
	fire := upstream && mode == modePass && tr != nil && tr.match(chunk)
	if fire {
		p.trigger = nil
		if !tr.afterForward {
			p.cutLocked()
			close(tr.fired)
			p.mu.Unlock()
			return false
		}
		p.mode = modeCut // the answer is dropped from now on
		mode = modePass  // but this chunk goes through
	}
	if mode == modeBlackhole || dst == nil {
		c.tainted = true
	}
	p.mu.Unlock()
	switch {
	case mode == modeCut:
		return false
	case mode == modeBlackhole || dst == nil:
		return true
	}
	if delay > 0 {
		time.Sleep(delay)
		p.mu.Lock()
		cut := p.mode == modeCut && !fire
		p.mu.Unlock()
		if cut {
			return false
		}
	}
	_, err := dst.Write(chunk)
	if fire {
		time.Sleep(triggerHold)
		p.mu.Lock()
		p.cutLocked()
		close(tr.fired) // before anyone can see the cut
		p.mu.Unlock()
		return false
	}
	return err == nil
}
