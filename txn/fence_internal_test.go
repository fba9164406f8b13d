package txn

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactlyonce/exactly/sinks"
)

// A coordinator that answers CONCURRENT_TRANSACTIONS for seconds (it is
// completing the previous transaction, as after a broker failure): franz-go's
// own InitProducerID spaces its retries 500 ms apart once the call is 2.5 s
// old and 1 s apart at 5 s; the fence keeps them at its short backoff, so it
// returns soon after the coordinator does.
func TestFenceKeepsRetryingBrisklyWhileTheCoordinatorIsBusy(t *testing.T) {
	const busy = 3500 * time.Millisecond
	brokers, sentp := answering(t, kerr.ConcurrentTransactions, func(_ int, since time.Duration) bool { return since <= busy })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, Fence(ctx, []kgo.Opt{kgo.SeedBrokers(brokers...)}, "g:a"))
	sent := *sentp
	first := sent[0]
	var late time.Duration // the longest pause between retries from the last second of the busy time on
	for i := 1; i < len(sent); i++ {
		if sent[i].Sub(first) > busy-time.Second {
			late = max(late, sent[i].Sub(sent[i-1]))
		}
	}
	require.Less(t, late, 450*time.Millisecond,
		"the fence's retries slowed down to franz-go's 500 ms / 1 s (%d InitProducerIDs)", len(sent))
}

// The fence's backoff starts at 20 ms for five tries, doubles, and never
// exceeds FenceRetryBackoff (plus its jitter).
func TestFenceBackoff(t *testing.T) {
	for fails, want := range map[int]time.Duration{1: 20, 5: 20, 6: 40, 7: 80, 8: 160} {
		require.InDelta(t, want*time.Millisecond, fenceBackoff(fails), float64(want*time.Millisecond/5), "try %d", fails)
	}
	for fails := 9; fails < 30; fails++ {
		require.LessOrEqual(t, fenceBackoff(fails), FenceRetryBackoff*6/5)
		require.GreaterOrEqual(t, fenceBackoff(fails), FenceRetryBackoff*4/5)
	}
}

// A coordinator that never becomes available (here: every InitProducerID is
// answered COORDINATOR_NOT_AVAILABLE, as when __transaction_state cannot be
// created) is retried until the context ends, and the error names its last
// answer, not only the deadline.
func TestFenceReportsACoordinatorThatNeverAnswers(t *testing.T) {
	brokers, _ := answering(t, kerr.CoordinatorNotAvailable, func(int, time.Duration) bool { return true })
	// franz-go retries this answer itself (it looks the coordinator up
	// again) fenceRequestRetries times before Fence sees it.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := Fence(ctx, []kgo.Opt{kgo.SeedBrokers(brokers...)}, "g:a")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, kerr.CoordinatorNotAvailable, "the last answer is named")
	require.Contains(t, err.Error(), `transactional id "g:a"`)
}

// A fence the broker refuses for good (not authorized) stops at once, as a
// fatal error.
func TestFenceStopsAtARefusal(t *testing.T) {
	brokers, _ := answering(t, kerr.TransactionalIDAuthorizationFailed, func(int, time.Duration) bool { return true })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := Fence(ctx, []kgo.Opt{kgo.SeedBrokers(brokers...)}, "g:a")
	require.ErrorIs(t, err, kerr.TransactionalIDAuthorizationFailed)
	require.True(t, sinks.IsFatal(err), "%v", err)
	require.NoError(t, ctx.Err(), "retried a refusal until the deadline")
}

// The fence's backoff holds whatever backoff the client options set (the
// pipeline passes txn.DefaultClientOpts, up to 1 s, in ClientOpts).
func TestFenceUsesItsOwnBackoff(t *testing.T) {
	brokers, sentp := answering(t, kerr.ConcurrentTransactions, func(n int, _ time.Duration) bool { return n <= 8 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	slow := kgo.RetryBackoffFn(func(int) time.Duration { return 5 * time.Second })
	require.NoError(t, Fence(ctx, append(DefaultClientOpts(), kgo.SeedBrokers(brokers...), slow), "g:a"))
	sent := *sentp
	require.Len(t, sent, 9)
	require.Less(t, sent[8].Sub(sent[0]), 4*time.Second, "8 retries took as long as one of the options' backoff")
}

// answering is a one-broker kfake cluster whose coordinator answers
// InitProducerID with code while busy(n, since) — the n-th request, since
// the first — and as usual after. It records when each request arrived; read
// them once Fence returned (control functions run in the cluster's
// goroutine, one at a time, before the answer is sent).
func answering(t *testing.T, code *kerr.Error, busy func(n int, since time.Duration) bool) ([]string, *[]time.Time) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	var sent []time.Time
	c.ControlKey(kmsg.InitProducerID.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		sent = append(sent, time.Now())
		if !busy(len(sent), sent[len(sent)-1].Sub(sent[0])) {
			return nil, nil, false
		}
		resp := req.(*kmsg.InitProducerIDRequest).ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = code.Code
		return resp, nil, true
	})
	return c.ListenAddrs(), &sent
}

// A coordinator that died behind something that still accepts connections
// (a proxy, a load balancer): every request to it ends with the connection
// closed, which franz-go does not take as a reason to look the coordinator
// up again. After the coordinator moved, the fence must find the new one
// (a fresh client after a connection failure), not retry the dead one until
// its context ends.
func TestFenceFindsTheNewCoordinatorBehindADeadConnection(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3))
	require.NoError(t, err)
	defer c.Close()
	dead := c.CoordinatorFor("g:a")
	var moved bool
	c.ControlKey(kmsg.InitProducerID.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if c.CurrentNode() != dead {
			return nil, nil, false
		}
		for !moved { // the coordinator moves away from the dead broker
			c.RehashCoordinators()
			moved = c.CoordinatorFor("g:a") != dead
		}
		return nil, errors.New("the coordinator's broker is dead"), true // closes the connection
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, Fence(ctx, []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, "g:a"))
}
