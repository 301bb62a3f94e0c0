package integration

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/catalog"
	"github.com/switchyard/switchyard/migrator"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// switchyardBinary builds cmd/switchyard once per test run.
func switchyardBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "switchyard-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "switchyard")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/switchyard/switchyard/cmd/switchyard").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("build switchyard: %v", buildErr)
	}
	return binPath
}

// SIGKILL of the migrator process during the copy, the catch-up and the
// switch: a new migrator resumes (or rolls back the switch and retries),
// the move completes, the data is equal, nothing is left behind.
func TestMoveSurvivesSIGKILL(t *testing.T) {
	bin := switchyardBinary(t)
	for _, point := range []string{"copy", "catch-up", "switch"} {
		t.Run(point, func(t *testing.T) {
			s := newMoveStack(t)
			s.seedTenant("victim", "free", catalog.TierShared, "pool-1", 400)
			storm := s.startStorm("victim", 2, 3*time.Millisecond)
			cmd := exec.Command(bin, "move", "victim", "--to", "db-1", "--consul", s.consul.HTTPAddr(),
				"--chunk", "50", "--rate", "2000", "--lock-ttl", "1s", "--retention", "10ms")
			cmd.Env = append(os.Environ(), "SWITCHYARD_FAULT_STALL="+point)
			stderr, _ := cmd.StderrPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			stalled := make(chan bool, 1)
			go func() {
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					if strings.HasPrefix(sc.Text(), "STALLED AT") {
						stalled <- true
						break
					}
				}
				for sc.Scan() {
				}
			}()
			select {
			case <-stalled:
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("migrator never reached %s", point)
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			killedAt := time.Now()

			mg := migrator.New(s.consul.Client(), migrator.Config{ID: "resumer", LockTTL: time.Second, Logger: testLogger(t)})
			ctx := context.Background()
			moves, err := mg.List(ctx)
			if err != nil || len(moves) != 1 {
				t.Fatalf("moves after the kill: %v %v", moves, err)
			}
			id := moves[0].ID
			t.Logf("killed in %s (phase %s)", point, moves[0].Phase)
			for {
				err := mg.Run(ctx, id)
				if errors.Is(err, migrator.ErrLocked) {
					if time.Since(killedAt) > 30*time.Second {
						t.Fatal("the dead migrator's lock never expired")
					}
					time.Sleep(200 * time.Millisecond)
					continue
				}
				if err != nil {
					t.Fatalf("resume: %v", err)
				}
				break
			}
			m, _ := mg.Get(ctx, id)
			if m.Phase != migrator.PhaseDone {
				t.Fatalf("after resume: %s (%s) %s", m.Phase, m.Status, m.Error)
			}
			time.Sleep(200 * time.Millisecond)
			storm.halt()
			if point != "switch" && storm.failures.Load() != 0 {
				t.Fatalf("%d failed requests: %v", storm.failures.Load(), storm.failLog)
			}
			if point == "switch" {
				// The tenant sat frozen and fenced while no migrator lived:
				// held requests timed out with 503 + Retry-After. Nothing else.
				for _, f := range storm.failLog {
					if !strings.HasSuffix(f, ": 503") {
						t.Fatalf("unexpected failure while frozen: %s", f)
					}
				}
				t.Logf("%d requests got 503 while the killed switch waited for a new migrator", storm.failures.Load())
			}
			tenant, _ := s.store.GetTenant(ctx, "victim")
			if tenant.Target != "db-1" || tenant.State != catalog.StateActive {
				t.Fatalf("catalog after resume: %+v", tenant)
			}
			storm.checkModel(t, dsnOf(t, s, "db-1", "victim"))
			if left := leftoversIn(t, s.pgPool.DSN("pool"), "victim"); len(left) > 0 {
				t.Fatalf("left behind on the source: %v", left)
			}
		})
	}
}
