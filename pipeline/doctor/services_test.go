package doctor

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Tests against the real brokers of `make services-up`. Like
// integration/harness.go: skipped when the variable is unset or the brokers
// do not answer, failed instead when EXACTLY_REQUIRE_SERVICES=1.
const (
	envBrokers = "EXACTLY_KAFKA_BROKERS" // single broker, e.g. 127.0.0.1:9092
	envCluster = "EXACTLY_KAFKA_CLUSTER" // 3 brokers, e.g. 127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194
	envRequire = "EXACTLY_REQUIRE_SERVICES"
)

// unavailable skips the test, or fails it when EXACTLY_REQUIRE_SERVICES=1.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(envRequire) == "1" {
		t.Fatalf("%s (%s=1, so this fails instead of skipping)", msg, envRequire)
	}
	t.Skip(msg)
}

// realKafka returns the brokers in env and an admin client on them.
func realKafka(t *testing.T, env string) ([]string, *kadm.Client) {
	t.Helper()
	seeds := strings.Split(os.Getenv(env), ",")
	if os.Getenv(env) == "" {
		unavailable(t, "%s is not set; run `make services-up`", env)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := Dial(ctx, seeds)
	if err != nil {
		unavailable(t, "%s: %v", env, err)
	}
	t.Cleanup(cl.Close)
	return seeds, admOf(t, cl)
}

// realTopic creates a uniquely named topic and deletes it when the test ends.
func realTopic(t *testing.T, adm *kadm.Client, prefix string, partitions int32, rf int16, kv ...string) string {
	t.Helper()
	name := fmt.Sprintf("%s%d-%x", prefix, time.Now().UnixNano()%1e6, rand.Uint32())
	create(t, adm, name, partitions, rf, kv...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopic(ctx, name)
	})
	// A new topic's partitions get their leaders and full ISR a moment
	// after CreateTopics returns; Kafka has no event for it, so poll the
	// metadata until every partition is led and fully in sync.
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		td, err := adm.ListTopics(ctxT(t), name)
		require.NoError(t, err)
		ready := len(td[name].Partitions) == int(partitions)
		for _, p := range td[name].Partitions {
			ready = ready && p.Leader >= 0 && len(p.ISR) == int(rf)
		}
		if ready {
			return name
		}
		require.True(t, time.Now().Before(deadline), "topic %s never got leaders and a full ISR: %+v", name, td[name])
		<-tick.C
	}
}

// TestRealSingleBrokerHasRisks: an RF-1 topic on the single broker is a
// replication and min ISR risk.
func TestRealSingleBrokerHasRisks(t *testing.T) {
	_, adm := realKafka(t, envBrokers)
	topic := realTopic(t, adm, "doctor-", 1, 1)
	rep, err := Check(ctxT(t), kcl(t, adm), Request{Inputs: []string{topic}, Group: "doctor-test"})
	require.NoError(t, err)
	t.Logf("\n%s", rep)
	require.True(t, rep.HasRisk())
	require.Equal(t, Risk, findOne(t, rep.Findings, CheckReplicationFactor, "topic "+topic).Severity)
	require.Equal(t, Risk, findOne(t, rep.Findings, CheckMinInsyncReplicas, "topic "+topic).Severity)
	require.Equal(t, OK, findOne(t, rep.Findings, CheckKIP447, "broker 1").Severity)
	require.NotEmpty(t, rep.Find(CheckTransactionsV2))
	require.NotEmpty(t, rep.Find(CheckTxnTimeoutMax))
}

// TestRealClusterIsSafe: RF 3 / min ISR 2 topics on the cluster have no risk.
func TestRealClusterIsSafe(t *testing.T) {
	_, adm := realKafka(t, envCluster)
	in := realTopic(t, adm, "doctor-", 3, 3, "min.insync.replicas=2")
	out := realTopic(t, adm, "doctor-", 3, 3, "min.insync.replicas=2")
	rep, err := Check(ctxT(t), kcl(t, adm), Request{Inputs: []string{in}, Outputs: []string{out}, Group: "doctor-test"})
	require.NoError(t, err)
	t.Logf("\n%s", rep)
	require.False(t, rep.HasRisk(), "a healthy RF 3 / min ISR 2 cluster:\n%s", rep)
	require.Len(t, rep.Brokers, 3)
	require.Equal(t, OK, findOne(t, rep.Findings, CheckReplicationFactor, "topic "+in).Severity)
	require.Equal(t, OK, findOne(t, rep.Findings, CheckMinInsyncReplicas, "topic "+out).Severity)
	require.Equal(t, Info, findOne(t, rep.Findings, CheckCommittedVsStart, "topic "+in).Severity, "the group never committed")
}

// TestRealLagPinnedByOpenTransaction: on Apache Kafka, an open transaction
// holds the last stable offset below the high watermark, Watch flags it as
// hanging past its limit, and its abort releases it.
func TestRealLagPinnedByOpenTransaction(t *testing.T) {
	seeds, adm := realKafka(t, envBrokers)
	topic := realTopic(t, adm, "lag-", 1, 1)
	produce(t, seeds, topic, 0, 5)
	abort := openTxn(t, seeds, topic, 0, 3)
	aborted := false
	defer func() {
		if !aborted {
			abort()
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var last LagReport
	err := Watch(ctx, 200*time.Millisecond, time.Second, func(ctx context.Context) (LagReport, error) {
		return Lag(ctx, adm, Committed{}, topic)
	}, func(r LagReport) error {
		last = r
		if len(r.Hanging()) > 0 {
			cancel()
		}
		return nil
	})
	require.ErrorIs(t, err, context.Canceled, "the open transaction was never flagged: %+v", last)
	p := last.Partitions[0]
	require.Equal(t, int64(8), p.End)
	require.Equal(t, int64(5), p.Stable)
	require.Equal(t, int64(3), p.Open)
	require.True(t, p.Hanging)
	require.Greater(t, p.PinnedFor, time.Second)

	abort()
	aborted = true
	// The coordinator writes the abort marker after EndTxn returns; poll
	// the broker's state until it shows.
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		rep, err := Lag(ctxT(t), adm, Committed{}, topic)
		require.NoError(t, err)
		if p := rep.Partitions[0]; p.Stable == p.End {
			require.Equal(t, int64(9), p.End, "5 records, 3 aborted, 1 abort marker")
			break
		}
		require.True(t, time.Now().Before(deadline), "the abort never released the last stable offset")
		<-tick.C
	}
}

// TestRealVerify: the verifier on Apache Kafka, with a planted duplicate.
func TestRealVerify(t *testing.T) {
	seeds, adm := realKafka(t, envBrokers)
	in := realTopic(t, adm, "doctor-", 1, 1)
	out := realTopic(t, adm, "doctor-", 1, 1)
	produce(t, seeds, in, 0, 5)
	produce(t, seeds, out, 0, 5)
	opts := []kgo.Opt{kgo.SeedBrokers(seeds...)}
	rep, err := Verify(ctxT(t), opts, VerifyRequest{Input: in, Outputs: []string{out}})
	require.NoError(t, err)
	require.True(t, rep.OK(), "%+v", rep)
	produce(t, seeds, out, 0, 1) // key "0" again
	rep, err = Verify(ctxT(t), opts, VerifyRequest{Input: in, Outputs: []string{out}})
	require.NoError(t, err)
	require.Equal(t, 1, rep.Duplicates, "%+v", rep)
}
