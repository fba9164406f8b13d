package eostest

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// zombieTxnTimeout is the transaction timeout of the zombie of
// zombieGenerationOnly: longer than every wait of the scenario, so the
// broker cannot time the zombie's transaction out while the test runs.
const zombieTxnTimeout = 5 * time.Minute

// zombieGenerationOnly is the zombie whose transaction timeout (minutes) is
// longer than its session timeout, so that the broker's transaction timeout
// cannot fence it first: only the group generation that travels with its
// offsets (KIP-447) can. The pipeline refuses such timeouts, so A is built
// directly on the Kafka sink (package txn underneath) with its own client
// options; B is an ordinary pipeline.
//
// A commits one batch, then writes a second and freezes (a Freezer) at the
// moment it sends that batch's TxnOffsetCommit: its output is in the log, in
// a transaction that holds no offsets yet. The group expires A; B joins,
// resumes at A's committed offset and commits everything, while the broker
// still reports A's transaction Ongoing. The test replays A's held
// TxnOffsetCommit itself: the broker must refuse it with ILLEGAL_GENERATION,
// UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID. Then A thaws: its commit must
// fail, its transaction must end aborted, and the verifier must find every
// input once.
func zombieGenerationOnly(t *testing.T, env Env) {
	s := NewRig(t, env, 1)
	to := env.Timeouts
	require.Greater(t, zombieTxnTimeout, 2*to.Progress+to.Session, "the zombie's transaction timeout must outlast the scenario")
	n := max(env.Records/4, 400)
	s.Produce(n)

	freezer := testkit.NewFreezer()
	t.Cleanup(freezer.Thaw) // before the session's cleanup: a frozen client cannot close
	cfg := sinks.SessionConfig{
		ClientOpts: append(env.Conn(), kgo.Dialer(freezer.Dial), kgo.TransactionTimeout(zombieTxnTimeout)),
		ConsumerOpts: []kgo.Opt{
			kgo.ConsumerGroup(s.Group),
			kgo.ConsumeTopics(s.In),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.DisableAutoCommit(),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.SessionTimeout(to.Session),
			kgo.HeartbeatInterval(to.Heartbeat),
			kgo.TransactionTimeout(zombieTxnTimeout), // > the session timeout: the point of the case
			kgo.FetchMaxWait(to.MaxWait),
			kgo.RequiredAcks(kgo.AllISRAcks()),
			kgo.InstanceID("a"),
		},
		Group:        s.Group,
		InstanceID:   "a",
		StaticMember: true,
		Logger:       logger().With("scenario", t.Name(), "instance", "a"),
	}
	txnID := kafkasink.TransactionalID(s.Group, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 4*to.Progress)
	defer cancel()
	sess, err := kafkasink.New().Open(ctx, cfg)
	require.NoError(t, err, "opening A's session")
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), to.Progress)
		defer ccancel()
		_ = sess.Close(cctx) // a zombie's close may report its fencing
	})

	// A's first batch commits: the partition has a committed offset.
	first := pollBatch(t, ctx, sess, 50)
	tx, err := sess.Begin(ctx, []*sinks.Batch{first})
	require.NoError(t, err)
	s.CopyBatch(first, tx.Writer(first))
	require.NoError(t, tx.Commit(ctx), "A's first commit")
	require.NoError(t, tx.Rollback(ctx))

	// The zombie batch.
	zb := pollBatch(t, ctx, sess, 50)
	require.Equal(t, first.LastOffset()+1, zb.FirstOffset())
	fired := freezer.FreezeAt(func(req kmsg.Request) bool {
		_, ok := req.(*kmsg.TxnOffsetCommitRequest)
		return ok
	})
	ztx, err := sess.Begin(ctx, []*sinks.Batch{zb})
	require.NoError(t, err)
	s.CopyBatch(zb, ztx.Writer(zb))
	commitErr := make(chan error, 1)
	go func() { commitErr <- ztx.Commit(ctx) }()
	select {
	case <-fired:
	case err := <-commitErr:
		t.Fatalf("A's commit returned before its TxnOffsetCommit was sent: %v", err)
	case <-time.After(to.Progress):
		t.Fatalf("A sent no TxnOffsetCommit within %v", to.Progress)
	}
	frozen := time.Now()
	held, ok := freezer.Held().(*kmsg.TxnOffsetCommitRequest)
	require.True(t, ok)
	t.Logf("A frozen at its TxnOffsetCommit (member %s, generation %d, producer id %d epoch %d) over offsets %d-%d",
		held.MemberID, held.Generation, held.ProducerID, held.ProducerEpoch, zb.FirstOffset(), zb.LastOffset())
	require.Equal(t, "Ongoing", TxnState(t, env.Brokers, txnID), "A's transaction must be open while A is frozen")

	testkit.WaitFor(t, to.Session+to.Progress, "the group to expire the frozen A", func() bool { return s.MemberGone("a") })
	t.Logf("the group expired A after %v (session timeout %v, A's transaction timeout %v)",
		time.Since(frozen).Round(time.Millisecond), to.Session, zombieTxnTimeout)

	// B's first batch tells where it resumed (its commit counters would
	// not: a commit of B's whose outcome stayed unknown under load is
	// neither counted nor lost).
	var bFirst atomic.Int64
	bFirst.Store(-1)
	copyStage := s.CopyStage()
	bStage := pipeline.StageFunc[kw](func(ctx context.Context, b *sinks.Batch, w kw) error {
		bFirst.CompareAndSwap(-1, b.FirstOffset())
		return copyStage.Process(ctx, b, w)
	})
	b := s.Start("b", bStage, s.Opts("b", 50)...)
	s.WaitDrained(b)
	require.Equal(t, zb.FirstOffset(), bFirst.Load(),
		"B must resume at A's committed offset, before the zombie batch")
	// The point of the case: the broker has not timed A's transaction out,
	// so nothing but the group generation stands between A and a commit.
	require.Equal(t, "Ongoing", TxnState(t, env.Brokers, txnID),
		"A's transaction must still be open after B committed (else the transaction timeout fenced it, not the generation)")

	// A's TxnOffsetCommit arrives now, after B committed the same records:
	// the group coordinator must refuse it.
	verdict := replayTxnOffsetCommit(t, env, held)
	require.Error(t, verdict, "the broker accepted the zombie's TxnOffsetCommit (member %s, generation %d) after B took over",
		held.MemberID, held.Generation)
	require.True(t, errors.Is(verdict, kerr.IllegalGeneration) || errors.Is(verdict, kerr.UnknownMemberID) || errors.Is(verdict, kerr.FencedInstanceID),
		"the zombie's TxnOffsetCommit must be refused for its generation or membership, not: %v", verdict)
	t.Logf("the broker refused the zombie's TxnOffsetCommit: %v", verdict)

	freezer.Thaw()
	select {
	case err := <-commitErr:
		require.Error(t, err, "the zombie's commit succeeded")
		t.Logf("the zombie's commit failed as it must: %v", err)
		require.True(t, sinks.IsRetryable(err) || sinks.IsFatal(err), "the zombie's commit error must be retryable or fatal: %v", err)
	case <-time.After(to.Progress):
		t.Fatalf("the zombie's commit did not return within %v of the thaw", to.Progress)
	}
	require.NoError(t, ztx.Rollback(ctx))
	testkit.WaitFor(t, to.Progress, "the zombie's transaction to end", func() bool {
		return TxnState(t, env.Brokers, txnID) != "Ongoing"
	})
	require.NoError(t, s.Stop(b))

	// The zombie's writes are in the log; read_committed must hide them.
	var copies int64
	for _, r := range s.ReadRaw(s.Out) {
		src, err := verify.SourceFromHeaders(r)
		require.NoError(t, err)
		if src.Offset >= zb.FirstOffset() && src.Offset <= zb.LastOffset() {
			copies++
		}
	}
	require.GreaterOrEqual(t, copies, 2*int64(len(zb.Records)), "the log must hold the zombie's copies of its batch besides B's")
	s.VerifyExact(n)
}

// pollBatch polls sess until it has at least one record, at most max, and
// returns them as partition 0's batch (the rig has one partition).
func pollBatch(t *testing.T, ctx context.Context, sess sinks.Session[kw], max int) *sinks.Batch {
	t.Helper()
	var b *sinks.Batch
	for b == nil {
		fs, err := sess.Poll(ctx, max)
		require.NoError(t, err, "polling")
		require.NoError(t, ctx.Err(), "polling")
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) > 0 {
				b = &sinks.Batch{Topic: p.Topic, Partition: p.Partition, Records: p.Records}
			}
		})
	}
	return b
}

// replayTxnOffsetCommit sends req as it is from a fresh client and returns
// the broker's verdict: the first error of the response.
func replayTxnOffsetCommit(t *testing.T, env Env, req *kmsg.TxnOffsetCommitRequest) error {
	t.Helper()
	cl, err := kgo.NewClient(env.Conn()...)
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), env.Timeouts.Progress)
	defer cancel()
	r := *req
	resp, err := r.RequestWith(ctx, cl)
	require.NoError(t, err, "replaying TxnOffsetCommit")
	for _, tp := range resp.Topics {
		for _, p := range tp.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return err
			}
		}
	}
	return nil
}
