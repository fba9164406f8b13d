package pipeline_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
)

// A sink that commits partitions on their own (Postgres mode) can commit
// some partitions of a transaction and not others: the committed ones count
// as committed, the others as aborted by their reason.
func TestPartialCommitCountsWhatCommitted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var want, revoked atomic.Int64 // records that committed; parts that did not
	f := &fakeSink{parts: 2, n: 5}
	f.commit = func(batches []*sinks.Batch) error {
		if f.commits.Load() >= 5 {
			cancel()
		}
		var errs []error
		for _, b := range batches {
			if b.Partition == 1 {
				revoked.Add(1)
				errs = append(errs, &sinks.PartitionError{Topic: b.Topic, Partition: 1, FirstOffset: b.FirstOffset(), LastOffset: b.LastOffset(),
					Err: sinks.ErrRevoked})
			} else {
				want.Add(int64(len(b.Records)))
			}
		}
		return errors.Join(errs...)
	}
	var hooked atomic.Int64
	p := fakePipeline(t, f, pipeline.StageFunc[*fakeWriter](func(context.Context, *sinks.Batch, *fakeWriter) error { return nil }),
		pipeline.MaxRecords(10), pipeline.OnCommit(func(ci pipeline.CommitInfo) { hooked.Add(int64(ci.Records)) }))
	require.NoError(t, p.Run(ctx))
	st := p.Stats()
	require.Positive(t, revoked.Load(), "no partial commit happened: the test did not exercise it")
	require.Equal(t, want.Load(), st.CommittedRecords, "the committed partitions' records count: %+v", st)
	require.Equal(t, want.Load(), hooked.Load())
	// The last one was cut by the cancel inside Commit: a shutdown.
	require.Equal(t, revoked.Load(), st.Aborts[pipeline.AbortRebalance]+st.Aborts[pipeline.AbortShutdown], "%+v", st)
	require.Positive(t, st.Aborts[pipeline.AbortRebalance], "%+v", st)
}

// A Kafka commit whose acknowledgement was lost after the broker committed
// it: the outcome is unknown to the client, the session is re-created, and
// the group's committed offsets show that it committed — so it counts as
// committed, not as an abort, and nothing is produced twice.
func TestLostCommitAckThatCommittedCountsAsCommitted(t *testing.T) {
	c, brokers := testkit.Cluster(t, 1, "in", "out")
	const n = 200
	testkit.Produce(t, brokers, "in", n)
	fwd, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer fwd.Close()

	// The first commit's EndTxn is committed by the cluster (forwarded
	// through another connection) and its connection dropped; so is every
	// retry of it, until the client gives up and re-creates its session
	// (its InitProducerID ends the dropping).
	var lost, forwarding, dropping atomic.Bool
	c.ControlKey(kmsg.EndTxn.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.EndTxnRequest)
		if forwarding.Load() {
			return nil, nil, false // the forwarded copy: handled as usual
		}
		if dropping.Load() {
			return nil, errDropped, true // a retry of the lost one
		}
		if !r.Commit || !lost.CompareAndSwap(false, true) {
			return nil, nil, false
		}
		var ferr error
		c.SleepControl(func() {
			forwarding.Store(true)
			fr := *r
			_, ferr = fr.RequestWith(context.Background(), fwd)
			forwarding.Store(false)
		})
		require.NoError(t, ferr)
		dropping.Store(true)
		return nil, errDropped, true
	})
	c.ControlKey(kmsg.InitProducerID.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		dropping.Store(false)
		return nil, nil, false
	})

	p := newPipeline(t, brokers, copyStage("out"), "a", pipeline.MaxRecords(n))
	stop, _ := run(p)
	testkit.WaitFor(t, 60*time.Second, "all records committed", func() bool { return committed(p) >= n && lag(t, brokers, "in", "g") == 0 })
	require.NoError(t, stop())
	require.True(t, lost.Load(), "no acknowledgement was lost: the test injected nothing")
	st := p.Stats()
	require.EqualValues(t, n, st.CommittedRecords, "%+v", st)
	require.Zero(t, st.UnknownOutcomes, "%+v", st)
	testkit.Verify(t, brokers, "in", "out")
}
