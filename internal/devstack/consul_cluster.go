package devstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// serfStatusAlive is serf's member status "alive" as reported by
// /v1/agent/members.
const serfStatusAlive = 1

// ConsulCluster is a set of consul servers on loopback that form one
// datacenter.
type ConsulCluster struct {
	// Nodes are the servers, in start order. Each can be killed and
	// restarted on its own; the cluster keeps quorum while a majority runs.
	Nodes []*Consul

	tempDir string // removed by Stop
}

// StartConsulCluster starts n consul servers on free loopback ports with
// bootstrap_expect = n, each joining the others, and waits until a leader is
// elected, all n are alive members and raft peers, and every node serves KV.
// Each node has its own data directory (see ConsulOptions.DataDir).
func StartConsulCluster(ctx context.Context, n int, opts ConsulOptions) (*ConsulCluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("devstack: consul cluster of %d nodes", n)
	}
	binary, err := resolveConsulBinary(opts.Binary)
	if err != nil {
		return nil, err
	}
	return retryPortConflicts(func() (*ConsulCluster, error) { return startConsulCluster(ctx, n, binary, opts) })
}

func startConsulCluster(ctx context.Context, n int, binary string, opts ConsulOptions) (*ConsulCluster, error) {
	ports, err := freePorts(4 * n)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "switchyard-consul-cluster-")
	if err != nil {
		return nil, fmt.Errorf("devstack: consul cluster dir: %w", err)
	}
	cc := &ConsulCluster{tempDir: tmp}

	for i := range n {
		p := consulPorts{HTTP: ports[4*i], SerfLAN: ports[4*i+1], SerfWAN: ports[4*i+2], Server: ports[4*i+3]}
		var join []int
		for j := range n {
			if j != i {
				join = append(join, ports[4*j+1])
			}
		}
		nodeDir := filepath.Join(tmp, fmt.Sprintf("node%d", i))
		dataDir := filepath.Join(nodeDir, "data")
		if opts.DataDir != "" {
			dataDir = filepath.Join(opts.DataDir, fmt.Sprintf("node%d", i))
		}
		if err := os.MkdirAll(nodeDir, 0o700); err != nil {
			_ = cc.Stop()
			return nil, fmt.Errorf("devstack: consul cluster dir: %w", err)
		}
		name := nextConsulNodeName()
		c, err := newConsul(consulNode{
			binary:    binary,
			name:      name,
			ports:     p,
			configDir: nodeDir,
			dataDir:   dataDir,
			expect:    n,
			join:      join,
			output:    opts.LogOutput,
			prefix:    "[" + name + "] ",
		})
		if err != nil {
			_ = cc.Stop()
			return nil, err
		}
		cc.Nodes = append(cc.Nodes, c)
	}
	for _, c := range cc.Nodes {
		if err := c.launch(); err != nil {
			_ = cc.Stop()
			return nil, err
		}
	}
	if err := cc.waitFormed(ctx); err != nil {
		_ = cc.Stop()
		return nil, err
	}
	for _, c := range cc.Nodes {
		if err := c.waitReady(ctx); err != nil {
			_ = cc.Stop()
			return nil, err
		}
	}
	return cc, nil
}

// waitFormed polls the first node until it sees a leader and all nodes as
// alive serf members and raft peers.
func (cc *ConsulCluster) waitFormed(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, consulReadyTimeout)
	defer cancel()
	n := len(cc.Nodes)
	var lastErr error
	for {
		for _, c := range cc.Nodes {
			if p := c.currentProc(); p.exited() {
				return fmt.Errorf("devstack: consul cluster: node %s: %w%s", c.name, p.exitError(c.tail), withTail(c.tail))
			}
		}
		if lastErr = cc.formed(ctx, cc.Nodes[0], n); lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("devstack: consul cluster of %d not formed: %w (last error: %w)%s",
				n, ctx.Err(), lastErr, cc.tails())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (cc *ConsulCluster) formed(ctx context.Context, c *Consul, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	q := (&api.QueryOptions{}).WithContext(ctx)
	leader, err := c.client.Status().LeaderWithQueryOptions(q)
	if err != nil {
		return fmt.Errorf("status/leader: %w", err)
	}
	if leader == "" {
		return errors.New("no leader yet")
	}
	peers, err := c.client.Status().PeersWithQueryOptions(q)
	if err != nil {
		return fmt.Errorf("status/peers: %w", err)
	}
	if len(peers) != n {
		return fmt.Errorf("%d of %d raft peers", len(peers), n)
	}
	members, err := c.client.Agent().MembersOpts(api.MembersOpts{})
	if err != nil {
		return fmt.Errorf("agent/members: %w", err)
	}
	alive := 0
	for _, m := range members {
		if m.Status == serfStatusAlive {
			alive++
		}
	}
	if alive != n {
		return fmt.Errorf("%d of %d members alive", alive, n)
	}
	return nil
}

// Leader returns the node that is currently the raft leader, asking the
// running nodes in turn.
func (cc *ConsulCluster) Leader(ctx context.Context) (*Consul, error) {
	var errs []error
	for _, c := range cc.Nodes {
		if p := c.currentProc(); p == nil || p.exited() {
			continue
		}
		leader, err := c.client.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, l := range cc.Nodes {
			if l.serverAddr() == leader {
				return l, nil
			}
		}
		errs = append(errs, fmt.Errorf("node %s reports leader %q", c.name, leader))
	}
	return nil, fmt.Errorf("devstack: consul cluster leader: %w", errors.Join(append(errs, errors.New("no leader known"))...))
}

// Stop stops all nodes in parallel and removes the temporary directories.
// It is idempotent.
func (cc *ConsulCluster) Stop() error {
	errs := make([]error, len(cc.Nodes))
	var wg sync.WaitGroup
	for i, c := range cc.Nodes {
		wg.Go(func() { errs[i] = c.Stop() })
	}
	wg.Wait()
	if cc.tempDir != "" {
		if err := os.RemoveAll(cc.tempDir); err != nil {
			errs = append(errs, fmt.Errorf("devstack: remove %s: %w", cc.tempDir, err))
		}
	}
	return errors.Join(errs...)
}

// tails formats the log tails of all nodes for an error message.
func (cc *ConsulCluster) tails() string {
	var b strings.Builder
	for _, c := range cc.Nodes {
		fmt.Fprintf(&b, "\n=== %s ===%s", c.name, withTail(c.tail))
	}
	return b.String()
}

func (c *Consul) currentProc() *process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proc
}
