package integration

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/eostest"
	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// TestBrokerBounce runs two instances on the 3-broker cluster (replication
// factor 3, min.insync.replicas 2) and, at 20% progress, kills -9 the
// broker leading output partition 0. The pipeline must keep committing with
// a broker down; at 60% it pauses (its Stage waits at the start of a batch)
// until the broker is back with full ISRs; then it finishes. The output must
// be exact. Not parallel: it kills a node of the shared cluster.
func TestBrokerBounce(t *testing.T) {
	brokers := ClusterBrokers(t)
	version := BrokerVersion(t, brokers)
	t.Logf("Apache Kafka %s cluster at %v", version, brokers)
	env := eostest.Env{
		Name:              "Apache Kafka " + version + " (3 brokers)",
		Brokers:           brokers,
		ReplicationFactor: 3,
		Timeouts:          eostest.KafkaTimeouts,
	}
	env.Timeouts.Progress = 3 * time.Minute
	rig := eostest.NewRig(t, env, 3)
	const n = 30_000
	rig.Produce(n)

	var (
		committed atomic.Int64
		held      = make(chan struct{}) // closed when a Stage waits at 60%
		heldOnce  sync.Once
		resume    = make(chan struct{}) // closed once the broker is back
		resumed   bool
	)
	t.Cleanup(func() {
		if !resumed {
			close(resume)
		}
	})
	stage := pipeline.StageFunc[*kafkasink.Writer](func(ctx context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
		if committed.Load() >= n*6/10 {
			heldOnce.Do(func() { close(held) })
			select {
			case <-resume:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		rig.CopyBatch(b, w)
		return nil
	})
	start := func(id string) *eostest.Instance {
		return rig.Start(id, stage, rig.Opts(id, 200,
			pipeline.StageRetries(1000),
			pipeline.OnCommit(func(ci pipeline.CommitInfo) { committed.Add(int64(ci.Records)) }),
		)...)
	}
	a, b := start("a"), start("b")

	testkit.WaitFor(t, env.Timeouts.Progress, "20% of the input committed", func() bool {
		rig.RequireRunning(a, b)
		return committed.Load() >= n/5
	})
	leader := partitionLeader(t, brokers, rig.Out, 0)
	logRoles(t, brokers, rig, leader)
	atKill := committed.Load()
	KillBroker(t, leader)
	killed := time.Now()
	down := true
	t.Cleanup(func() {
		if down {
			StartBroker(t, leader)
		}
	})
	t.Logf("killed broker %d at %d/%d records committed", leader, atKill, n)

	select {
	case <-held:
	case <-a.Done():
		t.Fatalf("instance a stopped: %v", a.Err())
	case <-b.Done():
		t.Fatalf("instance b stopped: %v", b.Err())
	case <-time.After(env.Timeouts.Progress):
		t.Fatalf("the pipeline did not reach 60%% within %v with broker %d down (%d/%d committed)", env.Timeouts.Progress, leader, committed.Load(), n)
	}
	atRestart := committed.Load()
	t.Logf("with broker %d down the pipeline went from %d to %d records committed in %v", leader, atKill, atRestart, time.Since(killed).Round(time.Millisecond))
	require.Greater(t, atRestart, atKill, "nothing committed while a broker was down")

	StartBroker(t, leader)
	down = false
	t.Logf("broker %d back %v after the kill", leader, time.Since(killed).Round(time.Millisecond))
	close(resume)
	resumed = true

	rig.WaitDrained(a, b)
	require.NoError(t, rig.Stop(a))
	require.NoError(t, rig.Stop(b))
	t.Logf("instance a: %+v", a.P.Stats())
	t.Logf("instance b: %+v", b.P.Stats())
	rig.VerifyExact(n)
}

// partitionLeader is the node id leading topic's partition p.
func partitionLeader(t *testing.T, brokers []string, topic string, p int32) int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	td, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	require.NoError(t, err)
	require.NoError(t, td.Error())
	pd, ok := td[topic].Partitions[p]
	require.True(t, ok, "no partition %d of %s", p, topic)
	require.Len(t, pd.Replicas, 3, "%s[%d] replicas", topic, p)
	require.Len(t, pd.ISR, 3, "%s[%d] ISR", topic, p)
	leader := int(pd.Leader)
	require.True(t, leader >= 1 && leader <= 3, "unexpected leader %d of %s[%d]", leader, topic, p)
	return leader
}

// logRoles says what else the broker about to be killed does for the
// pipeline: group coordinator, transaction coordinator of the instances.
func logRoles(t *testing.T, brokers []string, rig *eostest.Rig, node int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	roles := []string{fmt.Sprintf("leader of %s[0]", rig.Out)}
	if gc := adm.FindGroupCoordinators(ctx, rig.Group); gc.Error() == nil {
		for _, c := range gc {
			if int(c.NodeID) == node {
				roles = append(roles, "group coordinator")
			}
		}
	}
	ids := []string{kafkasink.TransactionalID(rig.Group, "a"), kafkasink.TransactionalID(rig.Group, "b")}
	if tc := adm.FindTxnCoordinators(ctx, ids...); tc.Error() == nil {
		for id, c := range tc {
			if int(c.NodeID) == node {
				roles = append(roles, "transaction coordinator of "+id)
			}
		}
	}
	t.Logf("broker %d is %v", node, roles)
}
