package pipeline_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
)

// batchSizes records the input of every transaction.
type batchSizes struct {
	mu      sync.Mutex
	records []int
	bytes   []int
}

func (b *batchSizes) OnBatchCommitted(ci pipeline.CommitInfo) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.records = append(b.records, ci.Records)
	b.bytes = append(b.bytes, ci.Bytes)
}

// produceSized writes n records whose values have the sizes size(i).
func produceSized(t *testing.T, brokers []string, n int, size func(i int) int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("in"), kgo.ProducerBatchMaxBytes(4<<20))
	require.NoError(t, err)
	defer cl.Close()
	for i := range n {
		cl.Produce(context.Background(), &kgo.Record{Key: fmt.Appendf(nil, "k%d", i), Value: make([]byte, size(i))}, func(_ *kgo.Record, err error) {
			require.NoError(t, err)
		})
	}
	require.NoError(t, cl.Flush(context.Background()))
}

// MaxBytes is a real bound: a transaction's input exceeds it by less than one
// record. (Polls were bounded by count only: with MaxBytes 1 MiB one
// transaction held 20 MiB.)
func TestMaxBytesBoundsATransaction(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    func(i int) int
		largest int
	}{
		{"uniform", func(int) int { return 1000 }, 1000 + 6},
		{"mixed", func(i int) int { return 100 + rand.New(rand.NewPCG(uint64(i), 1)).IntN(1900) }, 2000 + 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, brokers := testkit.Cluster(t, 3, "in", "out")
			const n, maxBytes = 3000, 20_000
			produceSized(t, brokers, n, tc.size)
			var bs batchSizes
			p := newPipeline(t, brokers, copyStage("out"), "a", pipeline.MaxRecords(100_000), pipeline.MaxBytes(maxBytes),
				pipeline.MaxWait(time.Second), pipeline.Hooks(&bs))
			stop, _ := run(p)
			testkit.WaitFor(t, 60*time.Second, "all records committed", func() bool { return committed(p) >= n })
			require.NoError(t, stop())
			bs.mu.Lock()
			defer bs.mu.Unlock()
			require.Greater(t, len(bs.bytes), 3000*1000/maxBytes/2, "the bound split the input into many transactions")
			for i, b := range bs.bytes {
				require.Less(t, b, maxBytes+tc.largest, "transaction %d held %d bytes, MaxBytes %d", i, b, maxBytes)
			}
			testkit.Verify(t, brokers, "in", "out")
		})
	}
}

// MaxRecords bounds the records of a transaction over all partitions.
func TestMaxRecordsBoundsATransaction(t *testing.T) {
	_, brokers := testkit.Cluster(t, 4, "in", "out")
	const n, maxRecords = 3000, 170
	testkit.Produce(t, brokers, "in", n)
	var bs batchSizes
	p := newPipeline(t, brokers, copyStage("out"), "a", pipeline.MaxRecords(maxRecords), pipeline.MaxWait(time.Second), pipeline.Hooks(&bs))
	stop, _ := run(p)
	testkit.WaitFor(t, 60*time.Second, "all records committed", func() bool { return committed(p) >= n })
	require.NoError(t, stop())
	bs.mu.Lock()
	defer bs.mu.Unlock()
	full := 0
	for _, r := range bs.records {
		require.LessOrEqual(t, r, maxRecords)
		if r == maxRecords {
			full++
		}
	}
	require.Positive(t, full, "no transaction reached the bound: the test did not exercise it")
}

// MaxWait bounds how long a batch grows after its first record: with a
// trickle of input and bounds on count and size far away, transactions still
// commit while the input keeps coming.
func TestMaxWaitEndsABatch(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "in", "out")
	p := newPipeline(t, brokers, copyStage("out"), "a", pipeline.MaxRecords(1_000_000), pipeline.MaxWait(50*time.Millisecond))
	stop, _ := run(p)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("in"))
	require.NoError(t, err)
	defer cl.Close()
	// Keep producing until at least three transactions committed: without
	// the bound the first batch would grow for as long as records come.
	for i := 0; p.Stats().CommittedTxns < 3; i++ {
		require.NoError(t, cl.ProduceSync(context.Background(), &kgo.Record{Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")}).FirstErr())
		require.Less(t, i, 100_000, "transactions never committed while the input kept coming")
	}
	testkit.WaitFor(t, 30*time.Second, "the rest committed", func() bool { return lag(t, brokers, "in", "g") == 0 })
	require.NoError(t, stop())
	testkit.Verify(t, brokers, "in", "out")
}

// Concurrency bounds how many partitions' Stage calls run at once.
func TestConcurrencyBoundsStageCalls(t *testing.T) {
	_, brokers := testkit.Cluster(t, 8, "in", "out")
	const n = 4000
	testkit.Produce(t, brokers, "in", n)
	var now, peak atomic.Int64
	stage := pipeline.StageFunc[kw](func(ctx context.Context, b *sinks.Batch, w kw) error {
		c := now.Add(1)
		defer now.Add(-1)
		for {
			old := peak.Load()
			if c <= old || peak.CompareAndSwap(old, c) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond) // hold the slot so calls overlap
		for _, r := range b.Records {
			w.Produce(testkit.CopyRecord("out", r))
		}
		return nil
	})
	p := newPipeline(t, brokers, stage, "a", pipeline.Concurrency(3), pipeline.MaxWait(200*time.Millisecond))
	stop, _ := run(p)
	testkit.WaitFor(t, 60*time.Second, "all records committed", func() bool { return committed(p) >= n })
	require.NoError(t, stop())
	require.LessOrEqual(t, peak.Load(), int64(3))
	require.GreaterOrEqual(t, peak.Load(), int64(2), "calls never overlapped: the test did not exercise the bound")
	testkit.Verify(t, brokers, "in", "out")
}
