package pipeline_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
)

func fakePipeline(t *testing.T, f *fakeSink, stage pipeline.Stage[*fakeWriter], opts ...pipeline.Opt) *pipeline.Pipeline[*fakeWriter] {
	t.Helper()
	p, err := pipeline.New[*fakeWriter](f, stage, append([]pipeline.Opt{
		pipeline.Brokers("127.0.0.1:1"), pipeline.Group("g"), pipeline.Topics("in"), pipeline.InstanceID("a"),
		pipeline.MaxWait(10 * time.Millisecond), pipeline.Backoff(time.Millisecond, 10*time.Millisecond),
		pipeline.SessionTimeout(3 * time.Second), pipeline.TransactionTimeout(2 * time.Second),
		pipeline.HeartbeatInterval(300 * time.Millisecond),
	}, opts...)...)
	require.NoError(t, err)
	return p
}

// A fatal error that happens while Run's context is being cancelled must
// still be returned: here the instance is fenced while its transaction is
// rolled back because the program is shutting down.
func TestFatalErrorAtShutdownIsReturned(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fenced := &sinks.FatalError{Op: "end transaction", ID: "g:a", Err: errors.Join(sinks.ErrFenced, kerr.ProducerFenced)}
	f := &fakeSink{parts: 1, n: 10, roll: func() error { return fenced }}
	stage := pipeline.StageFunc[*fakeWriter](func(context.Context, *sinks.Batch, *fakeWriter) error {
		cancel() // shutdown begins during the Stage
		return nil
	})
	err := fakePipeline(t, f, stage).Run(ctx)
	require.ErrorIs(t, err, sinks.ErrFenced, "the fence was swallowed by the shutdown")
	require.True(t, sinks.IsFatal(err))
	require.True(t, f.closed.Load())
}

// fatalPollSink's Poll is fenced (FENCED_INSTANCE_ID) just as the program
// shuts down.
type fatalPollSink struct {
	*fakeSink
	cancel func()
}

func (s *fatalPollSink) Open(context.Context, sinks.SessionConfig) (sinks.Session[*fakeWriter], error) {
	return s, nil
}

func (s *fatalPollSink) Poll(context.Context, int) (kgo.Fetches, error) {
	s.cancel()
	return nil, &sinks.FatalError{Op: "poll", ID: "g:a", Err: errors.Join(sinks.ErrFenced, kerr.FencedInstanceID)}
}

// The same for a fatal error from a poll.
func TestFatalPollErrorAtShutdownIsReturned(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &fatalPollSink{fakeSink: &fakeSink{parts: 1, n: 10}, cancel: cancel}
	p, err := pipeline.New[*fakeWriter](f, pipeline.StageFunc[*fakeWriter](func(context.Context, *sinks.Batch, *fakeWriter) error { return nil }),
		pipeline.Brokers("127.0.0.1:1"), pipeline.Group("g"), pipeline.Topics("in"), pipeline.InstanceID("a"))
	require.NoError(t, err)
	err = p.Run(ctx)
	require.ErrorIs(t, err, sinks.ErrFenced)
	require.True(t, sinks.IsFatal(err))
}
