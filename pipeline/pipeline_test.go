package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type kw = *kafkasink.Writer

func copyStage(out string) pipeline.Stage[kw] {
	return pipeline.StageFunc[kw](func(ctx context.Context, b *sinks.Batch, w kw) error {
		for _, r := range b.Records {
			w.Produce(testkit.CopyRecord(out, r))
		}
		return nil
	})
}

func newPipeline(t *testing.T, brokers []string, stage pipeline.Stage[kw], instance string, opts ...pipeline.Opt) *pipeline.Pipeline[kw] {
	t.Helper()
	opts = append([]pipeline.Opt{
		pipeline.Brokers(brokers...),
		pipeline.Group("g"),
		pipeline.Topics("in"),
		pipeline.InstanceID(instance),
		pipeline.MaxRecords(500),
		pipeline.MaxWait(20 * time.Millisecond),
		pipeline.SessionTimeout(3 * time.Second),
		pipeline.TransactionTimeout(2 * time.Second),
		pipeline.HeartbeatInterval(300 * time.Millisecond),
		pipeline.Backoff(5*time.Millisecond, 50*time.Millisecond),
	}, opts...)
	p, err := pipeline.New(kafkasink.New(), stage, opts...)
	require.NoError(t, err)
	return p
}

// run starts p.Run in a goroutine; the returned func cancels it and returns
// Run's error.
func run(p *pipeline.Pipeline[kw]) (stop func() error, done <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- p.Run(ctx) }()
	return func() error { cancel(); return <-ch }, ch
}

func committed(ps ...*pipeline.Pipeline[kw]) int64 {
	var n int64
	for _, p := range ps {
		n += p.Stats().CommittedRecords
	}
	return n
}

func TestBaselineExact(t *testing.T) {
	_, brokers := testkit.Cluster(t, 4, "in", "out")
	const n = 5000
	testkit.Produce(t, brokers, "in", n)
	p := newPipeline(t, brokers, copyStage("out"), "a")
	stop, _ := run(p)
	testkit.WaitFor(t, 30*time.Second, "all records committed", func() bool { return committed(p) >= n })
	require.NoError(t, stop())
	rep := testkit.Verify(t, brokers, "in", "out")
	require.Equal(t, n, rep.In)
	require.Equal(t, n, rep.TotalOut())
}

func TestStageFailuresAbortAndRetry(t *testing.T) {
	_, brokers := testkit.Cluster(t, 4, "in", "out")
	const n = 4000
	testkit.Produce(t, brokers, "in", n)
	var (
		calls atomic.Int64
		seen  sync.Map
	)
	stage := pipeline.StageFunc[kw](func(ctx context.Context, b *sinks.Batch, w kw) error {
		// Write first, then fail every third batch the first time it
		// is seen: the writes of a failed call must never become
		// visible, and the retry must commit them once.
		for _, r := range b.Records {
			w.Produce(testkit.CopyRecord("out", r))
		}
		key := fmt.Sprintf("%d@%d", b.Partition, b.FirstOffset())
		if _, again := seen.LoadOrStore(key, true); !again && calls.Add(1)%3 == 0 {
			return errors.New("injected failure")
		}
		return nil
	})
	p := newPipeline(t, brokers, stage, "a", pipeline.StageRetries(1000))
	stop, _ := run(p)
	testkit.WaitFor(t, 60*time.Second, "all records committed", func() bool { return committed(p) >= n })
	require.NoError(t, stop())
	require.Positive(t, p.Stats().AbortedTxns, "no transaction was aborted: the test injected nothing")
	testkit.Verify(t, brokers, "in", "out")
}

// lag is the number of input records the group has not committed.
func lag(t *testing.T, brokers []string, topic, group string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	l, err := verify.GroupLag(context.Background(), kadm.NewClient(cl), topic, group)
	require.NoError(t, err)
	return l
}
