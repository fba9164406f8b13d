package pipeline_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
)

// stateLog records the state changes a hook sees.
type stateLog struct {
	mu     sync.Mutex
	states []pipeline.State
	causes []error
}

func (l *stateLog) OnStateChanged(s pipeline.StateInfo) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.states = append(l.states, s.State)
	l.causes = append(l.causes, s.Cause)
}

// The state goes idle → starting → running, retrying with its cause after a
// failed batch, rebalancing after a revoke, running again after a commit, and
// stopped with Run's error; State() reads it at any time.
func TestStateTransitions(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	injected := errors.New("injected")
	var calls atomic.Int64
	f := &fakeSink{parts: 1, n: 5}
	f.commit = func([]*sinks.Batch) error {
		switch calls.Add(1) {
		case 2:
			return &sinks.PartitionError{Topic: "in", Partition: 0, Err: sinks.ErrRevoked}
		case 4:
			cancel()
		}
		return nil
	}
	var failed atomic.Bool
	stage := pipeline.StageFunc[*fakeWriter](func(context.Context, *sinks.Batch, *fakeWriter) error {
		if failed.CompareAndSwap(false, true) {
			return injected
		}
		return nil
	})
	var log stateLog
	p := fakePipeline(t, f, stage, pipeline.Hooks(&log))
	require.Equal(t, pipeline.StateIdle, p.State().State)
	require.NoError(t, p.Run(ctx))
	require.Equal(t, pipeline.StateStopped, p.State().State)
	require.NoError(t, p.State().Cause)
	require.False(t, p.State().Ready())

	log.mu.Lock()
	defer log.mu.Unlock()
	require.Equal(t, []pipeline.State{
		pipeline.StateStarting, pipeline.StateRunning,
		pipeline.StateRetrying,                           // the Stage failed
		pipeline.StateRunning,                            // commit 1
		pipeline.StateRebalancing, pipeline.StateRunning, // commit 2 revoked, commit 3
		pipeline.StateStopped,
	}, log.states)
	var se *pipeline.StageError
	require.ErrorAs(t, log.causes[2], &se)
	require.ErrorIs(t, log.causes[4], sinks.ErrRevoked)
}

// A fatal error leaves the pipeline stopped with that error as the cause.
func TestStateStoppedWithTheError(t *testing.T) {
	fenced := &sinks.FatalError{Op: "end", ID: "g:a", Err: sinks.ErrFenced}
	f := &fakeSink{parts: 1, n: 5, commit: func([]*sinks.Batch) error { return fenced }}
	p := fakePipeline(t, f, pipeline.StageFunc[*fakeWriter](func(context.Context, *sinks.Batch, *fakeWriter) error { return nil }))
	err := p.Run(context.Background())
	require.ErrorIs(t, err, sinks.ErrFenced)
	st := p.State()
	require.Equal(t, pipeline.StateStopped, st.State)
	require.ErrorIs(t, st.Cause, sinks.ErrFenced)
	require.Equal(t, "stopped", st.State.String())
}
