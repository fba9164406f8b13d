package pipeline_test

import (
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
)

// A broker whose metadata lags does not stop Run with "input topic does not
// exist" while another broker knows the topic. The pipeline knows only the
// lagging broker, so every check's first answer comes from it.
func TestOneLaggingBrokerDoesNotHideAnInputTopic(t *testing.T) {
	c, brokers := testkit.Cluster(t, 2, "in", "out")
	testkit.Produce(t, brokers, "in", 10)
	var (
		lagging atomic.Bool
		laggard atomic.Int32
	)
	laggard.Store(-1)
	lagging.Store(true)
	bs := testkit.LagMetadata(t, c, "in", func(node int32) bool { return lagging.Load() && node == laggard.Load() })
	laggard.Store(testkit.NodeAt(t, bs, brokers[0]))
	var logs syncBuffer
	p := newPipeline(t, brokers[:1], copyStage("out"), "w1",
		pipeline.Logger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	stop, done := run(p)
	awaitOrExit(t, &logs, done, "the log line saying another broker knows it", func(log string) bool {
		return strings.Contains(log, "another broker knows it")
	})
	require.Contains(t, logs.String(), "known_by_broker=")
	require.NotContains(t, logs.String(), "asking again", "one check must do: the other brokers were asked")
	lagging.Store(false)
	testkit.WaitFor(t, 30*time.Second, "the records committed", func() bool { return committed(p) == 10 })
	require.NoError(t, stop())
}

// A topic that every broker lacks for a moment (created just before the
// start, not yet applied anywhere) is not reported missing at once: Run asks
// again for missingTopicGrace (2s), however short its backoff (5ms here).
// The brokers lack it for 1s from their first answer: the old rule gave up
// after the fourth answer without it, about 35ms in.
func TestATopicEveryBrokerLacksForAMomentIsWaitedFor(t *testing.T) {
	c, brokers := testkit.Cluster(t, 2, "in", "out")
	testkit.Produce(t, brokers, "in", 10)
	var first atomic.Int64 // the first lagging answer, in Unix nanoseconds
	testkit.LagMetadata(t, c, "in", func(int32) bool {
		now := time.Now().UnixNano()
		first.CompareAndSwap(0, now)
		return time.Duration(now-first.Load()) < time.Second
	})
	var logs syncBuffer
	p := newPipeline(t, brokers, copyStage("out"), "w1",
		pipeline.Logger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	stop, done := run(p)
	awaitOrExit(t, &logs, done, "the records committed", func(string) bool { return committed(p) == 10 })
	require.NoError(t, stop())
	require.Contains(t, logs.String(), "asking again")
}

// awaitOrExit waits until cond holds of the log so far, failing the test if
// Run returns first.
func awaitOrExit(t *testing.T, logs *syncBuffer, done <-chan error, what string, cond func(log string) bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond(logs.String()) {
		select {
		case err := <-done:
			t.Fatalf("Run returned before %s: %v\n%s", what, err, logs.String())
		case <-deadline:
			t.Fatalf("%s: not after 30s:\n%s", what, logs.String())
		case <-tick.C:
		}
	}
}
