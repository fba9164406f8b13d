package txn_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/txn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const txnTimeout = time.Second

// open opens a session consuming "in" in group "g" as static member
// instance, with a short transaction timeout.
func open(t *testing.T, brokers []string, instance string) *txn.Session {
	t.Helper()
	s, err := txn.Open(context.Background(), txn.Config{
		ClientOpts: []kgo.Opt{kgo.SeedBrokers(brokers...), kgo.TransactionTimeout(txnTimeout)},
		ConsumerOpts: []kgo.Opt{
			kgo.ConsumerGroup("g"), kgo.ConsumeTopics("in"),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.SessionTimeout(5 * time.Second),
			kgo.InstanceID(instance),
		},
		TransactionalID: "g:" + instance,
		LeaveOnClose:    true,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// pollSome polls until at least one record arrived.
func pollSome(t *testing.T, s *txn.Session) []*kgo.Record {
	t.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		fs, err := s.Poll(ctx, 100)
		cancel()
		require.NoError(t, err)
		if rs := fs.Records(); len(rs) > 0 {
			return rs
		}
		require.NoError(t, ctx.Err(), "no records within 10s")
	}
}

func produce(s *txn.Session, rs []*kgo.Record) {
	for _, r := range rs {
		s.Produce(context.Background(), testkit.CopyRecord("out", r), nil)
	}
}

// awaitAborted waits until the broker ended the open transaction on "out":
// its last stable offset catches up with its high watermark.
func awaitAborted(t *testing.T, brokers []string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	testkit.WaitFor(t, 30*time.Second, "the broker to end the open transaction", func() bool {
		hwm, err1 := adm.ListEndOffsets(context.Background(), "out")
		lso, err2 := adm.ListCommittedOffsets(context.Background(), "out")
		if err1 != nil || err2 != nil || hwm.Error() != nil || lso.Error() != nil {
			return false
		}
		ended := true
		hwm.Each(func(h kadm.ListedOffset) {
			if l, ok := lso.Lookup(h.Topic, h.Partition); !ok || l.Offset < h.Offset {
				ended = false
			}
		})
		return ended
	})
}

// A transaction that outlives the transaction timeout is aborted by the
// broker, which then answers as it does to a zombie (the epoch moved). With
// no successor, End must report a retryable timeout, never a fatal fence,
// and the re-created session must commit the records again.
func TestEndAfterTheBrokerTimedTheTransactionOutIsRetryable(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "in", "out")
	testkit.Produce(t, brokers, "in", 10)
	s := open(t, brokers, "a")

	rs := pollSome(t, s)
	require.NoError(t, s.Begin(context.Background()))
	produce(s, rs)
	require.NoError(t, s.Flush(context.Background()))
	awaitAborted(t, brokers)

	err := s.End(context.Background(), true)
	require.Error(t, err)
	require.ErrorIs(t, err, sinks.ErrTxnTimedOut)
	require.ErrorIs(t, err, sinks.ErrAborted)
	require.False(t, sinks.IsFatal(err), "a timeout reported as fatal: %v", err)
	require.True(t, sinks.IsRetryable(err))

	// The session goes on from the committed offsets.
	commitAgain(t, brokers, s, "the aborted records are polled again")
}

// commitAgain polls the 10 records of "in" again, commits them to "out" and
// checks "out" holds each once.
func commitAgain(t *testing.T, brokers []string, s *txn.Session, why string) {
	t.Helper()
	rs := pollSome(t, s)
	require.Len(t, rs, 10, why)
	require.NoError(t, s.Begin(context.Background()))
	produce(s, rs)
	require.NoError(t, s.End(context.Background(), true))
	testkit.Verify(t, brokers, "in", "out")
}

// A successor that initializes our transactional id while our transaction is
// open fences us: End must stop with one sentence that names the InstanceID.
func TestEndAfterASuccessorFencedUsIsFatal(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "in", "out")
	testkit.Produce(t, brokers, "in", 10)
	s := open(t, brokers, "a")

	rs := pollSome(t, s)
	require.NoError(t, s.Begin(context.Background()))
	produce(s, rs)
	require.NoError(t, s.Flush(context.Background()))
	require.NoError(t, txn.Fence(context.Background(), []kgo.Opt{kgo.SeedBrokers(brokers...)}, "g:a"))

	err := s.End(context.Background(), true)
	require.True(t, sinks.IsFatal(err), "%v", err)
	require.ErrorIs(t, err, sinks.ErrFenced)
	var fe *sinks.FatalError
	require.ErrorAs(t, err, &fe)
	require.Contains(t, err.Error(), `another instance started with InstanceID "a" in group "g"`)
	require.Contains(t, err.Error(), "each running instance needs its own InstanceID")
	out, err := verify.ReadAll(context.Background(), []kgo.Opt{kgo.SeedBrokers(brokers...)}, "out", 10*time.Second)
	require.NoError(t, err)
	require.Empty(t, out, "nothing of the fenced transaction is visible")
}

// Open fences the previous incarnation: a transaction that a crashed
// predecessor left open is aborted at once, so read_committed readers are not
// pinned until the transaction timeout.
func TestOpenAbortsThePredecessorsOpenTransaction(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "in", "out")
	old, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID("g:a"), kgo.TransactionTimeout(time.Minute))
	require.NoError(t, err)
	defer old.Close()
	require.NoError(t, old.BeginTransaction())
	require.NoError(t, old.ProduceSync(context.Background(), &kgo.Record{Topic: "out", Value: []byte("orphan")}).FirstErr())

	open(t, brokers, "a") // fences "g:a"
	awaitAborted(t, brokers)
	err = old.EndTransaction(context.Background(), kgo.TryCommit)
	require.Error(t, err, "the predecessor's transaction must not commit after the fence")
	out, err := verify.ReadAll(context.Background(), []kgo.Opt{kgo.SeedBrokers(brokers...)}, "out", 10*time.Second)
	require.NoError(t, err)
	require.Empty(t, out, "the orphan's record is not visible")
}

// Without static membership: A's transaction outlives its timeout while a
// successor B, with the same transactional id, has a transaction in progress.
// A must stop (fatal), not re-create and fence the healthy B.
func TestEndPastTheTimeoutWithASuccessorInProgressIsFatal(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "in", "out")
	testkit.Produce(t, brokers, "in", 10)
	open := func(group string) *txn.Session {
		s, err := txn.Open(context.Background(), txn.Config{
			ClientOpts: []kgo.Opt{kgo.SeedBrokers(brokers...), kgo.TransactionTimeout(txnTimeout)},
			ConsumerOpts: []kgo.Opt{kgo.ConsumerGroup(group), kgo.ConsumeTopics("in"),
				kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.SessionTimeout(5 * time.Second)},
			TransactionalID: "g:a",
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		return s
	}
	a := open("g")
	rs := pollSome(t, a)
	require.NoError(t, a.Begin(context.Background()))
	produce(a, rs)
	require.NoError(t, a.Flush(context.Background()))
	awaitAborted(t, brokers) // past A's timeout: the broker aborted it

	b := open("g2") // the successor: same transactional id (its own group, so the test needs no rebalance)
	rb := pollSome(t, b)
	require.NoError(t, b.Begin(context.Background()))
	produce(b, rb)
	require.NoError(t, b.Flush(context.Background()))

	err := a.End(context.Background(), true)
	require.True(t, sinks.IsFatal(err), "the zombie went on: %v", err)
	require.ErrorIs(t, err, sinks.ErrFenced)
	require.Contains(t, err.Error(), "transaction in progress")
	require.NoError(t, b.End(context.Background(), true), "the successor's commit")
}

// lastCommitUnknown drives s through a transaction of the records in "in"
// whose End cannot complete (its context is gone): the outcome is unknown,
// the session discards its client and re-opens on its next call.
func lastCommitUnknown(t *testing.T, s *txn.Session) {
	t.Helper()
	rs := pollSome(t, s)
	require.NoError(t, s.Begin(context.Background()))
	produce(s, rs)
	require.NoError(t, s.Flush(context.Background()))
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.End(gone, true)
	require.ErrorIs(t, err, sinks.ErrOutcomeUnknown)
}

// reopening is a session "a" on 10 records of "in" whose last commit's
// outcome was unknown, so that it re-opens (fencing again) at its next call,
// with that fence held as holdFence(answer, later) says.
func reopening(t *testing.T, answer *kerr.Error, later bool) ([]string, *txn.Session, *heldFence) {
	t.Helper()
	c, brokers := testkit.Cluster(t, 1, "in", "out")
	testkit.Produce(t, brokers, "in", 10)
	s := open(t, brokers, "a")
	lastCommitUnknown(t, s)
	return brokers, s, holdFence(c, answer, later)
}

// heldFence holds the next InitProducerID of transactional id "g:a" (the
// re-opened session's fence) until release is closed; it answers that one
// with answer (nil: as the cluster would), and every later one too if later. It counts every InitProducerID of
// "g:a" that reaches the cluster while one is held, and every JoinGroup of
// group "g" sent while one is held.
type heldFence struct {
	release      chan struct{}
	held         atomic.Bool
	joinsHeld    chan struct{} // closed at the first JoinGroup while held
	initsHeld    atomic.Int64
	joinsHeldOne sync.Once
}

func holdFence(c *kfake.Cluster, answer *kerr.Error, later bool) *heldFence {
	h := &heldFence{release: make(chan struct{}), joinsHeld: make(chan struct{})}
	armed := true
	c.ControlKey(kmsg.JoinGroup.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if req.(*kmsg.JoinGroupRequest).Group == "g" && h.held.Load() {
			h.joinsHeldOne.Do(func() { close(h.joinsHeld) })
		}
		return nil, nil, false
	})
	c.ControlKey(kmsg.InitProducerID.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.InitProducerIDRequest)
		if r.TransactionalID == nil || *r.TransactionalID != "g:a" {
			return nil, nil, false
		}
		if h.held.Load() {
			h.initsHeld.Add(1)
		}
		first := armed
		if armed {
			armed = false
			h.held.Store(true)
			c.SleepControl(func() { <-h.release })
			h.held.Store(false)
		}
		if answer != nil && (first || later) {
			resp := r.ResponseKind().(*kmsg.InitProducerIDResponse)
			resp.ErrorCode = answer.Code
			return resp, nil, true
		}
		return nil, nil, false
	})
	return h
}

// A re-opened session whose fence waits (the coordinator is busy completing
// the previous transaction, as after a broker failure) joins the group
// meanwhile instead of after it, and its producer initializes only after
// the fence: it commits, and no InitProducerID of it overtakes the fence's.
// Before the overlap, the JoinGroup came only once the fence returned.
func TestReopenJoinsTheGroupWhileTheFenceWaits(t *testing.T) {
	brokers, s, h := reopening(t, nil, false)
	polled := make(chan []*kgo.Record, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var rs []*kgo.Record
		for len(rs) == 0 && ctx.Err() == nil {
			fs, err := s.Poll(ctx, 100)
			if err != nil {
				break
			}
			rs = fs.Records()
		}
		polled <- rs
	}()
	select {
	case <-h.joinsHeld:
	case <-time.After(30 * time.Second):
		t.Fatal("the re-opened session did not join the group while its fence was held")
	}
	rs := <-polled // the offsets are stable (the lost commit sent no offsets): records come before the fence returns
	require.Len(t, rs, 10, "the records of the unknown transaction are polled again")

	began := make(chan error, 1)
	go func() { began <- s.Begin(context.Background()) }()
	close(h.release)
	require.NoError(t, <-began)
	require.Zero(t, h.initsHeld.Load(), "an InitProducerID of the new producer overtook the fence's")
	produce(s, rs)
	require.NoError(t, s.End(context.Background(), true), "the new producer was not fenced by the fence")
	testkit.Verify(t, brokers, "in", "out")
}

// A fence that fails after the re-opened session's client was created is
// reported by Poll at once, not when the poll's context ends, and nothing
// polled meanwhile is processed.
func TestReopenReportsAFailedFenceAtPoll(t *testing.T) {
	_, s, h := reopening(t, kerr.TransactionalIDAuthorizationFailed, true)
	go func() {
		select {
		case <-h.joinsHeld:
		case <-time.After(30 * time.Second):
		}
		close(h.release)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	for err == nil {
		_, err = s.Poll(ctx, 100)
	}
	require.NoError(t, ctx.Err(), "Poll waited for its context instead of reporting the fence: %v", err)
	require.True(t, sinks.IsFatal(err), "%v", err)
	require.ErrorIs(t, err, kerr.TransactionalIDAuthorizationFailed)
	err = s.Begin(context.Background())
	require.True(t, sinks.IsFatal(err), "the next call fences again: %v", err)
	require.ErrorIs(t, err, kerr.TransactionalIDAuthorizationFailed)
}

// Records polled while the fence ran, by a client the session discarded when
// the fence then failed (an error it does not retry), are never committed by
// the next client: that one's commit would carry no offsets for them, and
// they would be committed twice. Begin refuses the batch, and the records are
// polled again from the committed offsets.
func TestABatchOfADiscardedClientIsNotCommitted(t *testing.T) {
	brokers, s, h := reopening(t, kerr.UnknownServerError, false)
	polled := make(chan []*kgo.Record, 1)
	go func() { polled <- pollSome(t, s) }()
	rs := <-polled // while the fence is held: the new client's join and fetch went on
	require.Len(t, rs, 10)
	close(h.release) // the fence fails now
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	for err == nil && ctx.Err() == nil {
		_, err = s.Poll(ctx, 100) // the batch goes on collecting; this poll learns of the failure
	}
	require.ErrorIs(t, err, kerr.UnknownServerError)
	require.False(t, sinks.IsFatal(err))

	err = s.Begin(context.Background())
	require.ErrorIs(t, err, sinks.ErrAborted, "the batch of the discarded client was begun")
	require.True(t, sinks.IsRetryable(err), "%v", err)

	commitAgain(t, brokers, s, "the records are polled again from the committed offsets")
}

// TestCloseDoesNotWaitForAJoinThatWaitsForAGoneMember: static member B went
// away without leaving the group (a static member's client does not leave
// on Close). A's join then waits for B to rejoin until B's session times out
// (45 s here), and franz-go's Close waits for that join's answer. Close must
// not: it interrupts the client after CloseGrace and returns. Before, it returned only once the coordinator dropped B
// (about 45 s).
func TestCloseDoesNotWaitForAJoinThatWaitsForAGoneMember(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "in", "out")
	testkit.GoneMember(t, brokers, "g", "in", "b", 45*time.Second)
	a := open(t, brokers, "a")
	testkit.AwaitRebalancing(t, brokers, "g", 30*time.Second) // a's join waits for b

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	require.NoError(t, a.Close(ctx))
	took := time.Since(start)
	t.Logf("Close took %v with a join in flight (grace %v)", took, txn.CloseGrace)
	require.Less(t, took, 20*time.Second, "Close waited for the coordinator to drop the gone member")
	// a's first join was never answered, so a does not know its member
	// id and cannot leave (leaving by instance id alone could remove a
	// successor): the coordinator drops it after its session timeout.
}
