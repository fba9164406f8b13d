package eostest

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// Environment of the worker process CrashRestart starts: the test binary
// again, running only the test that calls CrashWorker.
const (
	envWorkerBrokers = "EXACTLY_IT_WORKER_BROKERS"
	envWorkerTopics  = "EXACTLY_IT_WORKER_TOPICS" // "in,out,group"
	envWorkerKillAt  = "EXACTLY_IT_WORKER_KILL_AT_TXN_OFFSET_COMMIT"
)

// The worker's timeouts: longer than any wait of the test (Env.Timeouts.Progress),
// so a restart that waited for the broker to time the orphaned transaction out,
// or for the group to expire the dead member, cannot commit before the test
// gives up. Whether the restart was fast is then an event (it committed at
// all), not a race against a clock. kfake's group.max.session.timeout.ms is
// 5 minutes, Kafka's 30.
const (
	workerSessionTimeout     = 4 * time.Minute
	workerTransactionTimeout = 3 * time.Minute
	workerInstance           = "crashy"
)

// killAtTxnOffsetCommit SIGKILLs the process right after the n-th
// TxnOffsetCommit response: the transaction then holds its output and its
// offsets but has no EndTxn.
type killAtTxnOffsetCommit struct {
	n    int64
	seen atomic.Int64
}

func (h *killAtTxnOffsetCommit) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	const txnOffsetCommit = 28
	if key == txnOffsetCommit && err == nil && h.seen.Add(1) == h.n {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
}

// CrashWorker is the body of the worker process of CrashRestart: a test
// binary that runs CrashRestart must have a test, named as CrashRestart is
// told, that calls CrashWorker and nothing else. Run in a normal test run it
// skips. The worker copies the input to the output, prints "COMMIT n" after
// every committed transaction, and stops cleanly on SIGTERM.
func CrashWorker(t *testing.T) {
	brokers := os.Getenv(envWorkerBrokers)
	if brokers == "" {
		t.Skip("runs only as CrashRestart's child process")
	}
	names := strings.Split(os.Getenv(envWorkerTopics), ",")
	require.Len(t, names, 3, envWorkerTopics)
	in, out, group := names[0], names[1], names[2]
	opts := []pipeline.Opt{
		pipeline.Brokers(strings.Split(brokers, ",")...),
		pipeline.Group(group),
		pipeline.Topics(in),
		pipeline.InstanceID(workerInstance),
		pipeline.MaxRecords(200),
		pipeline.MaxWait(50 * time.Millisecond),
		pipeline.SessionTimeout(workerSessionTimeout),
		pipeline.TransactionTimeout(workerTransactionTimeout),
		pipeline.Backoff(10*time.Millisecond, 500*time.Millisecond),
		pipeline.OnCommit(func(ci pipeline.CommitInfo) { fmt.Printf("COMMIT %d\n", ci.Records) }),
	}
	if n, _ := strconv.Atoi(os.Getenv(envWorkerKillAt)); n > 0 {
		opts = append(opts, pipeline.ClientOpts(kgo.WithHooks(&killAtTxnOffsetCommit{n: int64(n)})))
	}
	stage := pipeline.StageFunc[*kafkasink.Writer](func(_ context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
		for _, r := range b.Records {
			w.Produce(testkit.CopyRecord(out, r))
		}
		return nil
	})
	p, err := pipeline.New(kafkasink.New(), stage, opts...)
	require.NoError(t, err)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	fmt.Println("STARTED")
	require.NoError(t, p.Run(ctx))
	fmt.Println("STOPPED")
}

// startWorker runs workerTest in a child process against the rig.
func startWorker(t *testing.T, workerTest string, brokers []string, rig *Rig, killAt int) *testkit.Child {
	t.Helper()
	return testkit.StartChild(t, workerTest,
		envWorkerBrokers+"="+strings.Join(brokers, ","),
		envWorkerTopics+"="+rig.In+","+rig.Out+","+rig.Group,
		envWorkerKillAt+"="+strconv.Itoa(killAt),
	)
}

// TxnState is the state of transactional id id, as the broker describes it.
func TxnState(t *testing.T, brokers []string, id string) string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := kadm.NewClient(cl).DescribeTransactions(ctx, id)
	require.NoError(t, err)
	require.NoError(t, d[id].Err)
	return d[id].State
}

// CrashRestart SIGKILLs a worker process right after its third
// TxnOffsetCommit response, before EndTxn — the crash that leaves a
// transaction open with pending offsets — and restarts it with the same
// instance id, three times. Each restart must commit its first transaction
// before the orphaned transaction could time out (3 minutes; the session
// timeout is 4), which it can only do by fencing the orphan at start: it
// must commit within the env's Progress bound, which is shorter than both.
// The restarted worker is SIGKILLed again after its
// first commit; a final worker drains the input and stops with SIGTERM.
// The output must be exact and no transaction left open. workerTest names
// the test of the calling binary that runs CrashWorker.
func CrashRestart(t *testing.T, env Env, workerTest string) {
	brokers := env.Brokers
	rig := NewRig(t, env, 4)
	const n = 10_000
	rig.Produce(n)
	txnID := kafkasink.TransactionalID(rig.Group, workerInstance)
	require.Less(t, env.Timeouts.Progress, workerTransactionTimeout,
		"the test's waits must end before the orphaned transaction could time out")

	var restarts []time.Duration
	for round := 1; round <= 3; round++ {
		w := startWorker(t, workerTest, brokers, rig, 3)
		w.RequireKilled(t, env.Timeouts.Progress, fmt.Sprintf("round %d", round))
		require.Equal(t, "Ongoing", TxnState(t, brokers, txnID), "round %d: the kill did not leave an open transaction", round)

		r := startWorker(t, workerTest, brokers, rig, 0)
		select {
		case <-r.Commits:
			took := time.Since(r.Started)
			restarts = append(restarts, took)
			t.Logf("round %d: restart to first commit %v (transaction timeout %v, session timeout %v)",
				round, took.Round(time.Millisecond), workerTransactionTimeout, workerSessionTimeout)
		case <-r.Done:
			t.Fatalf("round %d: the restarted worker exited: %v", round, r.Err)
		case <-time.After(env.Timeouts.Progress):
			t.Fatalf("round %d: the restarted worker committed nothing in %v: it did not fence the orphaned transaction (it would time out after %v) or waited for the dead member (session timeout %v)",
				round, env.Timeouts.Progress, workerTransactionTimeout, workerSessionTimeout)
		}
		require.NoError(t, r.Cmd.Process.Signal(syscall.SIGKILL))
		r.RequireKilled(t, env.Timeouts.Progress, fmt.Sprintf("round %d restart", round))
	}
	t.Logf("restart to first commit: %v", restarts)

	final := startWorker(t, workerTest, brokers, rig, 0)
	rig.WaitDrained()
	require.NoError(t, final.Cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-final.Done:
		require.NoError(t, final.Err, "the final worker must stop cleanly on SIGTERM")
	case <-time.After(env.Timeouts.Progress):
		t.Fatalf("the final worker did not stop within %v of SIGTERM", env.Timeouts.Progress)
	}
	rig.VerifyExact(n)
	require.NotEqual(t, "Ongoing", TxnState(t, brokers, txnID), "a transaction was left open")
}
