package pipeline_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
)

// An output record the client refuses before buffering it (larger than
// MaxBufferedBytes) fails its promise asynchronously, after Flush returned.
// The transaction must still abort — committing would move the input offset
// past a record whose output never existed — and since the same batch fails
// the same way every time, Run must give up after StageRetries and say why.
func TestRefusedOutputIsNeverCommitted(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "in", "out")
	testkit.Produce(t, brokers, "in", 1)
	stage := pipeline.StageFunc[kw](func(ctx context.Context, b *sinks.Batch, w kw) error {
		for _, r := range b.Records {
			big := testkit.CopyRecord("out", r)
			big.Value = bytes.Repeat([]byte("x"), 2<<20)
			w.Produce(big)
		}
		return nil
	})
	p := newPipeline(t, brokers, stage, "a", pipeline.StageRetries(2),
		pipeline.ClientOpts(kgo.MaxBufferedBytes(1<<20)))
	stop, done := run(p)
	select {
	case err := <-done:
		var pe *sinks.ProduceError
		require.ErrorAs(t, err, &pe)
		require.Equal(t, "out", pe.Topic)
		require.ErrorContains(t, err, "3 times in a row")
	case <-time.After(30 * time.Second):
		require.NoError(t, stop())
		t.Fatalf("Run did not give up on output the client refuses: %+v", p.Stats())
	}
	require.Zero(t, p.Stats().CommittedRecords)
	require.Equal(t, int64(1), lag(t, brokers, "in", "g"), "the input offset moved past a record whose output was refused")
	out, err := verify.ReadAll(context.Background(), []kgo.Opt{kgo.SeedBrokers(brokers...)}, "out", 30*time.Second)
	require.NoError(t, err)
	require.Empty(t, out)
}
