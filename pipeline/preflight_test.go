package pipeline_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
)

// On a single-replica cluster the preflight check warns at start, from the
// same rules as `exactly doctor`: nothing used to warn at any level.
func TestPreflightWarnsOfSingleReplicaTopics(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "in", "out")
	testkit.Produce(t, brokers, "in", 10)
	var logs syncBuffer
	p := newPipeline(t, brokers, copyStage("out"), "a", pipeline.Outputs("out"),
		pipeline.Logger(slog.New(slog.NewTextHandler(&logs, nil))))
	stop, _ := run(p)
	testkit.WaitFor(t, 30*time.Second, "the preflight warnings", func() bool {
		return strings.Contains(logs.String(), "durability risk") && strings.Contains(logs.String(), "check=replication-factor")
	})
	testkit.WaitFor(t, 30*time.Second, "the records committed all the same", func() bool { return committed(p) >= 10 })
	require.NoError(t, stop())
	require.Contains(t, logs.String(), `resource="topic in"`)
	require.Contains(t, logs.String(), `resource="topic out"`)
}

// PreflightRefuse refuses to start on such a cluster, naming each risk.
func TestPreflightRefuse(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "in", "out")
	p := newPipeline(t, brokers, copyStage("out"), "a", pipeline.Preflight(pipeline.PreflightRefuse))
	err := p.Run(context.Background())
	var pe *pipeline.PreflightError
	require.ErrorAs(t, err, &pe)
	require.NotEmpty(t, pe.Risks)
	require.Contains(t, err.Error(), "on topic in: ")
	require.Contains(t, err.Error(), "fix:")
	require.Zero(t, p.Stats().CommittedTxns)
}
