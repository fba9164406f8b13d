package pipeline

import (
	"sync"
	"time"
)

// State is where a pipeline is in its life, for readiness and liveness
// probes and dashboards.
type State int

// The states, in the order a pipeline usually passes through them.
const (
	// StateIdle: New returned; Run has not been called (or returned and
	// may be called again).
	StateIdle State = iota
	// StateStarting: Run is reaching the brokers, fencing its previous
	// incarnation and joining the group.
	StateStarting
	// StateRunning: the session is open and the last transaction (if any)
	// committed.
	StateRunning
	// StateRebalancing: the last transaction aborted because partitions
	// moved; the pipeline goes on with its new assignment.
	StateRebalancing
	// StateRetrying: the last attempt failed (Cause says why) and the
	// pipeline backs off and retries from the committed offsets.
	StateRetrying
	// StateStopped: Run returned; Cause is its error (nil on a clean stop).
	StateStopped
)

var stateNames = [...]string{"idle", "starting", "running", "rebalancing", "retrying", "stopped"}

// String is the state's name: "running", "retrying", …
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// StateInfo is a pipeline's state, why it is there, and since when.
type StateInfo struct {
	State State
	Cause error // for StateRetrying and StateRebalancing the failure; for StateStopped Run's error
	Since time.Time
}

// Ready reports whether the pipeline is doing its work (running, or going
// through an ordinary rebalance): what a readiness probe asks.
func (s StateInfo) Ready() bool { return s.State == StateRunning || s.State == StateRebalancing }

// HookStateChanged is called on every change of the pipeline's state
// (including a change of cause while retrying).
type HookStateChanged interface {
	OnStateChanged(StateInfo)
}

// state holds the current StateInfo.
type state struct {
	mu  sync.Mutex
	cur StateInfo
}

// State returns the pipeline's current state. Safe to call at any time.
func (p *Pipeline[W]) State() StateInfo {
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	if p.state.cur.Since.IsZero() {
		return StateInfo{State: StateIdle}
	}
	return p.state.cur
}

// setState moves to s, telling the hooks when anything changed.
func (p *Pipeline[W]) setState(s State, cause error) {
	p.state.mu.Lock()
	if p.state.cur.State == s && p.state.cur.Cause == cause && !p.state.cur.Since.IsZero() {
		p.state.mu.Unlock()
		return
	}
	info := StateInfo{State: s, Cause: cause, Since: time.Now()}
	p.state.cur = info
	p.state.mu.Unlock()
	for _, h := range p.hooks.state {
		h.OnStateChanged(info)
	}
}
