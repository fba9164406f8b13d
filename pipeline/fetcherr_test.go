package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
)

// Errors of single partitions while consuming that kgo cannot heal stop the
// pipeline with an error that says what is not authorized, or where records
// were lost; they used to be logged and the loop went on.
func TestFetchErrorsThatStopThePipeline(t *testing.T) {
	loss := &kgo.ErrDataLoss{Topic: "in", Partition: 0, ConsumedTo: 120, ResetTo: 500}
	for _, tc := range []struct {
		name  string
		err   error
		want  []string
		chain error
	}{
		{"topic authorization", kerr.TopicAuthorizationFailed, []string{`not authorized to read topic "in"`, "grant the principal Read"}, kerr.TopicAuthorizationFailed},
		{"group authorization", kerr.GroupAuthorizationFailed, []string{`not authorized for consumer group "g"`}, kerr.GroupAuthorizationFailed},
		{"data loss", loss, []string{"data loss on in[0]", "at offset 120", "resumes at 500", "pipeline.DataLoss(pipeline.DataLossContinue)"}, loss},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSink{parts: 1, n: 5, fetchErr: tc.err}
			p := fakePipeline(t, f, pipeline.StageFunc[*fakeWriter](func(context.Context, *sinks.Batch, *fakeWriter) error { return nil }),
				pipeline.MaxRecords(5))
			done := make(chan error, 1)
			go func() { done <- p.Run(context.Background()) }()
			select {
			case err := <-done:
				require.True(t, sinks.IsFatal(err), "%v", err)
				require.ErrorIs(t, err, tc.chain)
				for _, w := range tc.want {
					require.Contains(t, err.Error(), w)
				}
				require.EqualValues(t, 1, f.commits.Load(), "nothing after the error was committed")
			case <-time.After(30 * time.Second):
				t.Fatal("Run went on past the error")
			}
		})
	}
}

// Under DataLoss(DataLossContinue) the gap is logged and counted, and the
// pipeline goes on.
func TestDataLossContinuePolicy(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &fakeSink{parts: 1, n: 5, fetchErr: &kgo.ErrDataLoss{Topic: "in", Partition: 0, ConsumedTo: 5, ResetTo: 9}}
	f.commit = func([]*sinks.Batch) error {
		if f.commits.Load() >= 3 {
			cancel()
		}
		return nil
	}
	p := fakePipeline(t, f, pipeline.StageFunc[*fakeWriter](func(context.Context, *sinks.Batch, *fakeWriter) error { return nil }),
		pipeline.MaxRecords(5), pipeline.DataLoss(pipeline.DataLossContinue))
	require.NoError(t, p.Run(ctx))
	require.EqualValues(t, 1, p.Stats().DataLosses)
	require.GreaterOrEqual(t, p.Stats().CommittedTxns, int64(3), "it went on after the gap")
}
