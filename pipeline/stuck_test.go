package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A Stage that ignores its context must not hang Run: past its budget the
// pipeline says so at once, aborts the transaction after a grace period and
// retries the batch; what the stuck call writes when it finally wakes up is
// discarded, never part of a later transaction.
func TestStageThatIgnoresItsContextDoesNotHangRun(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "in", "out")
	const n = 200
	testkit.Produce(t, brokers, "in", n)
	release := make(chan struct{})
	var stuckOnce atomic.Bool
	stuckDone := make(chan struct{})
	stage := pipeline.StageFunc[kw](func(ctx context.Context, b *sinks.Batch, w kw) error {
		if stuckOnce.CompareAndSwap(false, true) {
			defer close(stuckDone)
			<-release // ignores ctx
			for _, r := range b.Records {
				w.Produce(testkit.CopyRecord("out", r)) // too late: must be discarded
			}
			return nil
		}
		for _, r := range b.Records {
			w.Produce(testkit.CopyRecord("out", r))
		}
		return nil
	})
	var logs syncBuffer
	p := newPipeline(t, brokers, stage, "a", pipeline.StageRetries(3),
		pipeline.Logger(slog.New(slog.NewTextHandler(&logs, nil))))
	stop, done := run(p)
	testkit.WaitFor(t, 30*time.Second, "a warning while the stage is still stuck", func() bool {
		return strings.Contains(logs.String(), "the stage is still running after its context ended")
	})
	defer func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	}()
	testkit.WaitFor(t, 20*time.Second, "the retried batch committed", func() bool {
		select {
		case err := <-done:
			require.NoError(t, err)
		default:
		}
		return committed(p) >= n && lag(t, brokers, "in", "g") == 0
	})
	close(release) // the stuck call writes now, into a transaction long gone
	<-stuckDone
	require.NoError(t, stop())
	st := p.Stats()
	require.Positive(t, st.StageErrors, "%+v", st)
	require.Contains(t, logs.String(), "partition=0", "the warning names the partition")
	testkit.Verify(t, brokers, "in", "out")
}

// Stopping Run while a Stage ignores its context returns within the grace
// period, with an error naming the stuck partition and offsets.
func TestStopWhileAStageIgnoresItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{})
	var once sync.Once
	f := &fakeSink{parts: 1, n: 5}
	stage := pipeline.StageFunc[*fakeWriter](func(context.Context, *sinks.Batch, *fakeWriter) error {
		once.Do(func() { close(started) })
		<-release
		return nil
	})
	p := fakePipeline(t, f, stage, pipeline.TransactionTimeout(time.Second), pipeline.SessionTimeout(3*time.Second))
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-started
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, pipeline.ErrStageStuck)
		var se *pipeline.StageError
		require.ErrorAs(t, err, &se)
		require.Equal(t, "in", se.Topic)
		require.EqualValues(t, 0, se.Partition)
		require.EqualValues(t, 0, se.FirstOffset)
		require.Contains(t, err.Error(), "in[0] offsets 0-")
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended: a stuck Stage holds it hostage")
	}
}

// A Stage that returns an error of its own after its budget passed: the
// StageError says both, and its chain has no cycle (it had one, and
// errors.Is on it never returned, so Run spun forever).
func TestStageErrorPastTheBudgetHasNoCycle(t *testing.T) {
	f := &fakeSink{parts: 1, n: 5}
	boom := errors.New("boom")
	stage := pipeline.StageFunc[*fakeWriter](func(ctx context.Context, _ *sinks.Batch, _ *fakeWriter) error {
		<-ctx.Done()
		return boom
	})
	p := fakePipeline(t, f, stage, pipeline.StageRetries(0), pipeline.TransactionTimeout(500*time.Millisecond), pipeline.SessionTimeout(3*time.Second))
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	select {
	case err := <-done:
		var se *pipeline.StageError
		require.ErrorAs(t, err, &se)
		require.ErrorIs(t, err, boom)
		require.ErrorIs(t, err, context.DeadlineExceeded, "the budget's deadline is in the chain")
		require.Contains(t, err.Error(), "ran past its budget")
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
}
