package pipeline_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// TestDelayedEndTxnRecreatesProducer holds the first EndTxn (commit) at the
// broker until the client gave up on it, so its outcome is unknown to the
// pipeline. The session must discard its producer and open a new one (whose
// InitProducerID fences the old epoch), and only then is the delayed EndTxn
// let through — the "hanging transaction" of KAFKA-17754. The broker must
// refuse the late EndTxn (the test forwards it to the cluster itself, to read
// the verdict), the producer epoch must have moved past the late request's,
// and the output must be exact: the late EndTxn must neither commit a second
// copy nor lose the batch.
func TestDelayedEndTxnRecreatesProducer(t *testing.T) {
	c, brokers := testkit.Cluster(t, 4, "in", "out")
	const n = 3000
	testkit.Produce(t, brokers, "in", n)

	// fwd delivers the late EndTxn to the cluster once woken: a control
	// function cannot see the response to a request the cluster handles,
	// so it handles the request itself by sending the same request from
	// this client, and hands the cluster's answer back.
	fwd, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	t.Cleanup(fwd.Close)

	// Every InitProducerID of the pipeline's transactional id: a new
	// producer (the fence at Open, and the re-created session's) sends one.
	txnID := kafkasink.TransactionalID("g", "a") // newPipeline's group, instance "a"
	var inits, committedTxns atomic.Int64
	c.ControlKey(kmsg.InitProducerID.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if r := req.(*kmsg.InitProducerIDRequest); r.TransactionalID != nil && *r.TransactionalID == txnID {
			inits.Add(1)
		}
		return nil, nil, false
	})

	var (
		initsAtHold   atomic.Int64
		commitsAtHold atomic.Int64
		wake          = make(chan struct{})
		landed        = make(chan struct{})
		held          atomic.Bool
		late          kmsg.EndTxnRequest
		verdict       *kmsg.EndTxnResponse
		fwdErr        error
	)
	c.ControlKey(kmsg.EndTxn.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.EndTxnRequest)
		if !r.Commit || !held.CompareAndSwap(false, true) {
			return nil, nil, false // the cluster handles it as usual
		}
		late = *r
		initsAtHold.Store(inits.Load())
		commitsAtHold.Store(committedTxns.Load())
		// SleepControl runs this in a goroutine and lets the cluster
		// serve other requests meanwhile: the forward can be served.
		c.SleepControl(func() {
			<-wake
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			again := late
			verdict, fwdErr = again.RequestWith(ctx, fwd)
		})
		close(landed)
		if fwdErr != nil {
			return nil, fwdErr, true
		}
		return verdict, nil, true
	})

	p := newPipeline(t, brokers, copyStage("out"), "a",
		pipeline.OnCommit(func(pipeline.CommitInfo) { committedTxns.Add(1) }))
	stop, _ := run(p)
	testkit.WaitFor(t, 30*time.Second, "the commit's outcome to be unknown", func() bool { return p.Stats().UnknownOutcomes > 0 })
	require.True(t, held.Load())
	// The commit's context is gone, so the session re-opens on the next
	// poll. The late EndTxn lands only once the new producer fenced the
	// old epoch and committed a transaction of its own (each commit bumps
	// the epoch, KIP-890): the broker can then only refuse it for its
	// epoch.
	testkit.WaitFor(t, 30*time.Second, "the session to re-create its producer (a new InitProducerID) and commit", func() bool {
		return inits.Load() > initsAtHold.Load() && committedTxns.Load() > commitsAtHold.Load()
	})
	close(wake) // the delayed EndTxn of the old producer lands now
	select {
	case <-landed:
	case <-time.After(30 * time.Second):
		t.Fatal("the delayed EndTxn did not reach the cluster within 30s of its release")
	}
	require.NoError(t, fwdErr, "forwarding the late EndTxn")
	lateErr := kerr.ErrorForCode(verdict.ErrorCode)
	t.Logf("late EndTxn(commit) of producer id %d epoch %d: %v", late.ProducerID, late.ProducerEpoch, lateErr)
	require.Error(t, lateErr, "the broker accepted the late EndTxn(commit) of the discarded producer")
	require.True(t, errors.Is(lateErr, kerr.ProducerFenced) || errors.Is(lateErr, kerr.InvalidProducerEpoch),
		"the late EndTxn must be refused for its stale epoch: %v", lateErr)

	adm := kadm.NewClient(fwd)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := adm.DescribeTransactions(ctx, txnID)
	require.NoError(t, err)
	require.NoError(t, d[txnID].Err)
	require.Equal(t, late.ProducerID, d[txnID].ProducerID, "the transactional id keeps its producer id")
	require.Greater(t, d[txnID].ProducerEpoch, late.ProducerEpoch, "the producer epoch must have moved past the late EndTxn's")

	testkit.WaitFor(t, 60*time.Second, "all records committed", func() bool { return lag(t, brokers, "in", "g") == 0 })
	require.NoError(t, stop())
	testkit.Verify(t, brokers, "in", "out")
}
