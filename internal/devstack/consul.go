package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// ErrConsulNotFound is returned (wrapped) when no consul binary can be found.
var ErrConsulNotFound = errors.New("consul binary not found; run `make tools` to build bin/consul")

// ErrStopped is returned (wrapped) by Restart after Stop.
var ErrStopped = errors.New("already stopped")

const (
	consulReadyTimeout = 30 * time.Second
	consulStopGrace    = 5 * time.Second
	// readyKeyPrefix is where readiness probes write (and then delete) a key.
	readyKeyPrefix = "_switchyard_harness/ready/"
)

// ConsulOptions configures StartConsul and StartConsulCluster.
type ConsulOptions struct {
	// Binary is the consul executable. If empty, bin/consul in the nearest
	// directory (upwards from the working directory) containing go.mod is
	// used, then consul on $PATH.
	Binary string
	// DataDir, if empty, runs a dev agent (-dev, state kept in memory). If
	// set, runs a real single server (bootstrap_expect = 1) keeping its
	// state in DataDir, so data survives Restart and reuse of the directory.
	// For a cluster, node i keeps its state in DataDir/node<i>; if empty,
	// temporary directories are used and removed by Stop.
	DataDir string
	// LogOutput receives the agents' output (default: discarded). It need
	// not be safe for concurrent use. Cluster nodes prefix their lines with
	// their node name.
	LogOutput io.Writer
}

// consulPorts are the loopback ports of one agent; all other listeners
// (DNS, HTTPS, gRPC, gRPC TLS) are disabled.
type consulPorts struct {
	HTTP, SerfLAN, SerfWAN, Server int
}

// Consul is a consul agent running as a child process.
type Consul struct {
	binary     string
	name       string
	dev        bool
	configFile string
	ports      consulPorts
	output     io.Writer
	tail       *tailBuffer
	transport  *http.Transport
	client     *api.Client
	tempDirs   []string // removed by Stop

	mu      sync.Mutex
	proc    *process
	stopped bool
}

// consulNodeSeq makes node names unique within the process.
var consulNodeSeq atomic.Int64

func nextConsulNodeName() string {
	return fmt.Sprintf("switchyard-%d-%d", os.Getpid(), consulNodeSeq.Add(1))
}

// StartConsul starts a consul agent on free loopback ports and waits until it
// has a leader and serves KV writes and reads. Stop it with Stop.
func StartConsul(ctx context.Context, opts ConsulOptions) (*Consul, error) {
	binary, err := resolveConsulBinary(opts.Binary)
	if err != nil {
		return nil, err
	}
	return retryPortConflicts(func() (*Consul, error) { return startConsul(ctx, binary, opts) })
}

func startConsul(ctx context.Context, binary string, opts ConsulOptions) (*Consul, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "switchyard-consul-")
	if err != nil {
		return nil, fmt.Errorf("devstack: consul config dir: %w", err)
	}
	c, err := newConsul(consulNode{
		binary:    binary,
		name:      nextConsulNodeName(),
		ports:     consulPorts{HTTP: ports[0], SerfLAN: ports[1], SerfWAN: ports[2], Server: ports[3]},
		configDir: tmp,
		dataDir:   opts.DataDir,
		expect:    1,
		output:    opts.LogOutput,
	})
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	c.tempDirs = append(c.tempDirs, tmp)
	if err := c.launch(); err != nil {
		_ = c.Stop()
		return nil, err
	}
	if err := c.waitReady(ctx); err != nil {
		_ = c.Stop()
		return nil, err
	}
	return c, nil
}

// startAttempts bounds how often a start is retried with new ports after a
// port was taken between FreePort and the child binding it.
const startAttempts = 3

// retryPortConflicts calls start until it succeeds, fails for another reason
// than a port conflict, or startAttempts is reached.
func retryPortConflicts[T any](start func() (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		v, err := start()
		if err == nil || !errors.Is(err, errPortInUse) || attempt == startAttempts {
			return v, err
		}
	}
}

// consulNode is everything needed to configure one agent.
type consulNode struct {
	binary    string
	name      string
	ports     consulPorts
	configDir string // where consul.json is written
	dataDir   string // "" for a dev agent
	expect    int    // bootstrap_expect for servers
	join      []int  // serf LAN ports of the other servers
	output    io.Writer
	prefix    string // prefix for lines written to output
}

func newConsul(n consulNode) (*Consul, error) {
	cfg := map[string]any{
		"node_name":            n.name,
		"bind_addr":            "127.0.0.1",
		"client_addr":          "127.0.0.1",
		"advertise_addr":       "127.0.0.1",
		"advertise_addr_wan":   "127.0.0.1",
		"disable_update_check": true,
		"log_level":            "warn",
		"ports": map[string]int{
			"http":     n.ports.HTTP,
			"serf_lan": n.ports.SerfLAN,
			"serf_wan": n.ports.SerfWAN,
			"server":   n.ports.Server,
			"https":    -1,
			"dns":      -1,
			"grpc":     -1,
			"grpc_tls": -1,
		},
		// Production timings are 5x slower; loopback needs no slack.
		"performance": map[string]any{"raft_multiplier": 1},
		// Let tests use short session TTLs (locks of killed processes expire fast).
		"session_ttl_min": "1s",
	}
	dev := n.dataDir == ""
	if !dev {
		if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("devstack: consul data dir: %w", err)
		}
		abs, err := filepath.Abs(n.dataDir)
		if err != nil {
			return nil, fmt.Errorf("devstack: consul data dir: %w", err)
		}
		cfg["server"] = true
		cfg["bootstrap_expect"] = n.expect
		cfg["data_dir"] = abs
	}
	if len(n.join) > 0 {
		addrs := make([]string, len(n.join))
		for i, p := range n.join {
			addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		}
		cfg["retry_join"] = addrs
		cfg["retry_interval"] = "250ms"
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("devstack: consul config: %w", err)
	}
	configFile := filepath.Join(n.configDir, "consul.json")
	if err := os.WriteFile(configFile, data, 0o600); err != nil {
		return nil, fmt.Errorf("devstack: consul config: %w", err)
	}

	c := &Consul{
		binary:     n.binary,
		name:       n.name,
		dev:        dev,
		configFile: configFile,
		ports:      n.ports,
		tail:       &tailBuffer{},
	}
	c.output = childOutput(c.tail, n.output, n.prefix)
	c.transport = http.DefaultTransport.(*http.Transport).Clone()
	c.client, err = api.NewClient(&api.Config{
		Address:    c.HTTPAddr(),
		Scheme:     "http",
		HttpClient: &http.Client{Transport: c.transport},
	})
	if err != nil {
		return nil, fmt.Errorf("devstack: consul client: %w", err)
	}
	return c, nil
}

// HTTPAddr returns the agent's HTTP API address, "127.0.0.1:port".
func (c *Consul) HTTPAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.ports.HTTP))
}

// NodeName returns the agent's node name, unique within the process.
func (c *Consul) NodeName() string { return c.name }

// Client returns an API client for the agent. The same client is returned
// on every call and keeps working across Restart.
func (c *Consul) Client() *api.Client { return c.client }

// serverAddr is the agent's RPC address as reported by /v1/status/leader.
func (c *Consul) serverAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.ports.Server))
}

// launch starts the agent process; the caller waits for readiness.
func (c *Consul) launch() error {
	args := []string{"agent", "-config-file=" + c.configFile}
	if c.dev {
		args = append(args, "-dev")
	}
	proc, err := startProcess(procSpec{
		name:   "consul " + c.name,
		path:   c.binary,
		args:   args,
		output: c.output,
	}, c.tail)
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	c.mu.Lock()
	c.proc = proc
	c.mu.Unlock()
	return nil
}

// waitReady polls until the agent reports a leader and a KV write and read
// through it succeed, for at most consulReadyTimeout.
func (c *Consul) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, consulReadyTimeout)
	defer cancel()
	c.mu.Lock()
	proc := c.proc
	c.mu.Unlock()
	var lastErr error
	for {
		if proc.exited() {
			return fmt.Errorf("devstack: consul %s: %w%s", c.name, proc.exitError(c.tail), withTail(c.tail))
		}
		if lastErr = c.probe(ctx); lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("devstack: consul %s not ready at %s: %w (last error: %w)%s",
				c.name, c.HTTPAddr(), ctx.Err(), lastErr, withTail(c.tail))
		case <-proc.done:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// probe checks once that the agent has a leader and serves KV.
func (c *Consul) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	q := (&api.QueryOptions{}).WithContext(ctx)
	w := (&api.WriteOptions{}).WithContext(ctx)
	leader, err := c.client.Status().LeaderWithQueryOptions(q)
	if err != nil {
		return fmt.Errorf("status/leader: %w", err)
	}
	if leader == "" {
		return errors.New("no leader yet")
	}
	key := readyKeyPrefix + c.name
	if _, err := c.client.KV().Put(&api.KVPair{Key: key, Value: []byte("ok")}, w); err != nil {
		return fmt.Errorf("kv put: %w", err)
	}
	pair, _, err := c.client.KV().Get(key, q)
	if err != nil {
		return fmt.Errorf("kv get: %w", err)
	}
	if pair == nil || string(pair.Value) != "ok" {
		return errors.New("kv get: probe key missing after put")
	}
	if _, err := c.client.KV().Delete(key, w); err != nil {
		return fmt.Errorf("kv delete: %w", err)
	}
	return nil
}

// Stop terminates the agent (SIGTERM, then SIGKILL to its process group
// after 5s) and removes the temporary files it created. A persistent
// DataDir is kept. Stop is idempotent; Restart fails after it.
func (c *Consul) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	var errs []error
	if c.proc != nil {
		if err := c.proc.stop(syscall.SIGTERM, consulStopGrace); err != nil {
			errs = append(errs, fmt.Errorf("devstack: %w", err))
		}
	}
	c.transport.CloseIdleConnections()
	for _, dir := range c.tempDirs {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("devstack: remove %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// Kill sends SIGKILL to the agent (and its process group) and waits for it to exit,
// simulating a crash. Restart brings it back.
func (c *Consul) Kill() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return nil
	}
	err := c.proc.kill()
	c.transport.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	return nil
}

// Restart stops the agent if it is running and starts it again with the same
// ports, node name and data directory, then waits for readiness. A dev agent
// comes back empty; a server with a DataDir keeps its state.
func (c *Consul) Restart(ctx context.Context) error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return fmt.Errorf("devstack: restart consul %s: %w", c.name, ErrStopped)
	}
	proc := c.proc
	c.mu.Unlock()
	if proc != nil {
		if err := proc.stop(syscall.SIGTERM, consulStopGrace); err != nil {
			return fmt.Errorf("devstack: restart: %w", err)
		}
	}
	c.transport.CloseIdleConnections()
	if err := c.launch(); err != nil {
		return err
	}
	return c.waitReady(ctx)
}

// LogTail returns the last lines the agent printed.
func (c *Consul) LogTail() string { return c.tail.String() }

// resolveConsulBinary finds the consul executable; see ConsulOptions.Binary.
func resolveConsulBinary(explicit string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("devstack: consul binary: %w: %w", err, ErrConsulNotFound)
		}
		return explicit, nil
	}
	var looked []string
	if root, err := moduleRoot(); err == nil {
		candidate := filepath.Join(root, "bin", "consul")
		if st, err := os.Stat(candidate); err == nil && !st.IsDir() {
			return candidate, nil
		}
		looked = append(looked, candidate)
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p, nil
	}
	looked = append(looked, "$PATH")
	return "", fmt.Errorf("devstack: looked in %v: %w", looked, ErrConsulNotFound)
}

// moduleRoot returns the nearest directory at or above the working directory
// that contains go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("devstack: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("devstack: no go.mod above the working directory")
		}
		dir = parent
	}
}
