package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one worker process (integration/chaos/worker).
type Proc struct {
	ID      string // instance id
	Gen     int    // 1 for the first process of this id, 2 for its first restart...
	Started time.Time

	cmd  *exec.Cmd
	done chan struct{} // closed once the process exited and its output was read
	run  *Run

	mu          sync.Mutex
	firstCommit time.Time
	commits     int64 // records committed by this process
	commitTxns  int
	aborts      map[string]int
	exitLine    string
	waitErr     error
	stageSeen   chan struct{} // closed at the first STAGE line after armStage
	resumedAt   time.Time     // set by Cont: events after it are the zombie's
	afterWake   []string      // event lines after resumedAt
}

// startProc starts worker id with the run's flags plus extra.
func (r *Run) startProc(id string, extra ...string) (*Proc, error) {
	r.mu.Lock()
	r.gens[id]++
	gen := r.gens[id]
	r.mu.Unlock()
	args := append(r.workerArgs(id), extra...)
	cmd := exec.Command(r.Cfg.WorkerBin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logPath := filepath.Join(r.Dir, fmt.Sprintf("%s.%d.log", id, gen))
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	p := &Proc{ID: id, Gen: gen, cmd: cmd, done: make(chan struct{}), run: r, aborts: map[string]int{}}
	p.Started = time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting worker %s: %w", id, err)
	}
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	go func() {
		defer close(p.done)
		defer logf.Close()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.line(sc.Text())
		}
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
	}()
	return p, nil
}

func (p *Proc) line(l string) {
	f := strings.Fields(l)
	if len(f) == 0 {
		return
	}
	now := time.Now()
	if tap := p.run.Cfg.Tap; tap != nil {
		tap(p, now, l)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.resumedAt.IsZero() && f[0] != "STAGE" {
		p.afterWake = append(p.afterWake, l)
	}
	switch f[0] {
	case "COMMIT":
		if len(f) < 4 {
			return
		}
		n, _ := strconv.ParseInt(f[2], 10, 64)
		if p.firstCommit.IsZero() {
			p.firstCommit = now
		}
		p.commits += n
		p.commitTxns++
		if start, err := strconv.ParseInt(f[3], 10, 64); err == nil {
			p.run.onCommit(p.ID, now, time.Unix(0, start)) // faults.go
		}
		p.run.committed.Add(n)
		p.run.notify()
	case "ABORT":
		if len(f) >= 3 {
			p.aborts[f[2]]++
		}
	case "STAGE":
		if p.stageSeen != nil {
			select {
			case <-p.stageSeen:
			default:
				close(p.stageSeen)
			}
		}
	case "EXIT":
		p.exitLine = l
	}
}

// armStage returns a channel closed at the next STAGE line.
func (p *Proc) armStage() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stageSeen = make(chan struct{})
	return p.stageSeen
}

// Done is closed once the process exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Alive reports whether the process has not exited.
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Signal sends sig to the process (not its group: the worker has no children).
func (p *Proc) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return fmt.Errorf("worker %s.%d already exited", p.ID, p.Gen)
	}
	return p.cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the process to exit.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("worker %s.%d did not exit within %v", p.ID, p.Gen, timeout)
	}
}

// ExitStatus describes how the process ended: its exit code (-1 when killed
// by a signal), the signal, and the worker's EXIT line.
func (p *Proc) ExitStatus() (code int, sig syscall.Signal, line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	code, line = 0, p.exitLine
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		ws, _ := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			return -1, ws.Signal(), line
		}
		return ws.ExitStatus(), 0, line
	}
	if p.waitErr != nil {
		return -2, 0, p.waitErr.Error()
	}
	return code, 0, line
}

// FirstCommit waits up to timeout for the process's first commit and returns
// the time from its start to it.
func (p *Proc) FirstCommit(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		fc := p.firstCommit
		p.mu.Unlock()
		if !fc.IsZero() {
			return fc.Sub(p.Started), nil
		}
		if !p.Alive() {
			_, _, line := p.ExitStatus()
			return 0, fmt.Errorf("worker %s.%d exited before its first commit (%s)", p.ID, p.Gen, line)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("worker %s.%d did not commit within %v of its start", p.ID, p.Gen, timeout)
		}
		if err := p.run.waitChange(ctx, 100*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

func (p *Proc) markResumed() {
	p.mu.Lock()
	p.resumedAt = time.Now()
	p.afterWake = nil
	p.mu.Unlock()
}

func (p *Proc) wakeEvents() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.afterWake...)
}

func (p *Proc) abortCounts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string]int, len(p.aborts))
	for k, v := range p.aborts {
		m[k] = v
	}
	return m
}

// kill SIGKILLs the process if it still runs and waits for it (cleanup).
func (p *Proc) kill() {
	if p.Alive() {
		_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGCONT)
		_ = p.cmd.Process.Kill()
	}
	_ = p.Wait(30 * time.Second)
}
