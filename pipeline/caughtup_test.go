package pipeline_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
)

func TestRunUntilCaughtUp(t *testing.T) {
	_, brokers := testkit.Cluster(t, 3, "in", "out")
	const n = 3000
	testkit.Produce(t, brokers, "in", n)
	p := newPipeline(t, brokers, copyStage("out"), "a")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	require.NoError(t, p.RunUntilCaughtUp(ctx))
	t.Logf("caught up after %v", time.Since(start))
	require.Equal(t, int64(n), p.Stats().CommittedRecords)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	l, err := pipeline.Lag(ctx, kadm.NewClient(cl), "g", "in")
	require.NoError(t, err)
	require.Zero(t, l)
	testkit.Verify(t, brokers, "in", "out")

	// Nothing new: a second run returns at once.
	require.NoError(t, p.RunUntilCaughtUp(ctx))
	require.Equal(t, int64(n), p.Stats().CommittedRecords)
}

// An input written by a transactional producer ends in commit markers (and
// here an aborted transaction) that no consumer commits past: the group
// still counts as caught up.
func TestRunUntilCaughtUpTransactionalInput(t *testing.T) {
	_, brokers := testkit.Cluster(t, 2, "in", "out")
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID("upstream"), kgo.DefaultProduceTopic("in"))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, commit := range []bool{true, true, false} {
		require.NoError(t, cl.BeginTransaction())
		for j := range 50 {
			require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Key: fmt.Appendf(nil, "k%d", j), Value: fmt.Appendf(nil, "v%d-%d", i, j)}).FirstErr())
		}
		require.NoError(t, cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)))
	}
	p := newPipeline(t, brokers, copyStage("out"), "a")
	require.NoError(t, p.RunUntilCaughtUp(ctx))
	require.Equal(t, int64(100), p.Stats().CommittedRecords)
}

// Cancelled before it caught up: the error says so and wraps the cause.
func TestRunUntilCaughtUpInterrupted(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "in", "out")
	testkit.Produce(t, brokers, "in", 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stage := pipeline.StageFunc[kw](func(context.Context, *sinks.Batch, kw) error {
		cancel() // ctrl-C in the middle of the first batch
		return nil
	})
	p := newPipeline(t, brokers, stage, "a")
	err := p.RunUntilCaughtUp(ctx)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "interrupted before the group caught up")
	require.Zero(t, p.Stats().CommittedRecords)
}
