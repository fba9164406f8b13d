package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// KillNow kill -9s node id (1-3) at once, from its pid file, without waiting
// (Kill waits until it is gone). It checks that the pid is a Kafka node of
// this cluster's state dir before signalling it.
func (c *Cluster) KillNow(id int) error {
	if id < 1 || id > 3 {
		return fmt.Errorf("node id %d: want 1, 2 or 3", id)
	}
	dir := filepath.Join(c.State, "node"+strconv.Itoa(id))
	b, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		return fmt.Errorf("node %d: reading its pid file: %w (is the cluster up under %s?)", id, err, c.State)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("node %d: pid file %s holds %q, not a pid", id, filepath.Join(dir, "pid"), b)
	}
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return fmt.Errorf("node %d (pid %d) is not running: %w", id, pid, err)
	}
	if !strings.Contains(string(cmdline), dir) {
		return fmt.Errorf("pid %d of node %d is not a Kafka node of %s; not killing it", pid, id, dir)
	}
	return syscall.Kill(pid, syscall.SIGKILL)
}

// lostEndTxnSchedule only waits: the cell's Kafka proxies drop the answers.
// It notes how the workers' transactions ended meanwhile.
func lostEndTxnSchedule(ctx context.Context, r *Run) error {
	return r.WaitProgress(ctx, 0.9, progressTimeout)
}

// midCommitKillSchedule kill -9s a broker at the moment a transaction is
// being committed, twice (at >= 15% and >= 50% progress; the feed lasts about 65 s, so that
// the second kill comes while records still flow after the first broker's
// restart, which waits for full ISRs: 20-50 s), and starts it again:
//
//   - "coordinator": the transaction coordinator of w1's transactional id
//     (<group>:w1, found with DescribeTransactions), killed right after w1's
//     proxy forwarded an EndTxn to it;
//   - "leader": the leader of input partition 0 (Metadata), killed right
//     after any worker's proxy forwarded an EndTxn (to whichever broker).
//
// It notes the time from the kill to the first commit of a batch begun after
// it (w1's for the coordinator, anyone's for the leader), with the broker
// still down, and fails the cell if none comes within two minutes.
func midCommitKillSchedule(kind string) func(context.Context, *Run) error {
	return func(ctx context.Context, r *Run) error {
		if r.Cfg.Cluster == nil {
			return fmt.Errorf("no cluster to kill brokers of")
		}
		if err := r.checkNodeOrder(ctx); err != nil {
			return err
		}
		for round, at := range []float64{0.15, 0.50} {
			if err := r.WaitProgress(ctx, at, progressTimeout); err != nil {
				return err
			}
			var (
				node  int
				what  string
				match func(worker string, node int, key int16) bool
			)
			switch kind {
			case "coordinator":
				txnID := r.group + ":w1"
				d, err := r.adm.DescribeTransactions(ctx, txnID)
				if err != nil {
					return fmt.Errorf("describing transaction %s: %w", txnID, err)
				}
				t, ok := d[txnID]
				if !ok || t.Err != nil {
					return fmt.Errorf("describing transaction %s: %v", txnID, t.Err)
				}
				node, what = int(t.Coordinator), "the transaction coordinator of "+txnID
				match = func(w string, n int, key int16) bool { return w == "w1" && key == apiEndTxn && n == node }
			case "leader":
				md, err := r.adm.Metadata(ctx, r.in)
				if err != nil {
					return fmt.Errorf("metadata of %s: %w", r.in, err)
				}
				p, ok := md.Topics[r.in].Partitions[0]
				if !ok || p.Err != nil {
					return fmt.Errorf("metadata of %s[0]: %v", r.in, p.Err)
				}
				node, what = int(p.Leader), fmt.Sprintf("the leader of %s[0]", r.in)
				match = func(_ string, _ int, key int16) bool { return key == apiEndTxn }
			default:
				return fmt.Errorf("midCommitKillSchedule(%q): want coordinator or leader", kind)
			}
			var killErr error
			t := newTrigger(match, func(string, int) { killErr = r.Cfg.Cluster.KillNow(node) })
			r.arm(t)
			done, err := r.awaitUnlessDone(ctx, t, time.Minute, "an EndTxn for "+what)
			if r.disarm(t) {
				done, err = false, nil // it fired after all: go on and heal it
			}
			if err != nil {
				return err
			}
			if done {
				r.Note("round %d: no kill, the whole input was committed before an EndTxn for %s came", round+1, what)
				continue
			}
			if killErr != nil {
				return killErr
			}
			killed := t.at
			if err := r.Cfg.Cluster.Kill(ctx, node); err != nil { // waits until it is gone
				return err
			}
			from := r.Progress()
			who := ""
			if kind == "coordinator" {
				who = "w1"
			}
			var (
				first   commitEvent
				drained bool // the kill came at the input's last EndTxn: no batch is left to begin
				checked time.Time
			)
			err = r.WaitFor(ctx, 2*time.Minute, "a commit of a batch begun after the kill", func(context.Context) (bool, error) {
				c, ok := r.firstCommitAfter(who, killed)
				first = c
				if !ok && time.Since(checked) >= time.Second {
					drained = r.InputCommitted(ctx)
					checked = time.Now()
				}
				return ok || drained, nil
			})
			resumed := time.Since(killed)
			if err == nil {
				resumed = first.at.Sub(killed)
			}
			if serr := r.Cfg.Cluster.Start(ctx, node); serr != nil {
				return serr
			}
			if err != nil {
				r.Fail("round %d, node %d down: %v", round+1, node, err)
				continue
			}
			if first.worker == "" && drained {
				r.Note("round %d: kill -9 of node %d (%s) at %.0f%%, right after %s's proxy forwarded an EndTxn; the whole input was committed %v after the kill, no batch left to begin",
					round+1, node, what, 100*from, t.worker, resumed.Round(time.Millisecond))
				continue
			}
			r.Note("round %d: kill -9 of node %d (%s) at %.0f%%, right after %s's proxy forwarded an EndTxn; first commit of a batch begun after the kill: %s after %v (broker still down); back with full ISRs %v after the kill",
				round+1, node, what, 100*from, t.worker, first.worker, resumed.Round(time.Millisecond), time.Since(killed).Round(time.Second))
		}
		r.Note("the workers logged %d \"transaction outcome unknown\"", r.countLogLines("transaction outcome unknown"))
		return nil
	}
}

// checkNodeOrder checks that Cfg.Brokers[i] is node i+1, as the Kafka
// proxies (one listener per broker, in that order) assume.
func (r *Run) checkNodeOrder(ctx context.Context) error {
	md, err := r.adm.BrokerMetadata(ctx)
	if err != nil {
		return fmt.Errorf("broker metadata: %w", err)
	}
	for _, b := range md.Brokers {
		addr := b.Host + ":" + strconv.Itoa(int(b.Port))
		i := int(b.NodeID) - 1
		if i < 0 || i >= len(r.Cfg.Brokers) || r.Cfg.Brokers[i] != addr {
			return fmt.Errorf("broker %s is node %d, but the suite's broker list is %v (node i+1 at index i expected)", addr, b.NodeID, r.Cfg.Brokers)
		}
	}
	return nil
}
