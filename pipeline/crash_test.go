package pipeline_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
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
)

// Environment of the worker process that the crash tests start.
const (
	envWorkerBrokers = "EXACTLY_TEST_WORKER_BROKERS"
	envWorkerKillAt  = "EXACTLY_TEST_WORKER_KILL_AT_TXN_OFFSET_COMMIT"
)

// killHook SIGKILLs the process right after the n-th TxnOffsetCommit
// response arrives: the transaction then holds its outputs and offsets but
// has no EndTxn, which is the crash that stalls a naive restart for the
// whole transaction timeout.
type killHook struct {
	n    int64
	seen atomic.Int64
}

func (h *killHook) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	const txnOffsetCommit = 28
	if key == txnOffsetCommit && err == nil && h.seen.Add(1) == h.n {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
}

// TestWorkerProcess is not a test: it is the worker that the crash tests
// run in a child process, so that it can really be SIGKILLed.
func TestWorkerProcess(t *testing.T) {
	brokers := os.Getenv(envWorkerBrokers)
	if brokers == "" {
		t.Skip("runs only as the crash tests' child process")
	}
	opts := []pipeline.Opt{
		pipeline.MaxRecords(200),
		pipeline.SessionTimeout(30 * time.Second),
		pipeline.TransactionTimeout(20 * time.Second),
		pipeline.OnCommit(func(ci pipeline.CommitInfo) {
			fmt.Printf("COMMIT %d\n", ci.Records)
		}),
	}
	if n, _ := strconv.Atoi(os.Getenv(envWorkerKillAt)); n > 0 {
		opts = append(opts, pipeline.ClientOpts(kgo.WithHooks(&killHook{n: int64(n)})))
	}
	p := newPipeline(t, strings.Split(brokers, ","), copyStage("out"), "crashy", opts...)
	fmt.Println("STARTED")
	require.NoError(t, p.Run(context.Background()))
}

type worker struct {
	cmd     *exec.Cmd
	started time.Time
	commits chan int      // records per committed transaction
	done    chan struct{} // closed when the process exited
	err     error         // cmd.Wait's result, once done is closed
}

func startWorker(t *testing.T, brokers []string, killAt int) *worker {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWorkerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envWorkerBrokers+"="+strings.Join(brokers, ","), envWorkerKillAt+"="+strconv.Itoa(killAt))
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	w := &worker{cmd: cmd, commits: make(chan int, 1024), done: make(chan struct{})}
	w.started = time.Now()
	require.NoError(t, cmd.Start())
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "COMMIT "); ok {
				v, _ := strconv.Atoi(n)
				w.commits <- v
			}
		}
		w.err = cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-w.done
	})
	return w
}

// lag is the number of input records the group has not committed.
func lag(t *testing.T, brokers []string, topic, group string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	ends, err := adm.ListEndOffsets(ctx, topic)
	require.NoError(t, err)
	offs, err := adm.FetchOffsets(ctx, group)
	require.NoError(t, err)
	var l int64
	ends.Each(func(lo kadm.ListedOffset) {
		at := int64(0)
		if c, ok := offs.Lookup(lo.Topic, lo.Partition); ok && c.At > 0 {
			at = c.At
		}
		l += lo.Offset - at
	})
	return l
}

// TestRestartAfterKillBetweenOffsetCommitAndEndTxn kills a worker right
// after its TxnOffsetCommit, before EndTxn, three times, and restarts it
// each time with the same instance id. The restarted worker must commit its
// first batch within a few seconds — the transaction timeout is 20s and the
// session timeout 30s, so a restart that waited for either would fail — and
// the output must be exact.
func TestRestartAfterKillBetweenOffsetCommitAndEndTxn(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	_, brokers := testkit.Cluster(t, 4, "in", "out")
	const n = 6000
	testkit.Produce(t, brokers, "in", n)

	for round := 1; round <= 3; round++ {
		w := startWorker(t, brokers, 3)
		select {
		case <-w.done:
			var ee *exec.ExitError
			require.ErrorAs(t, w.err, &ee, "round %d: worker exited without being killed", round)
			ws, _ := ee.Sys().(syscall.WaitStatus)
			require.Equal(t, syscall.SIGKILL, ws.Signal(), "round %d: worker was not SIGKILLed: %v", round, w.err)
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d: worker was not killed at its third TxnOffsetCommit", round)
		}
		// The kill left a transaction open: that is the case under test.
		require.Equal(t, "Ongoing", txnState(t, brokers, "g-crashy"), "round %d: the kill did not leave an open transaction", round)

		// The restart: same instance id, no kill.
		r := startWorker(t, brokers, 0)
		select {
		case <-r.commits:
			took := time.Since(r.started)
			t.Logf("round %d: restart to first commit %v (transaction timeout 20s, session timeout 30s)", round, took.Round(time.Millisecond))
			require.Less(t, took, 8*time.Second, "round %d: the restart waited for the orphaned transaction or the dead member", round)
		case <-r.done:
			t.Fatalf("round %d: restarted worker exited: %v", round, r.err)
		case <-time.After(40 * time.Second):
			t.Fatalf("round %d: restarted worker committed nothing in 40s", round)
		}
		// Let it make progress, then stop it hard too (a plain SIGKILL
		// between batches) before the next round.
		require.NoError(t, r.cmd.Process.Signal(syscall.SIGKILL))
		<-r.done
	}

	final := startWorker(t, brokers, 0)
	testkit.WaitFor(t, 60*time.Second, "the group to commit every input", func() bool {
		return lag(t, brokers, "in", "g") == 0
	})
	require.NoError(t, final.cmd.Process.Signal(syscall.SIGTERM))
	<-final.done
	testkit.Verify(t, brokers, "in", "out")
	require.NotEqual(t, "Ongoing", txnState(t, brokers, "g-crashy"), "a transaction was left open")
}

func txnState(t *testing.T, brokers []string, id string) string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	d, err := kadm.NewClient(cl).DescribeTransactions(context.Background(), id)
	require.NoError(t, err)
	require.NoError(t, d[id].Err)
	return d[id].State
}
