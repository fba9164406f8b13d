package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/exactlyonce/exactly/integration/chaos"
)

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
	fmt.Fprintf(&b, "failure detection: broker.session.timeout.ms=%d (scripts/kafka.sh), worker session timeout 6000 ms, transaction timeout 5000 ms; brokers' request.timeout.ms=%d (-broker-request-timeout-ms: bounds a coordinator's retry of a failed completion write)\n", sum.DetectionMs, sum.BrokerRequestTimeoutMs)
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
