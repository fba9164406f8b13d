package chaos

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// progressTimeout bounds each wait for progress between two faults.
const progressTimeout = 3 * time.Minute

// bounceSchedule stops and restarts every worker with sig, rounds times,
// the k-th fault once 20% + k·60%/(rounds·workers) of the input is committed.
func bounceSchedule(sig syscall.Signal, rounds int) func(context.Context, *Run) error {
	return func(ctx context.Context, r *Run) error {
		w := r.Cell.Workers
		total := rounds * w
		for k := 0; k < total; k++ {
			at := 0.20 + 0.60*float64(k)/float64(total)
			if err := r.WaitProgress(ctx, at, progressTimeout); err != nil {
				return err
			}
			id := "w" + strconv.Itoa(k%w+1)
			if err := r.Bounce(ctx, id, sig); err != nil {
				return fmt.Errorf("round %d, %s: %w", k/w+1, id, err)
			}
		}
		r.Note("%d %v bounces, the k-th at >= 20%%+k*%.1f%% progress; restart to first commit: %v", total, sig, 60/float64(total), r.restartsCopy())
		if sig == syscall.SIGKILL && r.Cell.Mode == Kafka {
			r.mu.Lock()
			n := r.orphans
			r.mu.Unlock()
			r.Note("%d of %d SIGKILLs left the worker's transaction open (Ongoing) for its restart to fence", n, total)
		}
		return nil
	}
}

func (r *Run) restartsCopy() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []string
	for _, d := range r.restarts {
		s = append(s, d.Round(time.Millisecond).String())
	}
	return s
}

// zombieSchedule SIGSTOPs w1 at >= 20% progress right after one of its
// Stage calls began (so it is inside a transaction), waits until the group
// expired it and the others committed past its position on every
// partition, then SIGCONTs it. The zombie must not commit its stale batch:
// it is fenced (exits with a fatal error) or its transaction aborts.
func zombieSchedule(ctx context.Context, r *Run) error {
	if err := r.WaitProgress(ctx, 0.20, progressTimeout); err != nil {
		return err
	}
	z := r.Live("w1")
	if z == nil {
		return fmt.Errorf("no w1")
	}
	seen := z.armStage()
	select {
	case <-seen:
	case <-time.After(time.Minute):
		return fmt.Errorf("w1 began no Stage call within a minute")
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := z.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	stopped := time.Now()
	r.mu.Lock()
	r.intended[z] = true // it may exit fenced
	r.mu.Unlock()
	defer func() { _ = syscall.Kill(z.cmd.Process.Pid, syscall.SIGCONT) }()
	before, err := r.Committed(ctx)
	if err != nil {
		return err
	}
	r.Note("SIGSTOP w1 at %.0f%% progress, inside a transaction (right after a Stage call began); committed then: %v", 100*r.Progress(), before)
	// The group expires it.
	if err := r.WaitFor(ctx, 2*time.Minute, "the group to expire the stopped w1", func(ctx context.Context) (bool, error) {
		return r.memberGone(ctx, "w1")
	}); err != nil {
		return err
	}
	expired := time.Since(stopped)
	// The others own its partitions and commit past where it stopped.
	if err := r.WaitFor(ctx, 2*time.Minute, "the other workers to commit past the zombie on every partition", func(ctx context.Context) (bool, error) {
		now, err := r.Committed(ctx)
		if err != nil {
			return false, err
		}
		for p := int32(0); p < r.Cfg.Partitions; p++ {
			if now[p] <= before[p] {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		return err
	}
	z.markResumed()
	if err := z.Signal(syscall.SIGCONT); err != nil {
		return err
	}
	r.Note("the group expired w1 %v after SIGSTOP; SIGCONT after %v, once every partition was committed past it",
		expired.Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond))
	// The verdict: its first event after waking.
	var verdict string
	err = r.WaitFor(ctx, 90*time.Second, "the zombie's verdict (fenced exit, abort or commit)", func(context.Context) (bool, error) {
		for _, l := range z.wakeEvents() {
			f := strings.Fields(l)
			switch f[0] {
			case "ABORT":
				verdict = "aborted"
			case "EXIT":
				verdict = "exited"
			case "COMMIT":
				start, _ := strconv.ParseInt(f[3], 10, 64)
				switch {
				case !time.Unix(0, start).Before(stopped):
					verdict = "fresh-commit"
				case !commitBegan(f).IsZero() && commitBegan(f).Before(stopped):
					// SIGSTOP landed while its commit was on the
					// wire: the server completed it while the
					// process was frozen, and the answer was read
					// after SIGCONT. Not a zombie's decision; the
					// verifier's duplicate and order checks prove it
					// landed before the successor's commits.
					verdict = "inflight-commit"
				default:
					verdict = "zombie-commit"
				}
			}
			if verdict != "" {
				r.Note("the zombie's first event after SIGCONT: %s", l)
				return true, nil
			}
		}
		if !z.Alive() {
			verdict = "exited"
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	switch verdict {
	case "exited":
		code, sig, line := z.ExitStatus()
		if code != 3 {
			r.Fail("the zombie exited, but not with the fatal fenced error: code %d signal %v: %s", code, sig, line)
		} else {
			r.Note("the zombie was fenced: exit code 3, %s", line)
		}
		r.mu.Lock()
		delete(r.live, "w1")
		r.mu.Unlock()
	case "aborted":
		r.Note("the zombie's stale transaction aborted; it went on as a fresh member")
	case "inflight-commit":
		r.Note("the zombie was stopped while its commit was in flight; the server completed it during the stop and the zombie read the answer after SIGCONT (the verifier checks it landed before its successor's)")
	case "zombie-commit":
		r.Fail("the zombie COMMITTED a batch it began before SIGSTOP")
	case "fresh-commit":
		r.Fail("the zombie reported no abort of its stale transaction before committing again (was it stopped outside a transaction?)")
	}
	return nil
}

// commitBegan is when a COMMIT line's commit phase began (its time minus
// the commit's duration); zero if the line does not say.
func commitBegan(f []string) time.Time {
	if len(f) < 7 {
		return time.Time{}
	}
	at, err1 := strconv.ParseInt(f[1], 10, 64)
	d, err2 := strconv.ParseInt(f[6], 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}
	}
	return time.Unix(0, at-d)
}

// memberGone reports whether no member of the group has instance id id.
func (r *Run) memberGone(ctx context.Context, id string) (bool, error) {
	gs, err := r.adm.DescribeGroups(ctx, r.group)
	if err != nil {
		return false, err
	}
	g, ok := gs[r.group]
	if !ok {
		return false, fmt.Errorf("group %s not described", r.group)
	}
	if g.Err != nil {
		return false, g.Err
	}
	for _, m := range g.Members {
		if m.InstanceID != nil && *m.InstanceID == id {
			return false, nil
		}
	}
	return true, nil
}

// brokerSchedule kill -9s each broker of the cluster in turn, at >= 20%,
// 45% and 70% progress, waits until the workers committed at least 3% more
// with it down, and starts it again (kafka.sh waits for full ISRs). A kill
// whose turn comes after the whole input was committed is skipped and
// noted (the first one never is).
func brokerSchedule(ctx context.Context, r *Run) error {
	if r.Cfg.Cluster == nil {
		return fmt.Errorf("no cluster to bounce")
	}
	for i, at := range []float64{0.20, 0.45, 0.70} {
		id := i + 1
		if err := r.WaitProgress(ctx, at, progressTimeout); err != nil {
			return err
		}
		from := r.Progress()
		if i > 0 && r.InputCommitted(ctx) {
			// The input ran out before this kill (short cells): it could
			// not land mid-stream, and a restart costs half a minute.
			r.Note("broker %d: not killed, the whole input was committed before its turn", id)
			continue
		}
		if err := r.Cfg.Cluster.Kill(ctx, id); err != nil {
			return err
		}
		killed := time.Now()
		err := r.WaitProgress(ctx, min(from+0.03, 1), 2*time.Minute) // (all committed: nothing left to wait for)
		resumed := time.Since(killed)
		if serr := r.Cfg.Cluster.Start(ctx, id); serr != nil {
			return serr
		}
		if err != nil {
			r.Fail("with broker %d down: %v", id, err)
		}
		r.Note("broker %d: kill -9 at %.0f%%; +3%% committed with it down %v after the kill; %.0f%% committed before it was back with full ISRs %v after the kill",
			id, 100*from, resumed.Round(time.Millisecond), 100*(r.Progress()-from), time.Since(killed).Round(time.Second))
	}
	return nil
}

// churnSchedule: workers join and leave while processing, some by SIGKILL.
func churnSchedule(ctx context.Context, r *Run) error {
	type step struct {
		at   float64
		what string // "join", "kill", "term"
		id   string
	}
	steps := []step{
		{0.10, "join", "w4"}, {0.20, "kill", "w1"}, {0.30, "join", "w5"}, {0.40, "term", "w2"},
		{0.50, "join", "w1"}, {0.55, "kill", "w4"}, {0.65, "join", "w2"}, {0.70, "term", "w5"},
		{0.80, "kill", "w3"}, {0.85, "join", "w4"}, {0.90, "join", "w3"},
	}
	var log []string
	for _, s := range steps {
		if err := r.WaitProgress(ctx, s.at, progressTimeout); err != nil {
			return err
		}
		switch s.what {
		case "join":
			if _, err := r.Start(s.id); err != nil {
				return err
			}
		case "kill", "term":
			p := r.Live(s.id)
			if p == nil {
				return fmt.Errorf("%s not running", s.id)
			}
			sig := syscall.SIGKILL
			if s.what == "term" {
				sig = syscall.SIGTERM
			}
			if err := r.Stop(p, sig); err != nil {
				return err
			}
		}
		log = append(log, fmt.Sprintf("%s %s@%.0f%%", s.what, s.id, 100*r.Progress()))
	}
	r.Note("churn: %s; running at the end: %v", strings.Join(log, ", "), r.LiveIDs())
	return nil
}

// abortsSummary notes how many transactions aborted, by reason.
func abortsSummary(ctx context.Context, r *Run) error {
	if err := r.WaitProgress(ctx, 0.5, progressTimeout); err != nil {
		return err
	}
	return nil
}

func (r *Run) noteAborts() {
	r.mu.Lock()
	procs := append([]*Proc(nil), r.procs...)
	r.mu.Unlock()
	total := map[string]int{}
	commits := 0
	for _, p := range procs {
		for k, v := range p.abortCounts() {
			total[k] += v
		}
		p.mu.Lock()
		commits += p.commitTxns
		p.mu.Unlock()
	}
	var keys []string
	for k := range total {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, total[k]))
	}
	if len(parts) == 0 {
		parts = []string{"none"}
	}
	aborted := 0
	for _, v := range total {
		aborted += v
	}
	frac := 0.0
	if commits+aborted > 0 {
		frac = float64(aborted) / float64(commits+aborted)
	}
	r.Note("transactions: %d committed; aborted: %s (%.0f%% of all)", commits, strings.Join(parts, " "), 100*frac)
}

// ShortCell is the one short cell that `make test` could run: one round of
// SIGKILL bounces of two workers, 6,000 records, Kafka mode.
func ShortCell() Cell {
	return Cell{Name: "short-hard-bounce", Fault: "SIGKILL each worker x1", Mode: Kafka, Records: 6000, Rate: 1000, Workers: 2,
		Schedule: bounceSchedule(syscall.SIGKILL, 1)}
}

// Matrix is the full suite, in priority order. scale multiplies the record
// counts (1 for `make chaos`).
func Matrix(scale float64) []Cell {
	n := func(k int) int { return max(1000, int(float64(k)*scale)) }
	return []Cell{
		{Name: "baseline", Fault: "none", Mode: Kafka, Records: n(20_000), Rate: 4000, Workers: 3},
		{Name: "baseline-vp", Fault: "none; input by kafka-verifiable-producer", Mode: Kafka, Records: n(20_000), Rate: 4000, Workers: 3,
			Feeder: FeederVerifiableProducer},
		{Name: "client-hard-bounce", Fault: "SIGKILL each worker x3", Mode: Kafka, Records: n(30_000), Rate: 1000, Workers: 3,
			Schedule: bounceSchedule(syscall.SIGKILL, 3)},
		{Name: "client-hard-bounce-vp", Fault: "SIGKILL each worker x3; input by kafka-verifiable-producer", Mode: Kafka, Records: n(30_000), Rate: 1000, Workers: 3,
			Feeder: FeederVerifiableProducer, Schedule: bounceSchedule(syscall.SIGKILL, 3)},
		{Name: "client-clean-bounce", Fault: "SIGTERM each worker x3", Mode: Kafka, Records: n(30_000), Rate: 1500, Workers: 3,
			Schedule: bounceSchedule(syscall.SIGTERM, 3)},
		{Name: "zombie", Fault: "SIGSTOP past session, SIGCONT", Mode: Kafka, Records: n(15_000), Rate: 500, Workers: 2,
			Schedule: zombieSchedule, ExtraArgs: []string{"-announce-stage"}},
		{Name: "broker-hard-bounce", Fault: "kill -9 each broker", Mode: Kafka, Records: n(30_000), Rate: 500, Workers: 3,
			Schedule: brokerSchedule},
		{Name: "pg-baseline", Fault: "none", Mode: Postgres, Records: n(20_000), Rate: 4000, Workers: 3},
		{Name: "pg-client-hard-bounce", Fault: "SIGKILL each worker x3", Mode: Postgres, Records: n(30_000), Rate: 1500, Workers: 3,
			Schedule: bounceSchedule(syscall.SIGKILL, 3)},
		{Name: "pg-client-clean-bounce", Fault: "SIGTERM each worker x3", Mode: Postgres, Records: n(30_000), Rate: 1500, Workers: 3,
			Schedule: bounceSchedule(syscall.SIGTERM, 3)},
		{Name: "rebalance-churn", Fault: "join/leave, SIGKILL+SIGTERM", Mode: Kafka, Records: n(30_000), Rate: 1000, Workers: 3,
			MinWorkers: 3, Schedule: churnSchedule},
		{Name: "random-aborts", Fault: "1/5 Stage calls fail", Mode: Kafka, Records: n(20_000), Rate: 2000, Workers: 3,
			AbortRate: 0.2, Schedule: abortsSummary},
		{Name: "pg-random-aborts", Fault: "1/5 Stage calls fail", Mode: Postgres, Records: n(20_000), Rate: 2000, Workers: 3,
			AbortRate: 0.2, Schedule: abortsSummary},
		{Name: "pg-lost-commit-ack", Fault: "proxy drops every 25th COMMIT answer", Mode: Postgres, Records: n(20_000), Rate: 2000, Workers: 3,
			LostCommitAck: 25, Schedule: abortsSummary},
		// The fault cells of faults*.go.
		{Name: "lost-endtxn-ack", Fault: "proxy drops every 10th EndTxn answer", Mode: Kafka, Records: n(20_000), Rate: 1000, Workers: 3,
			LostEndTxnAck: 10, Schedule: lostEndTxnSchedule},
		{Name: "coordinator-kill", Fault: "kill -9 txn coordinator at EndTxn x2", Mode: Kafka, Records: n(20_000), Rate: 300, Workers: 3,
			KafkaProxy: true, Schedule: midCommitKillSchedule("coordinator")},
		{Name: "leader-kill", Fault: "kill -9 input leader at EndTxn x2", Mode: Kafka, Records: n(20_000), Rate: 300, Workers: 3,
			KafkaProxy: true, Schedule: midCommitKillSchedule("leader")},
		{Name: "pg-zombie", Fault: "SIGSTOP past session, SIGCONT", Mode: Postgres, Records: n(20_000), Rate: 500, Workers: 2,
			Schedule: zombieSchedule, ExtraArgs: []string{"-announce-stage"}},
		{Name: "pg-crash-before-commit", Fault: "SIGKILL at COMMIT, not forwarded x2", Mode: Postgres, Records: n(20_000), Rate: 1000, Workers: 3,
			PGCrash: "before", Schedule: pgCrashSchedule},
		{Name: "pg-crash-after-commit", Fault: "SIGKILL after COMMIT's answer x2", Mode: Postgres, Records: n(20_000), Rate: 1000, Workers: 3,
			PGCrash: "after", Schedule: pgCrashSchedule},
		// pg-immediate-restart restarts the SHARED Postgres server (every
		// client of it loses its connections): `make chaos` does that twice.
		{Name: "pg-immediate-restart", Fault: "pg_ctlcluster restart -m immediate x2", Mode: Postgres, Records: n(20_000), Rate: 1000, Workers: 3,
			Schedule: pgRestartSchedule, RestartsSharedServer: true},
		{Name: "pg-broker-bounce", Fault: "kill -9 each broker", Mode: Postgres, Records: n(12_000), Rate: 150, Workers: 3,
			Schedule: brokerSchedule},
		{Name: "lost-endtxn-ack-stall", Fault: "every 20th EndTxn answer lost for 6s", Mode: Kafka, Records: n(20_000), Rate: 1000, Workers: 3,
			LostEndTxnAck: 20, LostEndTxnFor: 6 * time.Second, Schedule: lostEndTxnSchedule},
	}
}
