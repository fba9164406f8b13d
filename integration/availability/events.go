package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/exactlyonce/exactly/integration/chaos"
)

// Event is one line a worker printed (integration/chaos/worker), with the
// worker's own timestamp.
type Event struct {
	Kind    string    // COMMIT, ABORT, POLL, WARN, READY, STAGE
	At      time.Time // the worker's clock (same host as the driver)
	Records int       // COMMIT, ABORT, POLL
	// COMMIT: the batch's first poll, first poll to committed, the Stage
	// calls, the commit alone; POLL: Took is first poll to batch complete;
	// ABORT: Took is first poll to aborted.
	Start               time.Time
	Took, Stage, Commit time.Duration
	Parts               []int32         // COMMIT
	Next                map[int32]int64 // COMMIT: the committed next offsets
	Reason              string          // ABORT
	Msg                 string          // WARN: message and err=
}

// ParseLine parses one worker line. ok is false for lines the tool does not
// use (EXIT, unknown kinds); err says what is wrong with a malformed one.
func ParseLine(l string) (ev Event, ok bool, err error) {
	f := strings.Fields(l)
	if len(f) < 2 {
		return ev, false, nil
	}
	ev.Kind = f[0]
	bad := func(why string, args ...any) (Event, bool, error) {
		return Event{}, false, fmt.Errorf("worker line %q: %s", l, fmt.Sprintf(why, args...))
	}
	switch ev.Kind {
	case "COMMIT", "ABORT", "POLL", "WARN", "READY", "STAGE":
	default:
		return ev, false, nil
	}
	at, perr := strconv.ParseInt(f[1], 10, 64)
	if perr != nil {
		return bad("the time %q is not unix nanoseconds", f[1])
	}
	ev.At = time.Unix(0, at)
	ints := func(fs []string) ([]int64, error) {
		out := make([]int64, len(fs))
		for i, s := range fs {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("field %d %q is not an integer", i+2, s)
			}
			out[i] = n
		}
		return out, nil
	}
	switch ev.Kind {
	case "COMMIT":
		// COMMIT <ns> <records> <start ns> <took ns> <stage ns> <commit ns> <p:next,...>
		if len(f) != 8 {
			return bad("want 8 fields (a worker built from this tree), got %d", len(f))
		}
		n, err := ints(f[2:7])
		if err != nil {
			return bad("%v", err)
		}
		ev.Records, ev.Start = int(n[0]), time.Unix(0, n[1])
		ev.Took, ev.Stage, ev.Commit = time.Duration(n[2]), time.Duration(n[3]), time.Duration(n[4])
		ev.Next = map[int32]int64{}
		if f[7] != "-" {
			for _, pn := range strings.Split(f[7], ",") {
				ps, ns, found := strings.Cut(pn, ":")
				p, err1 := strconv.ParseInt(ps, 10, 32)
				next, err2 := strconv.ParseInt(ns, 10, 64)
				if !found || err1 != nil || err2 != nil {
					return bad("partition %q: want partition:next-offset", pn)
				}
				ev.Parts = append(ev.Parts, int32(p))
				ev.Next[int32(p)] = next
			}
		}
	case "ABORT":
		if len(f) < 4 {
			return bad("want ABORT <ns> <reason> <records>")
		}
		ev.Reason = f[2]
		n, err := ints(f[3:min(len(f), 5)])
		if err != nil {
			return bad("%v", err)
		}
		ev.Records = int(n[0])
		if len(n) > 1 {
			ev.Took = time.Duration(n[1]) // first poll -> aborted
		}
	case "POLL":
		if len(f) != 4 {
			return bad("want POLL <ns> <records> <took ns>")
		}
		n, err := ints(f[2:4])
		if err != nil {
			return bad("%v", err)
		}
		ev.Records, ev.Took = int(n[0]), time.Duration(n[1])
	case "WARN":
		_, rest, _ := strings.Cut(l, " ")
		_, ev.Msg, _ = strings.Cut(rest, " ")
	}
	return ev, true, nil
}

// ProcLog is what one worker process printed.
type ProcLog struct {
	Name    string    // w1.2: instance w1, its second process
	ID      string    // instance id
	Started time.Time // the driver's time just before exec
	Ended   time.Time // zero while it runs: when the driver stopped it
	LogPath string
	Events  []Event
}

// Collector gathers every worker's events (chaos.Config.Tap).
type Collector struct {
	mu    sync.Mutex
	procs map[*chaos.Proc]*ProcLog
	order []*ProcLog
	errs  []string
}

// NewCollector returns an empty collector.
func NewCollector() *Collector { return &Collector{procs: map[*chaos.Proc]*ProcLog{}} }

// Tap is the chaos.Config.Tap.
func (c *Collector) Tap(p *chaos.Proc, _ time.Time, line string) {
	ev, ok, err := ParseLine(line)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if len(c.errs) < 10 {
			c.errs = append(c.errs, p.Name()+": "+err.Error())
		}
		return
	}
	if !ok {
		return
	}
	pl := c.procs[p]
	if pl == nil {
		pl = &ProcLog{Name: p.Name(), ID: p.ID, Started: p.Started, LogPath: p.LogPath()}
		c.procs[p] = pl
		c.order = append(c.order, pl)
	}
	pl.Events = append(pl.Events, ev)
}

// Ended records that the driver stopped p at t (its ownership ends there).
func (c *Collector) Ended(p *chaos.Proc, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pl := c.procs[p]; pl != nil {
		pl.Ended = t
		return
	}
	pl := &ProcLog{Name: p.Name(), ID: p.ID, Started: p.Started, Ended: t, LogPath: p.LogPath()}
	c.procs[p] = pl
	c.order = append(c.order, pl)
}

// Errors are the malformed lines seen (at most 10).
func (c *Collector) Errors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.errs...)
}

// Snapshot copies every process's log so far, in the order first seen.
func (c *Collector) Snapshot() []ProcLog {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ProcLog, len(c.order))
	for i, pl := range c.order {
		out[i] = *pl
		out[i].Events = append([]Event(nil), pl.Events...)
	}
	return out
}

// Txn is one committed transaction.
type Txn struct {
	Proc   string
	At     time.Time     // committed
	Begin  time.Time     // the batch was collected: the transaction began
	Took   time.Duration // first poll to committed
	Dur    time.Duration // begin to committed: the transaction's duration
	Stage  time.Duration
	Commit time.Duration
	Parts  []int32
	// Context: the process's WARN and ABORT events from the batch's first
	// poll to its commit.
	Context []Event
}

// Txns are the committed transactions of pl, in order. A transaction
// begins when its batch is complete: the POLL event before its COMMIT
// (without one, at the first poll).
func Txns(pl ProcLog) []Txn {
	var out []Txn
	var poll *Event
	var ctxEvs []Event
	for i := range pl.Events {
		ev := &pl.Events[i]
		switch ev.Kind {
		case "POLL":
			poll = ev
		case "WARN", "ABORT":
			ctxEvs = append(ctxEvs, *ev)
		case "COMMIT":
			t := Txn{Proc: pl.Name, At: ev.At, Begin: ev.Start, Took: ev.Took, Dur: ev.Took,
				Stage: ev.Stage, Commit: ev.Commit, Parts: ev.Parts}
			if poll != nil && !poll.At.Before(ev.Start) && poll.At.Before(ev.At) {
				t.Begin, t.Dur = poll.At, ev.At.Sub(poll.At)
			}
			for _, c := range ctxEvs {
				if !c.At.Before(ev.Start) && !c.At.After(ev.At) {
					t.Context = append(t.Context, c)
				}
			}
			ctxEvs = ctxEvs[:0]
			poll = nil
			out = append(out, t)
		}
	}
	return out
}

// FirstCommit is the time of pl's first commit (zero if none).
func FirstCommit(pl ProcLog) time.Time {
	for _, ev := range pl.Events {
		if ev.Kind == "COMMIT" {
			return ev.At
		}
	}
	return time.Time{}
}

// Owners is each partition's owner (ProcLog.Name) at t as the commits show
// it: the process whose commit covered the partition last at or before t,
// unless that process was stopped by t. The pipeline exposes no assignment
// hook (and kgo refuses OnPartitionsAssigned on the pipeline's non-group
// clients), so ownership is read off the commits: protocol-agnostic
// (eager, cooperative, KIP-848) and exactly what the partition saw.
func Owners(pls []ProcLog, t time.Time) map[int32]string {
	type claim struct {
		proc string
		at   time.Time
	}
	best := map[int32]claim{}
	for _, pl := range pls {
		if !pl.Ended.IsZero() && !pl.Ended.After(t) {
			continue
		}
		for _, ev := range pl.Events {
			if ev.Kind != "COMMIT" || ev.At.After(t) {
				continue
			}
			for _, p := range ev.Parts {
				if c, ok := best[p]; !ok || ev.At.After(c.at) {
					best[p] = claim{pl.Name, ev.At}
				}
			}
		}
	}
	out := make(map[int32]string, len(best))
	for p, c := range best {
		out[p] = c.proc
	}
	return out
}

// OwnedBy is the sorted partitions owners gives proc.
func OwnedBy(owners map[int32]string, proc string) []int32 {
	var ps []int32
	for p, o := range owners {
		if o == proc {
			ps = append(ps, p)
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}
