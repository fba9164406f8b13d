package txn

import (
	"context"
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
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	const busy = 3500 * time.Millisecond
	var (
		first time.Time
		sent  []time.Time // every InitProducerID
	)
	c.ControlKey(kmsg.InitProducerID.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		sent = append(sent, now)
		if now.Sub(first) > busy {
			return nil, nil, false
		}
		resp := req.(*kmsg.InitProducerIDRequest).ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = kerr.ConcurrentTransactions.Code
		return resp, nil, true
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, Fence(ctx, []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, "g:a"))
	// Control functions run one at a time in the cluster's goroutine, and
	// Fence returned after the last of them: sent is complete.
	var late time.Duration // the longest pause between retries from the last second of the busy time on
	for i := 1; i < len(sent); i++ {
		if sent[i].Sub(first) > busy-time.Second {
			late = max(late, sent[i].Sub(sent[i-1]))
		}
	}
	require.Less(t, late, 450*time.Millisecond,
		"the fence's retries slowed down to franz-go's 500 ms / 1 s (%d InitProducerIDs)", len(sent))
}

// The fence's backoff starts at 50 ms and never exceeds FenceRetryBackoff
// (plus its jitter).
func TestFenceBackoff(t *testing.T) {
	require.InDelta(t, 50*time.Millisecond, fenceBackoff(1), float64(10*time.Millisecond))
	require.InDelta(t, 100*time.Millisecond, fenceBackoff(2), float64(20*time.Millisecond))
	for fails := 3; fails < 30; fails++ {
		require.LessOrEqual(t, fenceBackoff(fails), FenceRetryBackoff*6/5)
		require.GreaterOrEqual(t, fenceBackoff(fails), FenceRetryBackoff*4/5)
	}
}

// A coordinator that never becomes available (here: every InitProducerID is
// answered COORDINATOR_NOT_AVAILABLE, as when __transaction_state cannot be
// created) is retried until the context ends, and the error names its last
// answer, not only the deadline.
func TestFenceReportsACoordinatorThatNeverAnswers(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	c.ControlKey(kmsg.InitProducerID.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		resp := req.(*kmsg.InitProducerIDRequest).ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp, nil, true
	})
	// franz-go retries this answer itself (it looks the coordinator up
	// again) before it returns it; two retries, so that it does within
	// the test's time.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err = Fence(ctx, []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.RequestRetries(2)}, "g:a")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, kerr.CoordinatorNotAvailable, "the last answer is named")
	require.Contains(t, err.Error(), `transactional id "g:a"`)
}

// A fence the broker refuses for good (not authorized) stops at once, as a
// fatal error.
func TestFenceStopsAtARefusal(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	c.ControlKey(kmsg.InitProducerID.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		resp := req.(*kmsg.InitProducerIDRequest).ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
		return resp, nil, true
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = Fence(ctx, []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, "g:a")
	require.ErrorIs(t, err, kerr.TransactionalIDAuthorizationFailed)
	require.True(t, sinks.IsFatal(err), "%v", err)
	require.NoError(t, ctx.Err(), "retried a refusal until the deadline")
}

// The fence's backoff holds whatever backoff the client options set (the
// pipeline passes txn.DefaultClientOpts, up to 1 s, in ClientOpts).
func TestFenceUsesItsOwnBackoff(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	var sent []time.Time
	c.ControlKey(kmsg.InitProducerID.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		sent = append(sent, time.Now())
		if len(sent) > 8 {
			return nil, nil, false
		}
		resp := req.(*kmsg.InitProducerIDRequest).ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = kerr.ConcurrentTransactions.Code
		return resp, nil, true
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	slow := kgo.RetryBackoffFn(func(int) time.Duration { return 5 * time.Second })
	require.NoError(t, Fence(ctx, append(DefaultClientOpts(), kgo.SeedBrokers(c.ListenAddrs()...), slow), "g:a"))
	require.Len(t, sent, 9)
	require.Less(t, sent[8].Sub(sent[0]), 4*time.Second, "8 retries took as long as one of the options' backoff")
}
