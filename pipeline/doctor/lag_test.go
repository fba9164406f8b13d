package doctor

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// produce writes n records to partition p of topic and waits for the acks.
func produce(t *testing.T, seeds []string, topic string, p int32, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer cl.Close()
	for i := range n {
		r := &kgo.Record{Topic: topic, Partition: p, Key: []byte(strconv.Itoa(i)), Value: []byte("v")}
		require.NoError(t, cl.ProduceSync(ctxT(t), r).FirstErr())
	}
}

// openTxn begins a transaction, writes n records to partition p of topic in
// it and leaves it open; the returned func aborts it.
func openTxn(t *testing.T, seeds []string, topic string, p int32, n int) (abort func()) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.TransactionalID("doctor-test-"+topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionTimeout(time.Minute))
	require.NoError(t, err)
	require.NoError(t, cl.BeginTransaction())
	for range n {
		require.NoError(t, cl.ProduceSync(ctxT(t), &kgo.Record{Topic: topic, Partition: p, Value: []byte("open")}).FirstErr())
	}
	return func() {
		require.NoError(t, cl.EndTransaction(ctxT(t), kgo.TryAbort))
		cl.Close()
	}
}

// TestLagFromKafkaAndOpenTransaction: committed offsets from Kafka, and an
// open transaction holding the last stable offset until it is aborted.
func TestLagFromKafkaAndOpenTransaction(t *testing.T) {
	_, adm, seeds := fake(t, 1)
	create(t, adm, "lag-in", 2, 1)
	produce(t, seeds, "lag-in", 0, 10)
	produce(t, seeds, "lag-in", 1, 4)
	_, err := adm.CommitOffsets(ctxT(t), "g", kadm.OffsetsFromRecords(kgo.Record{Topic: "lag-in", Partition: 0, Offset: 6}))
	require.NoError(t, err)

	committed, err := KafkaCommitted(ctxT(t), adm, "g", "lag-in")
	require.NoError(t, err)
	require.Equal(t, Committed{"lag-in": {0: 7}}, committed)

	abort := openTxn(t, seeds, "lag-in", 1, 3)
	rep, err := Lag(ctxT(t), adm, committed, "lag-in")
	require.NoError(t, err)
	require.Len(t, rep.Partitions, 2)
	p0, p1 := rep.Partitions[0], rep.Partitions[1]
	require.Equal(t, PartitionLag{Topic: "lag-in", Partition: 0, Committed: 7, Start: 0, End: 10, Stable: 10, Lag: 3}, p0)
	require.Equal(t, int64(-1), p1.Committed)
	require.Equal(t, int64(7), p1.End, "4 records and 3 in the open transaction")
	require.Equal(t, int64(4), p1.Stable, "the open transaction pins the last stable offset")
	require.Equal(t, int64(3), p1.Open)
	require.Equal(t, int64(7), p1.Lag, "nothing committed: end minus start")
	require.Equal(t, int64(10), rep.Total)

	var b strings.Builder
	require.NoError(t, rep.WriteText(&b))
	require.Contains(t, b.String(), "STABLE(LSO)")
	require.Contains(t, b.String(), "total lag 10")

	abort()
	rep, err = Lag(ctxT(t), adm, committed, "lag-in")
	require.NoError(t, err)
	require.Equal(t, rep.Partitions[1].End, rep.Partitions[1].Stable, "the abort marker releases the partition")
	require.Zero(t, rep.Partitions[1].Open)
}

// TestLagFromAnySource: committed offsets that did not come from Kafka (as
// in Postgres mode) are used as given.
func TestLagFromAnySource(t *testing.T) {
	_, adm, seeds := fake(t, 1)
	create(t, adm, "lag-pg", 1, 1)
	produce(t, seeds, "lag-pg", 0, 5)
	c := Committed{}
	c.Set("lag-pg", 0, 2)
	rep, err := Lag(ctxT(t), adm, c, "lag-pg")
	require.NoError(t, err)
	require.Equal(t, int64(3), rep.Total)
	require.Equal(t, int64(2), rep.Partitions[0].Committed)
}

// TestLagErrors: missing topics and groups are errors that name them.
func TestLagErrors(t *testing.T) {
	_, adm, _ := fake(t, 1)
	_, err := Lag(ctxT(t), adm, nil)
	require.ErrorContains(t, err, "no topics")
	_, err = Lag(ctxT(t), adm, nil, "lag-nope")
	require.ErrorContains(t, err, `topic "lag-nope" does not exist`)
	_, err = KafkaCommitted(ctxT(t), adm, "")
	require.ErrorContains(t, err, "-group")
}

// sampleAt is a one-partition lag sample taken at at.
func sampleAt(at time.Time, stable, end int64) LagReport {
	return LagReport{At: at, Partitions: []PartitionLag{{Topic: "t", Partition: 0, Stable: stable, End: end}}}
}

// TestHangTracker: a last stable offset pinned longer than the limit is
// hanging; one that moves or catches up restarts the clock.
func TestHangTracker(t *testing.T) {
	h := NewHangTracker(10 * time.Second)
	t0 := time.Unix(1000, 0)
	obs := func(at time.Duration, stable, end int64) PartitionLag {
		r := sampleAt(t0.Add(at), stable, end)
		h.Observe(&r)
		return r.Partitions[0]
	}
	require.Equal(t, time.Duration(0), obs(0, 5, 8).PinnedFor)
	p := obs(6*time.Second, 5, 9)
	require.Equal(t, 6*time.Second, p.PinnedFor)
	require.False(t, p.Hanging)
	p = obs(11*time.Second, 5, 12)
	require.True(t, p.Hanging, "pinned at 5 for 11s > 10s")
	// The last stable offset moves: a new transaction, timing restarts.
	p = obs(12*time.Second, 9, 12)
	require.False(t, p.Hanging)
	require.Zero(t, p.PinnedFor)
	// Caught up: nothing open.
	p = obs(30*time.Second, 12, 12)
	require.False(t, p.Hanging)
	require.Zero(t, p.PinnedFor)
	p = obs(31*time.Second, 12, 13)
	require.Zero(t, p.PinnedFor)

	r := sampleAt(t0.Add(45*time.Second), 12, 13)
	h.Observe(&r)
	require.Len(t, r.Hanging(), 1)
	var b strings.Builder
	require.NoError(t, r.WriteText(&b))
	require.Contains(t, b.String(), "WARN t[0]: last stable offset 12 has stayed behind the high watermark 13 for 14s")
	require.Contains(t, b.String(), "kafka-transactions.sh")
}

// TestWatch: samples are tracked across rounds, and Watch returns the
// context's error or the sampler's.
func TestWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t0 := time.Unix(1000, 0)
	n := 0
	var seen []LagReport
	sample := func(context.Context) (LagReport, error) {
		n++
		return sampleAt(t0.Add(time.Duration(n)*time.Minute), 5, 9), nil
	}
	err := Watch(ctx, time.Millisecond, 90*time.Second, sample, func(r LagReport) error {
		seen = append(seen, r)
		if len(seen) == 3 {
			cancel()
		}
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Len(t, seen, 3)
	require.False(t, seen[1].Partitions[0].Hanging, "pinned 1m")
	require.True(t, seen[2].Partitions[0].Hanging, "pinned 2m > 90s")

	boom := errors.New("boom")
	err = Watch(context.Background(), time.Millisecond, time.Second, func(context.Context) (LagReport, error) { return LagReport{}, boom }, func(LagReport) error { return nil })
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, Watch(context.Background(), 0, 0, nil, nil), "positive interval")
	require.ErrorContains(t, Watch(context.Background(), time.Second, 0, nil, nil), "needs a sample and an each")
}
