package chaos

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestWaitProgressCountsWhatTheGroupCommitted: the workers reported 9 of 10
// records committed (the 10th was committed by a transaction whose outcome
// its worker could not learn). WaitProgress(1) must then go by the group's
// committed offsets: stuck while the group is at 9, done once it is at 10,
// with a note saying how far the reports fell short. Before, a short cell
// whose last broker kill came after such a commit waited its full 2 minutes
// and failed, with nothing missing. awaitUnlessDone (a schedule waiting for
// an EndTxn or COMMIT to kill at) gives up the same way.
func TestWaitProgressCountsWhatTheGroupCommitted(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	var in []*kgo.Record
	for i := range 10 {
		in = append(in, &kgo.Record{Topic: "in", Value: []byte(strconv.Itoa(i))})
	}
	require.NoError(t, cl.ProduceSync(ctx, in...).FirstErr())
	adm := kadm.NewClient(cl)
	commit := func(at int64) {
		var os kadm.Offsets
		os.Add(kadm.Offset{Topic: "in", Partition: 0, At: at, LeaderEpoch: -1})
		resp, err := adm.CommitOffsets(ctx, "g", os)
		require.NoError(t, err)
		require.NoError(t, resp.Error())
	}

	r := &Run{Cell: Cell{Name: "t", Mode: Kafka, Records: 10}, in: "in", group: "g", adm: adm, changed: make(chan struct{})}
	r.committed.Store(9)
	r.fed.Store(10)

	never := newTrigger(func(string, int, int16) bool { return false }, nil)

	commit(9)
	err = r.WaitProgress(ctx, 1, 1500*time.Millisecond)
	require.ErrorContains(t, err, "progress stuck at 90.0% (want 100%)")
	require.False(t, r.InputCommitted(ctx))
	done, err := r.awaitUnlessDone(ctx, never, 1500*time.Millisecond, "an EndTxn")
	require.ErrorContains(t, err, "an EndTxn did not happen within 1.5s")
	require.False(t, done)

	r.fed.Store(9) // the feeder not done yet: the group's offsets do not count
	commit(10)
	require.False(t, r.InputCommitted(ctx))

	r.fed.Store(10)
	done, err = r.awaitUnlessDone(ctx, never, 10*time.Second, "an EndTxn")
	require.NoError(t, err)
	require.True(t, done, "the whole input is committed: no EndTxn is left to wait for")
	require.NoError(t, r.WaitProgress(ctx, 1, 10*time.Second))
	require.Equal(t, []string{"the group committed every input record; the workers reported 9 of 10 (the rest committed in transactions no worker reported: an outcome its worker could not learn, or a worker killed before its report)"}, r.notes)
}
