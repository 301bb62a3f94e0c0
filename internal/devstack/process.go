package devstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procSpec describes a child process to run.
type procSpec struct {
	name   string // for error messages
	path   string
	args   []string
	dir    string              // working directory; "" for the current one
	cred   *syscall.Credential // nil to run as the current user
	output io.Writer           // receives stdout and stderr
}

// command builds an exec.Cmd that runs in its own process group and is
// killed by the kernel if the thread that started it dies.
//
// Caveat (Linux): the parent-death signal fires when the starting OS thread
// exits, not the whole process. The Go runtime does not retire threads unless
// a goroutine exits while locked to one, so in practice this means "when the
// test binary dies".
func (s procSpec) command() *exec.Cmd {
	cmd := exec.Command(s.path, s.args...)
	cmd.Dir = s.dir
	cmd.Stdout = s.output
	cmd.Stderr = s.output
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: s.cred,
	}
	// Grandchildren (postgres backends) inherit the output pipe; do not let
	// them keep Wait blocked once the child itself has exited.
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// run runs the command to completion, killing its process group if ctx ends
// first.
func (s procSpec) run(ctx context.Context) error {
	cmd := s.command()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		return nil
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return fmt.Errorf("%s: %w (then killed: %w)", s.name, ctx.Err(), <-done)
	}
}

// errPortInUse marks a start that failed because a port was taken between
// FreePort and the child binding it; the caller retries with new ports.
var errPortInUse = errors.New("port already in use")

// portConflict reports whether a child's output shows a failed bind.
func portConflict(output string) bool {
	return strings.Contains(strings.ToLower(output), "address already in use")
}

// process is a running child started by startProcess.
type process struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error // valid once done is closed
	outMark int64 // position in the output tail when the child started
}

// startProcess starts the child described by s. It is not tied to a context:
// the child runs until stopped or killed.
func startProcess(s procSpec, tail *tailBuffer) (*process, error) {
	cmd := s.command()
	mark := tail.mark()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.name, err)
	}
	p := &process{name: s.name, cmd: cmd, done: make(chan struct{}), outMark: mark}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the child has exited and been reaped.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes how the child exited; call only after done is
// closed. tail is the buffer the child's output went to; if that shows a
// failed bind, the error wraps errPortInUse.
func (p *process) exitError(tail *tailBuffer) error {
	err := p.waitErr
	if err == nil {
		err = errors.New("exit status 0")
	}
	if portConflict(tail.since(p.outMark)) {
		err = fmt.Errorf("%w: %w", errPortInUse, err)
	}
	return fmt.Errorf("%s exited unexpectedly: %w", p.name, err)
}

// stop sends sig to the child, waits up to grace for it to exit and then
// kills its whole process group with SIGKILL.
func (p *process) stop(sig syscall.Signal, grace time.Duration) error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
		return p.kill()
	}
}

// kill sends SIGKILL to the child, its process group and all its
// descendants, waits for the child to be reaped and (bounded) for the
// descendants to be gone.
//
// Descendants matter for postgres: backends and auxiliary processes put
// themselves in their own sessions, and one still attached to the old shared
// memory makes the next postmaster refuse to start.
func (p *process) kill() error {
	if p.exited() {
		return nil
	}
	pid := p.cmd.Process.Pid
	// Freeze the child so it cannot fork while its children are collected.
	// The child is not reaped yet (done is open), so pid is still its own.
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	kids := descendants(pid)
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s: %w", p.name, err)
	}
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	<-p.done
	waitGone(kids, 5*time.Second)
	return nil
}

// procInfo is a process as listed in /proc.
type procInfo struct {
	pid, ppid int
	zombie    bool
}

// listProcs reads the process table from /proc; nil if unavailable.
func listProcs() []procInfo {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var procs []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if info, ok := readProc(pid); ok {
			procs = append(procs, info)
		}
	}
	return procs
}

// readProc reads /proc/<pid>/stat; ok is false if the process is gone.
func readProc(pid int) (info procInfo, ok bool) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	// Format: pid (comm) state ppid ...; comm may contain spaces and parens.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return procInfo{}, false
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 2 {
		return procInfo{}, false
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return procInfo{}, false
	}
	return procInfo{pid: pid, ppid: ppid, zombie: fields[0] == "Z" || fields[0] == "X"}, true
}

// descendants returns the live descendants of pid.
func descendants(pid int) []int {
	children := make(map[int][]int)
	for _, p := range listProcs() {
		if !p.zombie {
			children[p.ppid] = append(children[p.ppid], p.pid)
		}
	}
	var out []int
	for queue := children[pid]; len(queue) > 0; queue = queue[1:] {
		out = append(out, queue[0])
		queue = append(queue, children[queue[0]]...)
	}
	return out
}

// waitGone waits, for at most limit, until none of pids is alive. Zombies
// count as gone: they hold no resources, and nothing may be reaping them.
func waitGone(pids []int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for _, pid := range pids {
		for time.Now().Before(deadline) {
			if info, ok := readProc(pid); !ok || info.zombie {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
