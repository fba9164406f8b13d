package pipeline_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

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

// Two upstream transactions interleave on the input; the later one is still
// open when the run takes its end offsets (the last stable offset stops at
// its first record), and both abort. Nothing below that end is ever
// delivered, and both markers lie past it: the group is caught up all the
// same. (The probe used to ignore records past the end and so waited
// forever.)
func TestRunUntilCaughtUpInputAbortedAfterTheEndsWereTaken(t *testing.T) {
	c, brokers := testkit.Cluster(t, 1, "in", "out")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	upstream := func(id string) *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID(id), kgo.DefaultProduceTopic("in"), kgo.TransactionTimeout(time.Minute))
		require.NoError(t, err)
		t.Cleanup(cl.Close)
		require.NoError(t, cl.BeginTransaction())
		return cl
	}
	first, second := upstream("first"), upstream("second")
	for range 3 {
		require.NoError(t, first.ProduceSync(ctx, &kgo.Record{Value: []byte("aborted")}).FirstErr())
	}
	require.NoError(t, second.ProduceSync(ctx, &kgo.Record{Value: []byte("aborted later")}).FirstErr())
	require.NoError(t, first.EndTransaction(ctx, kgo.TryAbort)) // its marker lands after second's record

	// The run's end offsets: a read_committed ListOffsets for the latest
	// offset (the consumer's own resets ask for the earliest).
	taken := make(chan struct{})
	var once sync.Once
	c.ControlKey(int16(kmsg.ListOffsets), func(req kmsg.Request) (kmsg.Response, error, bool) {
		lo := req.(*kmsg.ListOffsetsRequest)
		if lo.IsolationLevel == 1 && len(lo.Topics) > 0 && len(lo.Topics[0].Partitions) > 0 && lo.Topics[0].Partitions[0].Timestamp == -1 {
			once.Do(func() { close(taken) })
		}
		return nil, nil, false // kfake answers it; the control stays installed
	})
	p := newPipeline(t, brokers, copyStage("out"), "a", pipeline.Preflight(pipeline.PreflightOff))
	done := make(chan error, 1)
	go func() { done <- p.RunUntilCaughtUp(ctx) }()
	<-taken
	// kfake answers one request at a time and nothing changed since the
	// run's listing: it got the same end, second's first record.
	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer adm.Close()
	ends, err := kadm.NewClient(adm).ListCommittedOffsets(ctx, "in")
	require.NoError(t, err)
	end, _ := ends.Lookup("in", 0)
	require.Equal(t, int64(3), end.Offset, "the run's end stops at the open transaction")
	require.NoError(t, second.EndTransaction(ctx, kgo.TryAbort))
	require.NoError(t, <-done)
	require.Zero(t, p.Stats().CommittedRecords)
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
