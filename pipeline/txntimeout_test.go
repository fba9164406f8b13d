package pipeline_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
)

// reasons counts aborts by reason.
type reasons struct{ timeout, unknown, fenced atomic.Int64 }

func (r *reasons) OnBatchAborted(ai pipeline.AbortInfo) {
	switch ai.Reason {
	case pipeline.AbortTimeout:
		r.timeout.Add(1)
	case pipeline.AbortUnknownOutcome:
		r.unknown.Add(1)
	case pipeline.AbortFenced:
		r.fenced.Add(1)
	}
}

// TestBrokerSideTransactionTimeoutIsNotFatal is the reproduction of a false
// "fenced" stop: one instance, a Stage that uses almost all of its budget,
// and a TxnOffsetCommit the broker holds for a second, so the broker's
// transaction timeout aborts the transaction (and bumps the epoch) before it
// can commit. No other instance runs: Run must go on, re-create its session
// and commit everything exactly once, counting the abort as a timeout or an
// unknown outcome, never as fenced. (Since the commit's deadline counts from
// the transaction's start, the client usually gives up before the broker's
// answer and the abort is an unknown outcome; the branch where the broker's
// PRODUCER_FENCED / INVALID_PRODUCER_EPOCH arrives is tested directly in txn,
// TestEndAfterTheBrokerTimedTheTransactionOutIsRetryable, and on Apache Kafka
// in integration, TestBrokerTimeoutIsNotAFenceOnApacheKafka.)
func TestBrokerSideTransactionTimeoutIsNotFatal(t *testing.T) {
	c, brokers := testkit.Cluster(t, 1, "in", "out")
	const n = 300
	testkit.Produce(t, brokers, "in", n)

	var slowOnce, delayOnce atomic.Bool
	stage := pipeline.StageFunc[kw](func(ctx context.Context, b *sinks.Batch, w kw) error {
		for _, r := range b.Records {
			w.Produce(testkit.CopyRecord("out", r))
		}
		if slowOnce.CompareAndSwap(false, true) {
			// Inside the 1.6 s budget of a 2 s transaction timeout.
			select {
			case <-time.After(1500 * time.Millisecond):
			case <-ctx.Done():
			}
		}
		return nil
	})
	c.ControlKey(kmsg.TxnOffsetCommit.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		if delayOnce.CompareAndSwap(false, true) {
			c.SleepControl(func() { time.Sleep(time.Second) })
		}
		return nil, nil, false
	})
	c.KeepControl()

	var rs reasons
	p := newPipeline(t, brokers, stage, "a", pipeline.Hooks(&rs))
	stop, done := run(p)
	testkit.WaitFor(t, 60*time.Second, "all records committed", func() bool {
		select {
		case err := <-done:
			require.NoError(t, err, "Run stopped with no other instance running")
		default:
		}
		return committed(p) >= n && lag(t, brokers, "in", "g") == 0
	})
	require.NoError(t, stop())
	require.True(t, delayOnce.Load())
	require.Zero(t, rs.fenced.Load(), "a timeout counted as fenced")
	require.Positive(t, rs.timeout.Load()+rs.unknown.Load(), "the delayed commit did not abort: the test injected nothing")
	testkit.Verify(t, brokers, "in", "out")
}
