package pgsink_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/pgsink"
)

// A Stage that ignores its context and is still inside a query when the
// pipeline aborts its transaction: the rollback must not share the
// connection with that query (a pgx connection is not safe for concurrent
// use; the race detector saw it), the query is cancelled, and whatever the
// stuck call writes afterwards is refused. Every record is in the table once.
func TestPostgresStageStuckInAQuery(t *testing.T) {
	admin := pgPool(t)
	_, brokers := testkit.Cluster(t, 1, "in")
	const n = 50
	testkit.Produce(t, brokers, "in", n)
	ctx := context.Background()
	schema := testSchema(t, admin, uniqueName("exactly_stuck_"))
	rows := pgx.Identifier{schema, "rows"}
	_, err := admin.Exec(ctx, `CREATE TABLE `+rows.Sanitize()+` (partition integer, kafka_offset bigint, PRIMARY KEY (partition, kafka_offset))`)
	require.NoError(t, err)

	var first atomic.Bool
	lateErr := make(chan error, 1)
	stage := pipeline.StageFunc[*pgsink.Writer](func(_ context.Context, b *sinks.Batch, w *pgsink.Writer) error {
		if first.CompareAndSwap(false, true) {
			// Ignores the Stage's context: sleeps in the database past
			// the budget, then tries to write.
			_, _ = w.Exec(context.Background(), "select pg_sleep(3)")
			_, err := w.Exec(context.Background(), `INSERT INTO `+rows.Sanitize()+` VALUES (99, 99)`)
			lateErr <- err
			return nil
		}
		for _, r := range b.Records {
			if _, err := w.Exec(context.Background(), `INSERT INTO `+rows.Sanitize()+` VALUES ($1, $2)`, r.Partition, r.Offset); err != nil {
				return err
			}
		}
		return nil
	})
	sink, err := pgsink.New(admin, pgsink.OffsetsTable(schema, "offsets"))
	require.NoError(t, err)
	require.NoError(t, sink.Migrate(ctx))
	p, err := pipeline.New(sink, stage, pipeline.Brokers(brokers...), pipeline.Group("stuck"), pipeline.Topics("in"),
		pipeline.InstanceID("a"), pipeline.MaxWait(20*time.Millisecond), pipeline.SessionTimeout(3*time.Second),
		pipeline.TransactionTimeout(time.Second), pipeline.HeartbeatInterval(300*time.Millisecond), pipeline.StageRetries(5))
	require.NoError(t, err)
	stop := start(p)
	select {
	case err := <-lateErr:
		require.Error(t, err, "a write after the transaction ended must be refused")
	case <-time.After(30 * time.Second):
		t.Fatal("the stuck Stage never woke up")
	}
	testkit.WaitFor(t, 60*time.Second, "all records committed", func() bool { return p.Stats().CommittedRecords >= n })
	require.NoError(t, stop())
	var count, stray int
	require.NoError(t, admin.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE partition = 99) FROM `+rows.Sanitize()).Scan(&count, &stray))
	require.Zero(t, stray, "the stuck call's late write committed")
	require.Equal(t, n, count)
}
