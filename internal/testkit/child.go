package testkit

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Child is a test binary re-run as a separate process to run one worker test
// (so it can be SIGKILLed for real). The worker prints "COMMIT <n>" after each
// committed transaction of n records; every other line of its output is
// passed on to stderr.
type Child struct {
	Cmd     *exec.Cmd
	Started time.Time
	Commits chan int      // records per committed transaction
	Done    chan struct{} // closed when the process exited
	Err     error         // cmd.Wait's result, once Done is closed
}

// StartChild runs the test named workerTest of the current test binary in a
// child process with env added to the environment. The process is killed
// when the test ends.
func StartChild(t testing.TB, workerTest string, env ...string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+workerTest+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	c := &Child{Cmd: cmd, Commits: make(chan int, 4096), Done: make(chan struct{})}
	c.Started = time.Now()
	require.NoError(t, cmd.Start())
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			n, ok := strings.CutPrefix(sc.Text(), "COMMIT ")
			if !ok {
				fmt.Fprintln(os.Stderr, "worker:", sc.Text())
				continue
			}
			v, _ := strconv.Atoi(n)
			select {
			case c.Commits <- v:
			default:
			}
		}
		c.Err = cmd.Wait()
		close(c.Done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.Done
	})
	return c
}

// RequireKilled waits for c to die of SIGKILL.
func (c *Child) RequireKilled(t testing.TB, timeout time.Duration, what string) {
	t.Helper()
	select {
	case <-c.Done:
		var ee *exec.ExitError
		require.ErrorAs(t, c.Err, &ee, "%s: worker exited without being killed", what)
		ws, _ := ee.Sys().(syscall.WaitStatus)
		require.Equal(t, syscall.SIGKILL, ws.Signal(), "%s: worker was not SIGKILLed: %v", what, c.Err)
	case <-time.After(timeout):
		t.Fatalf("%s: worker was not killed within %v", what, timeout)
	}
}
