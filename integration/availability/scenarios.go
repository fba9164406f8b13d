package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/exactlyonce/exactly/integration/chaos"
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
	ends, err := r.Admin().ListEndOffsets(ctx, r.Input())
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing the input's end offsets: %w", err)
	}
	out := map[int32]int64{}
	ends.Each(func(lo kadm.ListedOffset) { out[lo.Partition] = lo.Offset })
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

// --- 3. rebalance ------------------------------------------------------------

type window struct {
	desc       string
	from, to   time.Time
	settled    time.Duration
	settleErr  error
	moved      []int32
	stay       []int32
	txns       []Txn
	maxGap     time.Duration
	maxGapPart int32
	aborts     string
}

// settle waits, after a membership change at since, until the group
// settled as the commits show it: for the last 2 s every partition was
// committed, each by one live process only, and every live process
// committed (one or more partitions each, with no more workers than
// partitions).
func settle(ctx context.Context, r *chaos.Run, coll *Collector, partitions int, since time.Time, timeout time.Duration) error {
	const quiet = 2 * time.Second
	return r.WaitFor(ctx, timeout, "the group to settle (for 2 s every partition committed by one live worker, every worker committing)", func(context.Context) (bool, error) {
		now := time.Now()
		if now.Sub(since) < quiet {
			return false, nil
		}
		live := map[string]bool{}
		for _, id := range r.LiveIDs() {
			if p := r.Live(id); p != nil {
				live[p.Name()] = true
			}
		}
		by := map[int32]map[string]bool{}
		committed := map[string]bool{}
		for _, pl := range coll.Snapshot() {
			for _, ev := range pl.Events {
				if ev.Kind != "COMMIT" || !ev.At.After(now.Add(-quiet)) {
					continue
				}
				committed[pl.Name] = true
				for _, p := range ev.Parts {
					if by[p] == nil {
						by[p] = map[string]bool{}
					}
					by[p][pl.Name] = true
				}
			}
		}
		for p := int32(0); p < int32(partitions); p++ {
			if len(by[p]) != 1 {
				return false, nil
			}
			for name := range by[p] {
				if !live[name] {
					return false, nil
				}
			}
		}
		for name := range live {
			if len(live) <= partitions && !committed[name] {
				return false, nil
			}
		}
		return true, nil
	})
}

// FirstCommitAfter reports whether pl committed after t.
func FirstCommitAfter(pl ProcLog, t time.Time) bool {
	for i := len(pl.Events) - 1; i >= 0; i-- {
		if ev := pl.Events[i]; ev.Kind == "COMMIT" && ev.At.After(t) {
			return true
		}
	}
	return false
}

// StayPut analyses one window: the partitions whose owner at from and at to
// is the same process and that no other process committed in between, the
// transactions of those owners in (from, to] that
// cover one or more of them, and the longest time one of them went without
// a commit (from its last commit before the window).
func StayPut(pls []ProcLog, from, to time.Time) (stay, moved []int32, txns []Txn, maxGap time.Duration, gapPart int32) {
	before, after := Owners(pls, from.Add(-time.Millisecond)), Owners(pls, to)
	for p := int32(0); p < 1024; p++ {
		b, okb := before[p]
		a, oka := after[p]
		if !okb && !oka {
			continue
		}
		if okb && oka && a == b {
			stay = append(stay, p)
		} else {
			moved = append(moved, p)
		}
	}
	all := allTxns(pls)
	for _, t := range all {
		if !t.At.After(from) || t.At.After(to) {
			continue
		}
		for _, p := range t.Parts {
			if i := slices.Index(stay, p); i >= 0 && before[p] != t.Proc {
				stay = slices.Delete(stay, i, i+1)
				moved = append(moved, p)
			}
		}
	}
	slices.Sort(moved)
	last := map[int32]time.Time{}
	for _, t := range all {
		if t.At.After(from) {
			break
		}
		for _, p := range t.Parts {
			last[p] = t.At
		}
	}
	for _, t := range all {
		if !t.At.After(from) || t.At.After(to) {
			continue
		}
		hit := false
		for _, p := range t.Parts {
			if slices.Contains(stay, p) && before[p] == t.Proc {
				hit = true
				if l, ok := last[p]; ok && t.At.Sub(l) > maxGap {
					maxGap, gapPart = t.At.Sub(l), p
				}
				last[p] = t.At
			}
		}
		if hit {
			txns = append(txns, t)
		}
	}
	for _, p := range stay {
		if l, ok := last[p]; ok && to.Sub(l) > maxGap {
			maxGap, gapPart = to.Sub(l), p
		}
	}
	return stay, moved, txns, maxGap, gapPart
}

func partitionsOf(e *env) int {
	if e.cfg.Partitions == 0 {
		return 6 // chaos.RunCell's default
	}
	return int(e.cfg.Partitions)
}

func scenarioRebalance(ctx context.Context, e *env, sum *Summary) report {
	coll := NewCollector()
	partitions := partitionsOf(e)
	var wins []window
	var t0 time.Time
	cell := chaos.Cell{
		Name: "rebalance", Fault: "workers join and leave while processing", Mode: chaos.Kafka,
		Records: e.records(32000), Rate: 500, Workers: 3,
	}
	cell.Schedule = func(ctx context.Context, r *chaos.Run) error {
		t0 = time.Now()
		stop := func(id string, sig syscall.Signal) func() error {
			return func() error {
				p := r.Live(id)
				if p == nil {
					return fmt.Errorf("no live %s", id)
				}
				at := time.Now()
				err := r.Stop(p, sig)
				if sig == syscall.SIGTERM {
					at = time.Now() // it owned its partitions until it left
				}
				coll.Ended(p, at)
				return err
			}
		}
		start := func(id string) func() error {
			return func() error { _, err := r.Start(id); return err }
		}
		actions := []struct {
			desc string
			do   func() error
		}{
			{"start w4 (join)", start("w4")},
			{"SIGTERM w2 (leave)", stop("w2", syscall.SIGTERM)},
			{"SIGKILL w3 (crash, no restart)", stop("w3", syscall.SIGKILL)},
			{"start w2 (join)", start("w2")},
			{"start w3 (join)", start("w3")},
			{"SIGTERM w4 (leave)", stop("w4", syscall.SIGTERM)},
		}
		if err := r.WaitProgress(ctx, 0.05, 3*time.Minute); err != nil {
			return err
		}
		if err := settle(ctx, r, coll, partitions, time.Now(), time.Minute); err != nil {
			return err
		}
		for i, a := range actions {
			if left := feedLeft(r); left < 10*time.Second {
				r.Note("stopped after %d of %d membership changes: the feeder ends in %v (raise -scale)", i, len(actions), left.Round(time.Second))
				return nil
			}
			w := window{desc: a.desc, from: time.Now()}
			if err := a.do(); err != nil {
				return fmt.Errorf("%s: %w", a.desc, err)
			}
			w.settleErr = settle(ctx, r, coll, partitions, w.from, 45*time.Second)
			w.settled = time.Since(w.from)
			w.to = time.Now()
			wins = append(wins, w)
			e.logf("rebalance: %s settled after %v", a.desc, w.settled.Round(time.Millisecond))
		}
		return nil
	}
	res := e.cell(ctx, cell, coll)
	pls := coll.Snapshot()
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "event\tat\tsettled ms\tmoved\tstayed put\tstay-put txns\ttxn ms\tlongest stay-put partition without commit\taborts (all)")
	var all []Txn
	for i := range wins {
		w := &wins[i]
		w.stay, w.moved, w.txns, w.maxGap, w.maxGapPart = StayPut(pls, w.from, w.to)
		w.aborts = aborts(pls, w.from, w.to)
		all = append(all, w.txns...)
		settled := strconv.FormatInt(ms(w.settled), 10)
		if w.settleErr != nil {
			settled += " (not settled)"
		}
		fmt.Fprintf(tw, "%s\t+%.1fs\t%s\t%s\t%s\t%d\t%s\t%d ms (p%d)\t%s\n", w.desc, w.from.Sub(t0).Seconds(), settled,
			parts(w.moved), parts(w.stay), len(w.txns), Dist(durs(w.txns)), ms(w.maxGap), w.maxGapPart, w.aborts)
	}
	tw.Flush()
	fmt.Fprintf(&b, "stay-put transactions, all events: %s\n  histogram: %s\n", Dist(durs(all)), Histogram(durs(all)))
	slowest(&b, all, 3, t0)
	warnLines(&b, pls, 8, t0)
	if len(all) > 0 {
		sum.RebalanceP99Txn = ms(Percentile(durs(all), 99))
	}
	rep := report{name: "3. rebalance (rebalance_p99_txn_ms = p99 transaction of partitions whose owner did not change)", result: res}
	rep.verification(&b)
	rep.text = b.String()
	return rep
}

// --- 4. broker kill -9 -------------------------------------------------------

type fault struct {
	broker              int
	kill, killed        time.Time // before the kill; the script returned (the node is gone)
	restarted, end      time.Time
	resume              map[string]time.Duration // per worker: kill -> its first commit of a transaction begun after the kill
	resumeErr           error
	recreations         map[string]int // kill -> broker back and every worker committing
	outageRecreations   map[string]int // kill -> resumed
	groupGap            time.Duration
	firstWarns          []string
	restartErr, waitErr error
	// detected is when the cluster had fenced the killed broker: the
	// first metadata answer (polled every 50 ms) in which it leads no
	// partition of the input, the output, __transaction_state or __consumer_offsets.
	detected time.Time
}

// watchFence polls the cluster's metadata until no partition of the
// cell's input and output and of the internal topics (the transaction and group
// coordinators' logs) is led by broker id any more — the cluster fenced it
// and moved its leaderships — and returns when that was first seen; zero
// if ctx ended first.
func watchFence(ctx context.Context, r *chaos.Run, id int) time.Time {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		mctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		md, err := r.Admin().Metadata(mctx, r.Input(), r.Output(), "__transaction_state", "__consumer_offsets")
		cancel()
		if err == nil && len(md.Topics) > 0 {
			led := false
			for _, td := range md.Topics {
				for _, pd := range td.Partitions {
					if int(pd.Leader) == id {
						led = true
					}
				}
			}
			if !led {
				return time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}
		case <-t.C:
		}
	}
}

// Resume is, per process in pls, the time from kill to its first commit of
// a transaction that began after kill; missing if none.
func Resume(pls []ProcLog, kill time.Time) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, pl := range pls {
		for _, t := range Txns(pl) {
			if !t.Begin.Before(kill) {
				out[pl.Name] = t.At.Sub(kill)
				break
			}
		}
	}
	return out
}

// GroupGap is the longest time in [from, to] without any commit of any
// process (from the last commit before from).
func GroupGap(pls []ProcLog, from, to time.Time) time.Duration {
	var last time.Time
	var gap time.Duration
	for _, t := range allTxns(pls) {
		if !t.At.After(from) {
			last = t.At
			continue
		}
		if !last.IsZero() && t.At.Sub(last) > gap {
			gap = t.At.Sub(last)
		}
		last = t.At
		if t.At.After(to) {
			break
		}
	}
	return gap
}

func scenarioFailover(ctx context.Context, e *env, sum *Summary) report {
	coll := NewCollector()
	var faults []*fault
	var t0 time.Time
	cell := chaos.Cell{
		Name: "failover", Fault: "kill -9 each broker in turn, restart it", Mode: chaos.Kafka,
		Records: e.records(56000), Rate: 400, Workers: 3,
	}
	cell.Schedule = func(ctx context.Context, r *chaos.Run) error {
		t0 = time.Now()
		if err := r.WaitProgress(ctx, 0.05, 3*time.Minute); err != nil {
			return err
		}
		liveNames := func() []string {
			var ns []string
			for _, id := range r.LiveIDs() {
				if p := r.Live(id); p != nil {
					ns = append(ns, p.Name())
				}
			}
			return ns
		}
		everyCommittedAfter := func(t time.Time) func(context.Context) (bool, error) {
			return func(context.Context) (bool, error) {
				res := Resume(coll.Snapshot(), t)
				for _, n := range liveNames() {
					if _, ok := res[n]; !ok {
						return false, nil
					}
				}
				return true, nil
			}
		}
		for b := 1; b <= 3; b++ {
			if err := r.WaitFor(ctx, time.Minute, "every worker committing", everyCommittedAfter(time.Now())); err != nil {
				return err
			}
			if left := feedLeft(r); left < 40*time.Second {
				r.Note("stopped after %d broker kills: the feeder ends in %v (raise -scale)", b-1, left.Round(time.Second))
				return nil
			}
			f := &fault{broker: b, kill: time.Now()}
			faults = append(faults, f)
			if err := e.cluster.Kill(ctx, b); err != nil {
				return err
			}
			f.killed = time.Now()
			fenced := make(chan time.Time, 1)
			wctx, stopWatch := context.WithTimeout(ctx, 90*time.Second)
			go func() { fenced <- watchFence(wctx, r, b) }()
			f.resumeErr = r.WaitFor(ctx, 90*time.Second, "every worker to commit a transaction begun after the kill", everyCommittedAfter(f.kill))
			f.detected = <-fenced // before the restart, which lists it again
			stopWatch()
			if f.restartErr = e.cluster.Start(ctx, b); f.restartErr != nil {
				return f.restartErr
			}
			f.restarted = time.Now()
			if feedLeft(r) > time.Second {
				f.waitErr = r.WaitFor(ctx, 90*time.Second, "every worker to commit after the restart", everyCommittedAfter(f.restarted))
			}
			f.end = time.Now()
			e.logf("failover: broker %d killed, commits resumed, restarted", b)
		}
		return nil
	}
	res := e.cell(ctx, cell, coll)
	pls := coll.Snapshot()
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "broker\tat\tkill script ms\tresume ms per worker (kill -> first commit of a txn begun after it)\tresume max ms\tcluster fenced it after ms\tresume after the fence ms\tlongest group gap ms\tre-creations per worker (until resumed/until broker back and committing)\tbroker back after ms")
	var resumes, detections, afterFences []time.Duration
	maxRec := -1
	for _, f := range faults {
		if f.end.IsZero() {
			f.end = time.Now()
		}
		f.resume = Resume(pls, f.kill)
		f.recreations, f.outageRecreations = map[string]int{}, map[string]int{}
		var per []string
		var worst time.Duration
		complete := true
		for _, pl := range pls {
			if !pl.Started.Before(f.kill) || (!pl.Ended.IsZero() && pl.Ended.Before(f.kill)) {
				continue
			}
			d, ok := f.resume[pl.Name]
			if !ok {
				complete = false
				per = append(per, pl.Name+":none")
			} else {
				per = append(per, fmt.Sprintf("%s:%d", pl.Name, ms(d)))
				worst = max(worst, d)
			}
			f.recreations[pl.Name] = len(warnsIn(pl, f.kill, f.end, recreateMsg))
			if ok {
				f.outageRecreations[pl.Name] = len(warnsIn(pl, f.kill, f.kill.Add(d), recreateMsg))
			}
			maxRec = max(maxRec, f.recreations[pl.Name])
			for _, w := range warnsIn(pl, f.kill, f.end, "") {
				if len(f.firstWarns) < 6 {
					f.firstWarns = append(f.firstWarns, fmt.Sprintf("%s +%.1fs after the kill: %s", pl.Name, w.At.Sub(f.kill).Seconds(), w.Msg))
				}
			}
		}
		sort.Strings(per)
		var recs []string
		for n, c := range f.recreations {
			recs = append(recs, fmt.Sprintf("%s:%d/%d", n, f.outageRecreations[n], c))
		}
		sort.Strings(recs)
		resume := strconv.FormatInt(ms(worst), 10)
		fencedAt, afterFence := "not seen", "-"
		if complete {
			resumes = append(resumes, worst)
			if !f.detected.IsZero() {
				det := f.detected.Sub(f.kill)
				detections = append(detections, det)
				afterFences = append(afterFences, worst-det)
				fencedAt, afterFence = strconv.FormatInt(ms(det), 10), strconv.FormatInt(ms(worst-det), 10)
			}
		} else {
			resume = "not resumed"
		}
		back := "-"
		if !f.restarted.IsZero() {
			back = strconv.FormatInt(ms(f.restarted.Sub(f.killed)), 10)
		}
		fmt.Fprintf(tw, "%d\t+%.1fs\t%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", f.broker, f.kill.Sub(t0).Seconds(), ms(f.killed.Sub(f.kill)),
			strings.Join(per, " "), resume, fencedAt, afterFence, ms(GroupGap(pls, f.kill, f.end)), strings.Join(recs, " "), back)
	}
	tw.Flush()
	for _, f := range faults {
		if len(f.firstWarns) > 0 {
			fmt.Fprintf(&b, "broker %d: the workers' first WARN lines after the kill:\n", f.broker)
			for _, w := range f.firstWarns {
				fmt.Fprintf(&b, "  %s\n", w)
			}
		}
	}
	fmt.Fprintf(&b, "failure detection: broker.session.timeout.ms=%d (scripts/kafka.sh), worker session timeout 6000 ms, transaction timeout 5000 ms\n", sum.DetectionMs)
	if len(resumes) > 0 {
		sum.FailoverResume = ms(Max(resumes))
	}
	if len(resumes) < len(faults) {
		sum.FailoverResume = Unmeasured
	}
	if len(afterFences) == len(faults) && len(faults) > 0 {
		sum.FenceMax, sum.FailoverAfterFence = ms(Max(detections)), ms(Max(afterFences))
	}
	sum.FailoverMeasured, sum.MaxRecreations = len(resumes), maxRec
	rep := report{name: "4. broker kill -9 (failover_resume_ms = max over kills of: kill -> every live worker committed a transaction begun after it)", result: res}
	rep.verification(&b)
	rep.text = b.String()
	return rep
}
