package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/exactlyonce/exactly/integration/chaos"
)

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
