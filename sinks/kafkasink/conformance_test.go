package kafkasink_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
	"github.com/exactlyonce/exactly/sinks/sinktest"
)

// TestMain checks that no goroutine outlives the package's tests:
// sessions and clients all stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// kafkaHarness writes each effect as a copy of the input record to the
// output topic, with source headers, and reads the visible effects back
// with a read_committed consumer.
type kafkaHarness struct{}

func (kafkaHarness) Sink(*testing.T, sinktest.Env) sinks.Sink[*kafkasink.Writer] {
	return kafkasink.New()
}

func (kafkaHarness) Write(_ context.Context, env sinktest.Env, w *kafkasink.Writer, r *kgo.Record) error {
	w.Produce(copyRecord(env.Output, r))
	return nil
}

func (kafkaHarness) Effects(t *testing.T, env sinktest.Env) []string {
	t.Helper()
	recs, err := verify.ReadAll(context.Background(), []kgo.Opt{kgo.SeedBrokers(env.Brokers...)}, env.Output, 30*time.Second)
	require.NoError(t, err, "reading the output with read_committed")
	ids := make([]string, 0, len(recs))
	for _, r := range recs {
		src, err := verify.SourceFromHeaders(r)
		require.NoError(t, err)
		ids = append(ids, sinktest.ID(src.Topic, src.Partition, src.Offset))
	}
	return ids
}

// copyRecord is the output of src: its key and value, with headers naming
// the source.
func copyRecord(out string, src *kgo.Record) *kgo.Record {
	return kafkasink.DeadLetterRecord(out, src, nil)
}

func TestKafkaConformance(t *testing.T) {
	sinktest.Run[*kafkasink.Writer](t, kafkaHarness{})
}
