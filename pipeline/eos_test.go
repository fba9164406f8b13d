package pipeline_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/eostest"
	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// TestExactlyOnce runs the exactly-once scenarios (internal/eostest) on an
// in-process kfake cluster, a fresh one per scenario. The same scenarios run
// on Apache Kafka in the integration tests.
func TestExactlyOnce(t *testing.T) {
	eostest.Run(t, eostest.Kfake)
}

// TestStageSlowerThanTransactionTimeout: a Stage that always takes longer
// than the transaction timeout can never commit. Run must give up after
// StageRetries attempts and return a *StageError saying so, with nothing
// visible — not re-create the session and retry forever (the bug this test
// first showed: the commit's deadline, started at Begin, had expired before
// Commit sent anything, so every attempt became an unknown outcome).
func TestStageSlowerThanTransactionTimeout(t *testing.T) {
	for _, honoursCtx := range []bool{true, false} {
		t.Run(fmt.Sprintf("honours ctx %v", honoursCtx), func(t *testing.T) {
			stageSlowerThanTxnTimeout(t, honoursCtx)
		})
	}
}

func stageSlowerThanTxnTimeout(t *testing.T, honoursCtx bool) {
	_, brokers := testkit.Cluster(t, 1, "in", "out")
	testkit.Produce(t, brokers, "in", 100)
	txnID := kafkasink.TransactionalID("g", "a") // newPipeline's group, instance "a"
	var calls atomic.Int64
	stage := pipeline.StageFunc[kw](func(ctx context.Context, b *sinks.Batch, w kw) error {
		calls.Add(1)
		for _, r := range b.Records {
			w.Produce(testkit.CopyRecord("out", r))
		}
		// The fault under test: this Stage overruns the transaction. It
		// runs until its budget is gone — an event, not a duration — and
		// one that ignores ctx goes on until the broker itself has ended
		// the transaction (timed it out), then claims success.
		<-ctx.Done()
		if honoursCtx {
			return ctx.Err()
		}
		waitTxnNotOngoing(t, brokers, txnID)
		return nil
	})
	p := newPipeline(t, brokers, stage, "a", pipeline.StageRetries(2))
	stop, done := run(p)
	select {
	case err := <-done:
		var se *pipeline.StageError
		require.ErrorAs(t, err, &se, "Run must return a *StageError for a Stage that cannot finish within the transaction timeout")
		require.Equal(t, 3, se.Attempts)
		require.ErrorContains(t, se, "ran past its budget")
		require.Equal(t, int64(3), calls.Load(), "one call per attempt")
		require.Zero(t, p.Stats().UnknownOutcomes, "a slow stage is not an unknown commit outcome")
	case <-time.After(30 * time.Second):
		require.NoError(t, stop())
		t.Fatalf("Run still running after 30s with StageRetries(2): %d stage calls, %+v", calls.Load(), p.Stats())
	}
	out, err := verify.ReadAll(context.Background(), []kgo.Opt{kgo.SeedBrokers(brokers...)}, "out", 30*time.Second)
	require.NoError(t, err)
	require.Empty(t, out, "nothing was committed, so no output may be visible")
}

// waitTxnNotOngoing waits until the broker no longer has an open
// transaction for txnID (it was ended or timed out).
func waitTxnNotOngoing(t *testing.T, brokers []string, txnID string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Errorf("client: %v", err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d, err := adm.DescribeTransactions(ctx, txnID)
		cancel()
		if err == nil && d[txnID].Err == nil && d[txnID].State != "Ongoing" {
			return
		}
		time.Sleep(10 * time.Millisecond) // polling the broker's state
	}
	t.Errorf("the broker did not end transaction %q within 30s", txnID)
}
