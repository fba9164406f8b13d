package pipeline_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// Per-record policy in Kafka mode: every 10th record always fails and is
// dead-lettered after its retries, with its attempts; every 7th fails on its
// first attempt after it already produced an output — the retry must leave
// exactly one output. Every input is in "out" or "dead" exactly once.
func TestPerRecordRetryThenDeadLetter(t *testing.T) {
	_, brokers := testkit.Cluster(t, 3, "in", "out", "dead")
	const n = 700
	testkit.Produce(t, brokers, "in", n)
	var mu sync.Mutex
	tried := map[string]int{}
	rs := pipeline.RecordFunc[kw](func(_ context.Context, r *kgo.Record, w kw) error {
		i, _ := strconv.Atoi(strings.TrimPrefix(string(r.Key), "k"))
		mu.Lock()
		id := string(r.Key)
		tried[id]++
		attempt := tried[id]
		mu.Unlock()
		w.Produce(testkit.CopyRecord("out", r))
		switch {
		case i%10 == 0:
			return errors.New("always bad")
		case i%7 == 0 && attempt == 1:
			return errors.New("flaky")
		}
		return nil
	})
	stage := pipeline.PerRecord[kw](rs, pipeline.RecordPolicy[kw]{
		Retries: 2, Backoff: time.Millisecond, DeadLetter: kafkasink.DeadLetterTo("dead"),
	})
	p := newPipeline(t, brokers, stage, "a")
	stop, _ := run(p)
	testkit.WaitFor(t, 60*time.Second, "all records committed", func() bool { return committed(p) >= n })
	require.NoError(t, stop())

	rep := testkit.Verify(t, brokers, "in", "out", "dead")
	require.Equal(t, n/10, rep.Out["dead"], "%v", rep)
	dead, err := verify.ReadAll(context.Background(), []kgo.Opt{kgo.SeedBrokers(brokers...)}, "dead", 10*time.Second)
	require.NoError(t, err)
	for _, r := range dead {
		a, ok := kafkasink.Header(r, kafkasink.HeaderAttempts)
		require.True(t, ok)
		require.Equal(t, "3", a, "1 try + 2 retries")
		e, _ := kafkasink.Header(r, kafkasink.HeaderError)
		require.Equal(t, "always bad", e)
	}
}

// The zero policy stops: a record that keeps failing fails its batch, and
// after StageRetries Run returns a StageError naming the record.
func TestPerRecordDefaultPolicyStops(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "in", "out")
	testkit.Produce(t, brokers, "in", 20)
	rs := pipeline.RecordFunc[kw](func(_ context.Context, r *kgo.Record, w kw) error {
		if string(r.Key) == "k5" {
			return errors.New("poison")
		}
		w.Produce(testkit.CopyRecord("out", r))
		return nil
	})
	p := newPipeline(t, brokers, pipeline.PerRecord[kw](rs, pipeline.RecordPolicy[kw]{}), "a", pipeline.StageRetries(1))
	err := p.Run(context.Background())
	var se *pipeline.StageError
	require.ErrorAs(t, err, &se)
	require.Contains(t, err.Error(), "@5 failed")
	require.Contains(t, err.Error(), "poison")
}

// A policy that retries needs an Atomic writer.
func TestPerRecordNeedsAnAtomicWriter(t *testing.T) {
	stage := pipeline.PerRecord[*fakeWriter](pipeline.RecordFunc[*fakeWriter](func(context.Context, *kgo.Record, *fakeWriter) error { return nil }),
		pipeline.RecordPolicy[*fakeWriter]{Retries: 1})
	err := stage.Process(context.Background(), &sinks.Batch{Topic: "in", Records: []*kgo.Record{{}}}, &fakeWriter{})
	require.ErrorIs(t, err, pipeline.ErrNotAtomic)
}

// A failed attempt leaves nothing behind, not even a refusal: a record
// without a topic produced by an attempt that then fails must not fail the
// transaction when the retry succeeds (it used to, at once).
func TestPerRecordFailedAttemptLeavesNoRefusal(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "in", "out")
	const n = 20
	testkit.Produce(t, brokers, "in", n)
	var once sync.Once
	rs := pipeline.RecordFunc[kw](func(_ context.Context, r *kgo.Record, w kw) error {
		failed := false
		once.Do(func() {
			w.Produce(&kgo.Record{Value: []byte("no topic")})
			failed = true
		})
		if failed {
			return errors.New("first attempt fails")
		}
		w.Produce(testkit.CopyRecord("out", r))
		return nil
	})
	p := newPipeline(t, brokers, pipeline.PerRecord[kw](rs, pipeline.RecordPolicy[kw]{Retries: 1}), "a", pipeline.StageRetries(0))
	stop, done := run(p)
	testkit.WaitFor(t, 30*time.Second, "all records committed", func() bool {
		select {
		case err := <-done:
			require.NoError(t, err, "the failed attempt's refused record failed the batch")
		default:
		}
		return committed(p) >= n
	})
	require.NoError(t, stop())
	require.Zero(t, p.Stats().AbortedTxns)
	testkit.Verify(t, brokers, "in", "out")
}
