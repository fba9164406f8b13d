package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

func TestNewRefusesBadConfig(t *testing.T) {
	base := []pipeline.Opt{
		pipeline.Brokers("127.0.0.1:9092"),
		pipeline.Group("g"),
		pipeline.Topics("in"),
		pipeline.InstanceID("w-1"),
	}
	stage := copyStage("out")
	cases := []struct {
		name   string
		opts   []pipeline.Opt
		option string // the option the error must name
		reason string // a fragment of the reason
	}{
		{"no group", []pipeline.Opt{pipeline.Group("")}, "Group", "required"},
		{"duplicate topic", []pipeline.Opt{pipeline.Topics("in")}, "Topics", "twice"},
		{"bad topic", []pipeline.Opt{pipeline.Topics("a b")}, "Topics", "no spaces"},
		{"no instance", []pipeline.Opt{pipeline.InstanceID("")}, "InstanceID", "stable across restarts"},
		{"bad instance", []pipeline.Opt{pipeline.InstanceID("a/b")}, "InstanceID", "letters, digits"},
		{"colon in instance", []pipeline.Opt{pipeline.InstanceID("eu:1")}, "InstanceID", "no ':'"},
		{"bad broker", []pipeline.Opt{pipeline.Brokers("localhost")}, "Brokers", "host:port"},
		{"zero records", []pipeline.Opt{pipeline.MaxRecords(0)}, "MaxRecords", "positive"},
		{"zero bytes", []pipeline.Opt{pipeline.MaxBytes(-1)}, "MaxBytes", "positive"},
		{"zero wait", []pipeline.Opt{pipeline.MaxWait(0)}, "MaxWait", "positive"},
		{"zero concurrency", []pipeline.Opt{pipeline.Concurrency(0)}, "Concurrency", "positive"},
		{"negative retries", []pipeline.Opt{pipeline.StageRetries(-1)}, "StageRetries", "negative"},
		{"backoff", []pipeline.Opt{pipeline.Backoff(time.Second, time.Millisecond)}, "Backoff", "min <= max"},
		{"txn timeout above session", []pipeline.Opt{pipeline.SessionTimeout(10 * time.Second), pipeline.TransactionTimeout(10 * time.Second)}, "SessionTimeout", "larger than the transaction timeout"},
		{"heartbeat", []pipeline.Opt{pipeline.HeartbeatInterval(5 * time.Second)}, "HeartbeatInterval", "third"},
		{"read uncommitted", []pipeline.Opt{pipeline.ClientOpts(kgo.FetchIsolationLevel(kgo.ReadUncommitted()))}, "ClientOpts", "read_uncommitted"},
		{"acks=1", []pipeline.Opt{pipeline.ClientOpts(kgo.RequiredAcks(kgo.LeaderAck()))}, "ClientOpts", "acks must be all"},
		{"no idempotence", []pipeline.Opt{pipeline.ClientOpts(kgo.DisableIdempotentWrite())}, "ClientOpts", "idempotent"},
		{"own group", []pipeline.Opt{pipeline.ClientOpts(kgo.ConsumerGroup("x"))}, "ClientOpts", "pipeline.Group"},
		{"own topics", []pipeline.Opt{pipeline.ClientOpts(kgo.ConsumeTopics("x"))}, "ClientOpts", "pipeline.Topics"},
		{"own txn id", []pipeline.Opt{pipeline.ClientOpts(kgo.TransactionalID("x"))}, "ClientOpts", "InstanceID"},
		{"own instance id", []pipeline.Opt{pipeline.ClientOpts(kgo.InstanceID("x"))}, "ClientOpts", "InstanceID"},
		{"blocking rebalances", []pipeline.Opt{pipeline.ClientOpts(kgo.BlockRebalanceOnPoll())}, "ClientOpts", "aborts on revoke"},
		{"auto-creating topics", []pipeline.Opt{pipeline.ClientOpts(kgo.AllowAutoTopicCreation())}, "ClientOpts", "never creates topics"},
		{"own client context", []pipeline.Opt{pipeline.ClientOpts(kgo.WithContext(context.Background()))}, "ClientOpts", "cancelling Run's context"},
		{"nil option", []pipeline.Opt{nil}, "Opt", "nil"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pipeline.New(kafkasink.New(), stage, append(append([]pipeline.Opt{}, base...), tc.opts...)...)
			var ce *sinks.ConfigError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, "pipeline."+tc.option, ce.Option)
			require.Contains(t, ce.Reason, tc.reason)
		})
	}
}

func TestNewNeedsBrokers(t *testing.T) {
	_, err := pipeline.New(kafkasink.New(), copyStage("out"), pipeline.Group("g"), pipeline.Topics("in"), pipeline.InstanceID("w"))
	var ce *sinks.ConfigError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "pipeline.Brokers", ce.Option)

	// Seed brokers given as a client option are enough.
	_, err = pipeline.New(kafkasink.New(), copyStage("out"), pipeline.Group("g"), pipeline.Topics("in"), pipeline.InstanceID("w"),
		pipeline.ClientOpts(kgo.SeedBrokers("127.0.0.1:9092")))
	require.NoError(t, err)
}

func TestNewNeedsSinkAndStage(t *testing.T) {
	_, err := pipeline.New[*kafkasink.Writer](nil, copyStage("out"))
	require.ErrorContains(t, err, "sink")
	_, err = pipeline.New[*kafkasink.Writer](kafkasink.New(), nil)
	require.ErrorContains(t, err, "stage")
}

// Unreachable brokers: Run gives up after StartTimeout with an error that
// names the brokers, and returns no earlier than asked.
func TestRunUnreachableBrokers(t *testing.T) {
	p, err := pipeline.New(kafkasink.New(), copyStage("out"),
		pipeline.Brokers("127.0.0.1:1"), pipeline.Group("g"), pipeline.Topics("in"), pipeline.InstanceID("w"),
		pipeline.StartTimeout(time.Second), pipeline.Backoff(10*time.Millisecond, 100*time.Millisecond),
		pipeline.ClientOpts(kgo.RetryTimeout(500*time.Millisecond)))
	require.NoError(t, err)
	err = p.Run(context.Background())
	require.ErrorContains(t, err, "could not start")
	require.ErrorContains(t, err, "127.0.0.1:1")
}

func TestRunTwiceAtOnce(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "in", "out")
	testkit.Produce(t, brokers, "in", 1)
	p := newPipeline(t, brokers, copyStage("out"), "a")
	stop, _ := run(p)
	defer func() { require.NoError(t, stop()) }()
	// Once the first Run committed, it is surely running: a second must refuse.
	testkit.WaitFor(t, 10*time.Second, "the first commit", func() bool { return p.Stats().CommittedTxns > 0 })
	require.ErrorIs(t, p.Run(context.Background()), pipeline.ErrRunning)
}
