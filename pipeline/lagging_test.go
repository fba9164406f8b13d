package pipeline_test

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
)

// lagMetadata makes the brokers for which lags reports true answer that
// topic "in" does not exist, as a broker does that has not yet applied the
// controller's record of a topic created a moment ago (CI saw it on the real
// cluster: a worker started right after the topic's creation stopped with
// "input topic … does not exist"). It returns the cluster's brokers.
func lagMetadata(t *testing.T, c *kfake.Cluster, brokers []string, lags func(node int32) bool) kadm.BrokerDetails {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	md, err := kadm.NewClient(cl).Metadata(context.Background())
	require.NoError(t, err)
	require.Len(t, md.Brokers, 3)
	c.ControlKey(kmsg.Metadata.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.MetadataRequest)
		asksIn := false
		for _, rt := range req.Topics {
			asksIn = asksIn || rt.Topic != nil && *rt.Topic == "in"
		}
		if !asksIn || !lags(c.CurrentNode()) {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		resp.ControllerID = md.Controller
		for _, b := range md.Brokers {
			rb := kmsg.NewMetadataResponseBroker()
			rb.NodeID, rb.Host, rb.Port = b.NodeID, b.Host, b.Port
			resp.Brokers = append(resp.Brokers, rb)
		}
		for _, rt := range req.Topics {
			st := kmsg.NewMetadataResponseTopic()
			st.Topic = rt.Topic
			st.ErrorCode = kerr.UnknownTopicOrPartition.Code
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return md.Brokers
}

// A broker whose metadata lags does not stop Run with "input topic does not
// exist" while another broker knows the topic. The pipeline knows only the
// lagging broker, so every check's first answer comes from it.
func TestOneLaggingBrokerDoesNotHideAnInputTopic(t *testing.T) {
	c, brokers := testkit.Cluster(t, 2, "in", "out")
	testkit.Produce(t, brokers, "in", 10)
	var lagging atomic.Bool
	lagging.Store(true)
	var laggard int32 = -1
	for _, b := range lagMetadata(t, c, brokers, func(node int32) bool { return lagging.Load() && node == atomic.LoadInt32(&laggard) }) {
		if net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))) == brokers[0] {
			atomic.StoreInt32(&laggard, b.NodeID)
		}
	}
	require.GreaterOrEqual(t, atomic.LoadInt32(&laggard), int32(0))
	var logs syncBuffer
	p := newPipeline(t, brokers[:1], copyStage("out"), "w1",
		pipeline.Logger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	stop, done := run(p)
	awaitLogOrExit(t, &logs, done, "another broker knows it")
	require.Contains(t, logs.String(), "known_by_broker=")
	require.NotContains(t, logs.String(), "asking again", "one check must do: the other brokers were asked")
	lagging.Store(false)
	testkit.WaitFor(t, 30*time.Second, "the records committed", func() bool { return committed(p) == 10 })
	require.NoError(t, stop())
}

// A topic that every broker lacks for a moment (created just before the
// start, not yet applied anywhere) is not reported missing at once: Run asks
// again for missingTopicGrace (2s), however short its backoff (5ms here).
func TestATopicEveryBrokerLacksForAMomentIsWaitedFor(t *testing.T) {
	c, brokers := testkit.Cluster(t, 2, "in", "out")
	testkit.Produce(t, brokers, "in", 10)
	var lagging atomic.Bool
	lagging.Store(true)
	lagMetadata(t, c, brokers, func(int32) bool { return lagging.Load() })
	var logs syncBuffer
	p := newPipeline(t, brokers, copyStage("out"), "w1",
		pipeline.Logger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	stop, done := run(p)
	// The old rule gave up after the fourth answer without the topic,
	// 35ms into the start; check 4 is past it.
	awaitLogOrExit(t, &logs, done, "asking again", "check=4")
	lagging.Store(false)
	testkit.WaitFor(t, 30*time.Second, "the records committed", func() bool { return committed(p) == 10 })
	require.NoError(t, stop())
}

// awaitLogOrExit waits until one line of logs contains every one of parts,
// failing the test if Run returns first.
func awaitLogOrExit(t *testing.T, logs *syncBuffer, done <-chan error, parts ...string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, line := range strings.Split(logs.String(), "\n") {
			all := true
			for _, s := range parts {
				all = all && strings.Contains(line, s)
			}
			if all {
				return
			}
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned before a log line had %q: %v\n%s", parts, err, logs.String())
		case <-deadline:
			t.Fatalf("no log line has %q after 30s:\n%s", parts, logs.String())
		case <-tick.C:
		}
	}
}
