package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/exactlyonce/exactly/integration/chaos"
	"github.com/exactlyonce/exactly/internal/verify"
)

// env is what every scenario shares.
type env struct {
	cfg     chaos.Config
	cluster *chaos.Cluster
	scale   float64
	logf    func(format string, args ...any)
}

func (e *env) records(n int) int { return max(1000, int(float64(n)*e.scale)) }

// cell runs c with a fresh collector as the workers' tap.
func (e *env) cell(ctx context.Context, c chaos.Cell, coll *Collector) chaos.Result {
	cfg := e.cfg
	cfg.Tap = coll.Tap
	e.logf("scenario %s: %s, %d records at %d/s, %d workers", c.Name, c.Fault, c.Records, c.Rate, c.Workers)
	res := chaos.RunCell(ctx, cfg, c)
	e.logf("scenario %s: verified=%v dups=%d missing=%d in %v", c.Name, res.Passed, res.Duplicates, res.Missing, res.Took.Round(time.Second))
	return res
}

// report is one scenario's output.
type report struct {
	name   string
	text   string
	result chaos.Result
}

func (rep *report) verification(w io.Writer) {
	res := rep.result
	fmt.Fprintf(w, "verifier: %d records, %d duplicates, %d missing, %d order violations, %d open transactions; %v\n",
		res.Records, res.Duplicates, res.Missing, res.OrderViolations, res.OpenTxns, map[bool]string{true: "exactly once", false: "FAILED"}[res.Passed])
	for _, n := range res.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	for _, f := range res.Failures {
		fmt.Fprintf(w, "  FAIL: %s\n", f)
	}
}

func find(pls []ProcLog, name string) (ProcLog, bool) {
	for _, pl := range pls {
		if pl.Name == name {
			return pl, true
		}
	}
	return ProcLog{}, false
}

func allTxns(pls []ProcLog) []Txn {
	var out []Txn
	for _, pl := range pls {
		out = append(out, Txns(pl)...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

func durs(ts []Txn) []time.Duration {
	ds := make([]time.Duration, len(ts))
	for i, t := range ts {
		ds[i] = t.Dur
	}
	return ds
}

func parts(ps []int32) string {
	if len(ps) == 0 {
		return "-"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

// slowest prints the n longest transactions with their context (the
// process's WARN and ABORT lines during the batch).
func slowest(w io.Writer, ts []Txn, n int, t0 time.Time) {
	s := append([]Txn(nil), ts...)
	sort.Slice(s, func(i, j int) bool { return s[i].Dur > s[j].Dur })
	if len(s) > n {
		s = s[:n]
	}
	fmt.Fprintf(w, "the %d longest transactions (begin -> committed; took = first poll -> committed):\n", len(s))
	for _, t := range s {
		fmt.Fprintf(w, "  %s at +%.1fs: txn %d ms (took %d, stage %d, commit %d) partitions %s\n",
			t.Proc, t.At.Sub(t0).Seconds(), ms(t.Dur), ms(t.Took), ms(t.Stage), ms(t.Commit), parts(t.Parts))
		for i, c := range t.Context {
			if i == 4 {
				fmt.Fprintf(w, "      ... %d more\n", len(t.Context)-4)
				break
			}
			what := c.Msg
			if c.Kind == "ABORT" {
				what = fmt.Sprintf("transaction aborted after %d ms: %s (%d records)", ms(c.Took), c.Reason, c.Records)
			}
			fmt.Fprintf(w, "      +%.1fs %s %s\n", c.At.Sub(t0).Seconds(), c.Kind, what)
		}
	}
}

func aborts(pls []ProcLog, from, to time.Time) string {
	n := map[string]int{}
	for _, pl := range pls {
		for _, ev := range pl.Events {
			if ev.Kind == "ABORT" && ev.At.After(from) && !ev.At.After(to) {
				n[ev.Reason]++
			}
		}
	}
	if len(n) == 0 {
		return "0"
	}
	var s []string
	for k, v := range n {
		s = append(s, fmt.Sprintf("%s:%d", k, v))
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

const recreateMsg = "re-creating the producer and consumer"

// warnsIn are pl's WARN events in (from, to] containing sub ("" for all).
func warnsIn(pl ProcLog, from, to time.Time, sub string) []Event {
	var out []Event
	for _, ev := range pl.Events {
		if ev.Kind == "WARN" && ev.At.After(from) && !ev.At.After(to) && strings.Contains(ev.Msg, sub) {
			out = append(out, ev)
		}
	}
	return out
}

// warnLines prints the first n WARN lines and aborts of every process,
// with the time since t0: where the long ones come from.
func warnLines(w io.Writer, pls []ProcLog, n int, t0 time.Time) {
	type line struct {
		at   time.Time
		text string
	}
	var ls []line
	for _, pl := range pls {
		for _, ev := range pl.Events {
			switch ev.Kind {
			case "WARN":
				if strings.HasPrefix(ev.Msg, "durability") {
					continue // the preflight's note on the topics the driver just created
				}
				ls = append(ls, line{ev.At, pl.Name + " WARN " + ev.Msg})
			case "ABORT":
				ls = append(ls, line{ev.At, fmt.Sprintf("%s ABORT %s after %d ms (%d records)", pl.Name, ev.Reason, ms(ev.Took), ev.Records)})
			}
		}
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].at.Before(ls[j].at) })
	fmt.Fprintf(w, "WARN and ABORT lines of the workers: %d", len(ls))
	if len(ls) > n {
		fmt.Fprintf(w, " (the first %d)", n)
		ls = ls[:n]
	}
	fmt.Fprintln(w)
	for _, l := range ls {
		fmt.Fprintf(w, "  +%.1fs %s\n", l.at.Sub(t0).Seconds(), l.text)
	}
}

// waitFed waits until the feeder wrote n records.
func waitFed(ctx context.Context, r *chaos.Run, n int64) error {
	return r.WaitFor(ctx, time.Minute, fmt.Sprintf("the feeder to write %d records", n), func(context.Context) (bool, error) {
		return r.Fed() >= n, nil
	})
}

// feedLeft is how long the feeder still writes.
func feedLeft(r *chaos.Run) time.Duration {
	left := int64(r.Cell.Records) - r.Fed()
	return time.Duration(float64(left) / float64(r.Cell.Rate) * float64(time.Second))
}

// --- 1. simultaneous start ---------------------------------------------------

func scenarioStart(ctx context.Context, e *env, sum *Summary) report {
	coll := NewCollector()
	var t0 time.Time
	var spread time.Duration
	cell := chaos.Cell{
		Name: "start", Fault: "3 workers of a new group start at once, input flowing, no fault", Mode: chaos.Kafka,
		Records: e.records(20000), Rate: 1200, Workers: 0,
	}
	cell.Schedule = func(ctx context.Context, r *chaos.Run) error {
		if err := waitFed(ctx, r, int64(2*cell.Rate)); err != nil { // ~2 s of input waiting
			return err
		}
		t0 = time.Now()
		var procs []*chaos.Proc
		for i := 1; i <= 3; i++ {
			p, err := r.Start("w" + strconv.Itoa(i))
			if err != nil {
				return err
			}
			procs = append(procs, p)
		}
		spread = time.Since(t0)
		for _, p := range procs {
			if _, err := p.FirstCommit(ctx, 2*time.Minute); err != nil {
				return err
			}
		}
		return nil
	}
	res := e.cell(ctx, cell, coll)
	pls := coll.Snapshot()
	var b strings.Builder
	fmt.Fprintf(&b, "3 processes started within %v, %d records already waiting\n", spread.Round(time.Millisecond), 2*cell.Rate)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "worker\tstart->first commit\ttxns\ttxn ms (begin->committed)\tlongest took ms\tre-creations\taborts")
	var all []Txn
	for _, pl := range pls {
		ts := Txns(pl)
		all = append(all, ts...)
		fc := "none"
		if at := FirstCommit(pl); !at.IsZero() {
			fc = fmt.Sprintf("%d ms", ms(at.Sub(pl.Started)))
		}
		var took []time.Duration
		for _, t := range ts {
			took = append(took, t.Took)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%s\n", pl.Name, fc, len(ts), Dist(durs(ts)), ms(Max(took)),
			len(warnsIn(pl, time.Time{}, time.Now(), recreateMsg)), aborts([]ProcLog{pl}, time.Time{}, time.Now()))
	}
	tw.Flush()
	fmt.Fprintf(&b, "all transactions: %s\n  histogram: %s\n", Dist(durs(all)), Histogram(durs(all)))
	slowest(&b, all, 5, t0)
	warnLines(&b, pls, 8, t0)
	if len(all) > 0 {
		sum.StartMaxCommit = ms(Max(durs(all)))
	}
	rep := report{name: "1. simultaneous start (start_max_commit_ms = the longest transaction)", result: res}
	rep.verification(&b)
	rep.text = b.String()
	return rep
}

// --- 2. restart after SIGKILL ------------------------------------------------

type restartRow struct {
	k            int
	proc         string
	owned        []int32
	inside       time.Duration // process start -> its first commit
	outside      time.Duration // process start -> every partition it owned at the kill committed past the input's end at the kill
	outsideErr   error
	insideErr    error
	killToStart  time.Duration
	firstCommitP []int32
}

// watchMove polls the group's committed offsets until every partition of
// ps (all partitions if empty) is committed past ends (the input's end
// offsets at the kill: only a live process can commit records written after
// it) and returns the time since from.
func watchMove(ctx context.Context, r *chaos.Run, ps []int32, ends map[int32]int64, from time.Time, timeout time.Duration) (time.Duration, error) {
	if len(ps) == 0 {
		for p := range ends {
			ps = append(ps, p)
		}
	}
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		offs, err := r.Committed(ctx)
		if err == nil {
			moved := true
			for _, p := range ps {
				moved = moved && offs[p] > ends[p]
			}
			if moved {
				return time.Since(from), nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("partitions %s were not committed past the input's end at the kill within %v (last error %v)", parts(ps), timeout, err)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// endOffsets are the input's end offsets now.
func endOffsets(ctx context.Context, r *chaos.Run) (map[int32]int64, error) {
	out, err := verify.Listed(r.Admin().ListEndOffsets(ctx, r.Input()))
	if err != nil {
		return nil, fmt.Errorf("listing the input's end offsets: %w", err)
	}
	return out, nil
}

func scenarioRestart(ctx context.Context, e *env, sum *Summary) report {
	const kills = 10
	coll := NewCollector()
	var rows []restartRow
	var t0 time.Time
	cell := chaos.Cell{
		Name: "restart", Fault: "SIGKILL a worker, restart it at once, 10 times", Mode: chaos.Kafka,
		Records: e.records(28000), Rate: 400, Workers: 3,
	}
	cell.Schedule = func(ctx context.Context, r *chaos.Run) error {
		t0 = time.Now()
		for k := 0; k < kills; k++ {
			// Each kill after progress: the group settled since the
			// last restart (every partition committing, by one worker).
			if err := settle(ctx, r, coll, partitionsOf(e), time.Now(), time.Minute); err != nil {
				return err
			}
			if left := feedLeft(r); left < 5*time.Second {
				r.Note("stopped after %d kills: the feeder ends in %v (raise -scale)", k, left.Round(time.Second))
				return nil
			}
			id := "w" + strconv.Itoa(k%3+1)
			p := r.Live(id)
			if p == nil {
				return fmt.Errorf("no live %s", id)
			}
			row := restartRow{k: k + 1}
			killAt := time.Now()
			row.owned = OwnedBy(Owners(coll.Snapshot(), killAt), p.Name())
			if err := r.Stop(p, syscall.SIGKILL); err != nil {
				return err
			}
			coll.Ended(p, killAt)
			ends, err := endOffsets(ctx, r)
			if err != nil {
				return err
			}
			np, err := r.Start(id)
			if err != nil {
				return err
			}
			row.proc, row.killToStart = np.Name(), np.Started.Sub(killAt)
			outside := make(chan struct {
				d   time.Duration
				err error
			}, 1)
			go func() {
				d, err := watchMove(ctx, r, row.owned, ends, np.Started, 90*time.Second)
				outside <- struct {
					d   time.Duration
					err error
				}{d, err}
			}()
			_, row.insideErr = np.FirstCommit(ctx, 90*time.Second)
			o := <-outside
			row.outside, row.outsideErr = o.d, o.err
			if row.insideErr == nil {
				pl, _ := find(coll.Snapshot(), np.Name())
				row.inside = FirstCommit(pl).Sub(np.Started)
				if ts := Txns(pl); len(ts) > 0 {
					row.firstCommitP = ts[0].Parts
				}
			}
			e.logf("kill %d %s: restart to first commit %v, owned partitions %s moved after %v", k+1, row.proc,
				row.inside.Round(time.Millisecond), parts(row.owned), row.outside.Round(time.Millisecond))
			rows = append(rows, row)
		}
		return nil
	}
	res := e.cell(ctx, cell, coll)
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "kill\tprocess\tkill->exec ms\tstart->first commit ms\tpartitions at kill\tstart->they committed past the input end at the kill ms (kadm)\tfirst commit's partitions")
	var inside, outside []time.Duration
	for _, row := range rows {
		in, out := "", ""
		if row.insideErr != nil {
			in = "ERR " + row.insideErr.Error()
		} else {
			in = strconv.FormatInt(ms(row.inside), 10)
			inside = append(inside, row.inside)
		}
		if row.outsideErr != nil {
			out = "ERR " + row.outsideErr.Error()
		} else {
			out = strconv.FormatInt(ms(row.outside), 10)
			outside = append(outside, row.outside)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\n", row.k, row.proc, ms(row.killToStart), in, parts(row.owned), out, parts(row.firstCommitP))
	}
	tw.Flush()
	fmt.Fprintf(&b, "start->first commit: %s\nstart->offsets moved (outside): %s\n", Dist(inside), Dist(outside))
	pls := coll.Snapshot()
	var restarted []Txn
	for _, pl := range pls {
		if !strings.HasSuffix(pl.Name, ".1") {
			restarted = append(restarted, Txns(pl)...)
		}
	}
	slowest(&b, restarted, 3, t0)
	warnLines(&b, pls, 8, t0)
	if len(inside) > 0 {
		sum.RestartP50, sum.RestartMax = ms(Percentile(inside, 50)), ms(Max(inside))
	}
	sum.RestartKills = len(inside)
	rep := report{name: "2. restart after SIGKILL (restart_* = process start -> its first commit)", result: res}
	rep.verification(&b)
	rep.text = b.String()
	return rep
}
