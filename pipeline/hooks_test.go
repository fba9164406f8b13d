package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// recorder is a hook that implements both hook interfaces.
type recorder struct {
	mu        sync.Mutex
	committed int
	records   int
	aborts    map[pipeline.AbortReason]int
	lastErr   error
}

func (r *recorder) OnBatchCommitted(ci pipeline.CommitInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.committed++
	r.records += ci.Records
}

func (r *recorder) OnBatchAborted(ai pipeline.AbortInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.aborts == nil {
		r.aborts = map[pipeline.AbortReason]int{}
	}
	r.aborts[ai.Reason]++
	r.lastErr = ai.Err
}

func TestHooksSeeCommitsAndAbortsByReason(t *testing.T) {
	_, brokers := testkit.Cluster(t, 2, "in", "out")
	const n = 1000
	testkit.Produce(t, brokers, "in", n)
	var once sync.Once
	stage := pipeline.StageFunc[kw](func(ctx context.Context, b *sinks.Batch, w kw) error {
		failed := false
		once.Do(func() { failed = true })
		if failed {
			return errors.New("injected")
		}
		for _, r := range b.Records {
			w.Produce(testkit.CopyRecord("out", r))
		}
		return nil
	})
	rec := &recorder{}
	var viaOnCommit int
	var mu sync.Mutex
	p := newPipeline(t, brokers, stage, "a", pipeline.Hooks(rec),
		pipeline.OnCommit(func(ci pipeline.CommitInfo) { mu.Lock(); viaOnCommit += ci.Records; mu.Unlock() }))
	stop, _ := run(p)
	testkit.WaitFor(t, 30*time.Second, "all records committed", func() bool { return committed(p) >= n })
	require.NoError(t, stop())

	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Equal(t, n, rec.records, "the hook saw every committed record")
	require.EqualValues(t, p.Stats().CommittedTxns, rec.committed)
	mu.Lock()
	require.Equal(t, n, viaOnCommit, "OnCommit is the same hook in function form")
	mu.Unlock()
	require.Equal(t, 1, rec.aborts[pipeline.AbortStageError], "aborts: %v", rec.aborts)
	var se *pipeline.StageError
	require.ErrorAs(t, rec.lastErr, &se)
}

func TestHooksThatImplementNothingAreRefused(t *testing.T) {
	_, err := pipeline.New[kw](nil, copyStage("out"))
	require.Error(t, err)
	_, err = pipeline.New(kafkasink.New(), copyStage("out"), pipeline.Brokers("127.0.0.1:1"), pipeline.Group("g"),
		pipeline.Topics("in"), pipeline.InstanceID("a"), pipeline.Hooks(fmt.Stringer(nil), 42))
	var ce *sinks.ConfigError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "pipeline.Hooks", ce.Option)
	require.Contains(t, ce.Error(), "hook 0 (<nil>)")
}

// firstBegin is a fake sink whose first Begin runs first before it begins
// (and fails with its error, if any).
type firstBegin struct {
	*fakeSink
	first func() error
	done  bool
}

func (s *firstBegin) Open(context.Context, sinks.SessionConfig) (sinks.Session[*fakeWriter], error) {
	return s, nil
}

func (s *firstBegin) Begin(ctx context.Context, batches []*sinks.Batch) (sinks.Txn[*fakeWriter], error) {
	if !s.done {
		s.done = true
		if err := s.first(); err != nil {
			return nil, err
		}
	}
	return s.fakeSink.Begin(ctx, batches)
}

// A batch whose transaction could not even begin is reported to the hooks as
// aborted (it used to be polled and never reported).
func TestHooksSeeABeginThatFailed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &firstBegin{fakeSink: &fakeSink{parts: 1, n: 5},
		first: func() error { return fmt.Errorf("%w: database unreachable", sinks.ErrAborted) }}
	f.commit = func([]*sinks.Batch) error { cancel(); return nil }
	rec := &recorder{}
	p2, err := pipeline.New[*fakeWriter](f, pipeline.StageFunc[*fakeWriter](func(context.Context, *sinks.Batch, *fakeWriter) error { return nil }),
		pipeline.Brokers("127.0.0.1:1"), pipeline.Group("g"), pipeline.Topics("in"), pipeline.InstanceID("a"),
		pipeline.Backoff(time.Millisecond, time.Millisecond), pipeline.Hooks(rec))
	require.NoError(t, err)
	require.NoError(t, p2.Run(ctx))
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Equal(t, 1, rec.aborts[pipeline.AbortSinkError], "%v", rec.aborts)
	require.Positive(t, rec.committed)
}

// The transaction's time budget starts when Begin returned: a slow Begin
// does not leave the Stage a deadline already past (the batch used to fail
// as too slow, and a fence slower than StageRetries budgets stopped Run).
func TestASlowBeginDoesNotEatTheStageBudget(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const txnTimeout = 500 * time.Millisecond
	// The first Begin takes longer than the whole transaction timeout (a
	// re-opened Kafka session waiting for its fence).
	f := &firstBegin{fakeSink: &fakeSink{parts: 1, n: 5}, first: func() error {
		time.Sleep(2 * txnTimeout) // the fault: a Begin this slow, not a wait for an event
		return nil
	}}
	f.commit = func([]*sinks.Batch) error { cancel(); return nil }
	rec := &recorder{}
	p, err := pipeline.New[*fakeWriter](f, pipeline.StageFunc[*fakeWriter](func(context.Context, *sinks.Batch, *fakeWriter) error { return nil }),
		pipeline.Brokers("127.0.0.1:1"), pipeline.Group("g"), pipeline.Topics("in"), pipeline.InstanceID("a"),
		pipeline.TransactionTimeout(txnTimeout), pipeline.SessionTimeout(time.Second),
		pipeline.Backoff(time.Millisecond, time.Millisecond), pipeline.Hooks(rec))
	require.NoError(t, err)
	require.NoError(t, p.Run(ctx))
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Empty(t, rec.aborts, "the first batch was aborted")
	require.Positive(t, rec.committed)
}
