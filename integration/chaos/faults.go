package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// faults is the state of the fault cells that need proxies: a KafkaProxy
// per worker (Cell.KafkaProxy or Cell.LostEndTxnAck), a Postgres proxy with
// crash hooks (Cell.PGCrash), and the one armed trigger.
type faults struct {
	mu      sync.Mutex
	kprox   map[string]*KafkaProxy // by worker id
	pgProxy *LostAckProxy
	trig    *trigger
	pgCrash map[string]int // "before"/"after" -> workers killed there
	commits []commitEvent  // every COMMIT line, in order
}

// trigger fires once, at the first request or COMMIT that match accepts.
type trigger struct {
	match func(worker string, node int, key int16) bool
	act   func(worker string, node int) // runs in the proxy, before it goes on
	fired chan struct{}
	// set when fired
	worker string
	node   int
	at     time.Time
}

func newTrigger(match func(worker string, node int, key int16) bool, act func(worker string, node int)) *trigger {
	return &trigger{match: match, act: act, fired: make(chan struct{})}
}

// arm makes t the run's trigger (replacing any other).
func (r *Run) arm(t *trigger) {
	f := r.faultState()
	f.mu.Lock()
	f.trig = t
	f.mu.Unlock()
}

// disarm removes t if it is still armed. If it was not (it fired, maybe
// just now, after its await timed out), disarm waits until its action is
// done and reports true: the fault happened and must be healed.
func (r *Run) disarm(t *trigger) (fired bool) {
	f := r.faultState()
	f.mu.Lock()
	armed := f.trig == t
	if armed {
		f.trig = nil
	}
	f.mu.Unlock()
	if !armed {
		<-t.fired
	}
	return !armed
}

// fire runs the armed trigger if it matches, once; it reports whether it did.
func (r *Run) fire(worker string, node int, key int16) bool {
	f := r.faultState()
	f.mu.Lock()
	t := f.trig
	if t == nil || !t.match(worker, node, key) {
		f.mu.Unlock()
		return false
	}
	f.trig = nil
	f.mu.Unlock()
	t.worker, t.node, t.at = worker, node, time.Now()
	if t.act != nil {
		t.act(worker, node)
	}
	close(t.fired)
	return true
}

// await waits until t fired, at most timeout.
func (t *trigger) await(ctx context.Context, timeout time.Duration, what string) error {
	select {
	case <-t.fired:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s did not happen within %v", what, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// awaitUnlessDone is t.await, except that it gives up, reporting done,
// once the whole input is committed (InputCommitted, looked at about once a
// second): then no EndTxn or COMMIT is left to come. A short cell's input
// can run out while a broker of the previous round restarts.
func (r *Run) awaitUnlessDone(ctx context.Context, t *trigger, timeout time.Duration, what string) (done bool, err error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-t.fired:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		case <-tick.C:
		}
		if r.InputCommitted(ctx) {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("%s did not happen within %v", what, timeout)
		}
	}
}

func (r *Run) faultState() *faults {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.faults == nil {
		r.faults = &faults{kprox: map[string]*KafkaProxy{}, pgCrash: map[string]int{}}
	}
	return r.faults
}

// setupFaults starts the Postgres proxy of the crash cells (the Kafka
// proxies start per worker, in faultArgs).
func (r *Run) setupFaults(context.Context) error {
	if r.Cell.PGCrash == "" {
		return nil
	}
	if r.proxy != nil {
		return fmt.Errorf("cell %s: PGCrash and LostCommitAck cannot be combined", r.Cell.Name)
	}
	f := r.faultState()
	pc := r.pool.Config().ConnConfig
	f.pgProxy = &LostAckProxy{Target: fmt.Sprintf("%s:%d", pc.Host, pc.Port)}
	prefix := "chaos-" + r.Cfg.RunID + "-"
	hook := func(phase string) func(app string) bool {
		return func(app string) bool {
			if len(app) <= len(prefix) || app[:len(prefix)] != prefix {
				return false
			}
			return r.fire(app[len(prefix):], 0, phaseKey(phase))
		}
	}
	switch r.Cell.PGCrash {
	case "before":
		f.pgProxy.BeforeCommit = hook("before")
	case "after":
		f.pgProxy.AfterCommit = hook("after")
	default:
		return fmt.Errorf("cell %s: PGCrash %q: want before or after", r.Cell.Name, r.Cell.PGCrash)
	}
	addr, err := f.pgProxy.Listen()
	if err != nil {
		return err
	}
	r.proxyAddr = addr
	return nil
}

// phaseKey stands in for an api key in the trigger of a Postgres crash.
func phaseKey(phase string) int16 {
	if phase == "before" {
		return -2
	}
	return -3
}

// faultArgs are the extra worker flags of the fault cells: -dial-via
// through the worker's own Kafka proxy (started on first use).
func (r *Run) faultArgs(id string) []string {
	if !r.Cell.KafkaProxy && r.Cell.LostEndTxnAck == 0 {
		return nil
	}
	f := r.faultState()
	f.mu.Lock()
	p := f.kprox[id]
	f.mu.Unlock()
	if p == nil {
		p = &KafkaProxy{Targets: r.Cfg.Brokers, DropEndTxnEvery: r.Cell.LostEndTxnAck, DropFor: r.Cell.LostEndTxnFor}
		p.OnRequest = func(target int, key int16) { r.fire(id, target+1, key) }
		p.Log = func(format string, args ...any) { r.logf("kafka proxy of %s: "+format, append([]any{id}, args...)...) }
		if _, err := p.Listen(); err != nil {
			r.Fail("starting the Kafka proxy of %s: %v", id, err)
			return nil
		}
		f.mu.Lock()
		f.kprox[id] = p
		f.mu.Unlock()
	}
	return []string{"-dial-via", p.DialVia()}
}

// closeFaults stops the proxies.
func (r *Run) closeFaults() {
	r.mu.Lock()
	f := r.faults
	r.mu.Unlock()
	if f == nil {
		return
	}
	f.mu.Lock()
	ps := f.kprox
	f.kprox = map[string]*KafkaProxy{}
	pg := f.pgProxy
	f.mu.Unlock()
	for _, p := range ps {
		p.Close()
	}
	if pg != nil {
		pg.Close()
	}
}

// noteFaults notes the evidence that the proxies injected their faults, and
// fails the cell when they did not.
func (r *Run) noteFaults() {
	r.mu.Lock()
	f := r.faults
	r.mu.Unlock()
	if f == nil {
		return
	}
	f.mu.Lock()
	var endTxns, dropped int64
	for _, p := range f.kprox {
		endTxns += p.EndTxns()
		dropped += p.Dropped()
	}
	crashed := f.pgCrash[r.Cell.PGCrash]
	f.mu.Unlock()
	if r.Cell.LostEndTxnAck > 0 {
		r.Note("the Kafka proxies saw %d EndTxn requests and dropped the answer to %d of them (closing the connection); the workers logged %d \"transaction outcome unknown\"",
			endTxns, dropped, r.countLogLines("transaction outcome unknown"))
		if dropped == 0 {
			r.Fail("the Kafka proxies dropped no EndTxn answer")
		}
	}
	if f.pgProxy != nil {
		r.Note("the Postgres proxy saw %d COMMITs; workers SIGKILLed %s COMMIT: %d; the workers logged %d \"commit outcome unknown\"",
			f.pgProxy.commits.Load(), r.Cell.PGCrash, crashed, r.countLogLines("commit outcome unknown"))
	}
}

// commitEvent is one COMMIT line of a worker.
type commitEvent struct {
	worker    string
	at, begun time.Time // when the line arrived; when its batch began
}

// onCommit records a commit for the fault schedules (called by Proc.line
// with the Proc's lock held: it takes only the faults' lock).
func (r *Run) onCommit(worker string, at, begun time.Time) {
	f := r.faultState()
	f.mu.Lock()
	f.commits = append(f.commits, commitEvent{worker, at, begun})
	f.mu.Unlock()
}

// firstCommitAfter is the first commit (of worker, or of anyone if worker is
// "") of a batch begun after t.
func (r *Run) firstCommitAfter(worker string, t time.Time) (commitEvent, bool) {
	f := r.faultState()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.commits {
		if (worker == "" || c.worker == worker) && c.begun.After(t) {
			return c, true
		}
	}
	return commitEvent{}, false
}
