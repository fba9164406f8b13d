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
)

// A coordinator that answers CONCURRENT_TRANSACTIONS for seconds (it is
// completing the previous transaction, as after a broker failure): franz-go
// alone would space its retries 500 ms apart once the call is 2.5 s old and
// 1 s apart at 5 s; the fence's fresh attempts keep them at its short backoff,
// so it returns soon after the coordinator does.
func TestFenceKeepsRetryingBrisklyWhileTheCoordinatorIsBusy(t *testing.T) {
	defer func(d time.Duration) { fenceAttempt = d }(fenceAttempt)
	fenceAttempt = 500 * time.Millisecond // franz-go's backoff stays at 20 ms within an attempt

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
		"the fence's retries slowed down to franz-go's 500 ms / 1 s (%d retries while busy)", len(sent))
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
// created) is reported with the broker's answer once the fresh attempts are
// over, not with a bare deadline.
func TestFenceReportsACoordinatorThatNeverAnswers(t *testing.T) {
	defer func(a, f time.Duration) { fenceAttempt, fenceFreshFor = a, f }(fenceAttempt, fenceFreshFor)
	fenceAttempt, fenceFreshFor = 200*time.Millisecond, time.Second

	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	c.ControlKey(kmsg.InitProducerID.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		resp := req.(*kmsg.InitProducerIDRequest).ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp, nil, true
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = Fence(ctx, []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, "g:a")
	require.ErrorIs(t, err, kerr.CoordinatorNotAvailable)
	require.NoError(t, ctx.Err())
	require.Contains(t, err.Error(), `transactional id "g:a"`)
}
