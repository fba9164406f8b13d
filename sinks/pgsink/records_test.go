package pgsink_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks/pgsink"
)

// Per-record policy in Postgres mode: a record that always fails goes to a
// dead-letter table in the batch's transaction after its retries; one that
// fails on its first attempt after it already inserted a row is retried in a
// fresh savepoint, so its row is in the table once. Every input is a row or a
// dead letter exactly once.
func TestPerRecordDeadLetterTable(t *testing.T) {
	admin := pgPool(t)
	_, brokers := testkit.Cluster(t, 2, "in")
	const n = 300
	testkit.Produce(t, brokers, "in", n)
	ctx := context.Background()
	schema := testSchema(t, admin, uniqueName("exactly_dlq_"))
	rows, dead := pgx.Identifier{schema, "rows"}, pgx.Identifier{schema, "dead"}
	_, err := admin.Exec(ctx, `CREATE TABLE `+rows.Sanitize()+` (topic text, partition integer, kafka_offset bigint, PRIMARY KEY (topic, partition, kafka_offset))`)
	require.NoError(t, err)
	_, err = admin.Exec(ctx, pgsink.DeadLetterDDL(dead))
	require.NoError(t, err)

	attempts := map[string]int{}
	rs := pipeline.RecordFunc[*pgsink.Writer](func(ctx context.Context, r *kgo.Record, w *pgsink.Writer) error {
		if _, err := w.Exec(ctx, `INSERT INTO `+rows.Sanitize()+` VALUES ($1, $2, $3)`, r.Topic, r.Partition, r.Offset); err != nil {
			return err
		}
		i, _ := strconv.Atoi(strings.TrimPrefix(string(r.Key), "k"))
		attempts[string(r.Key)]++ // one partition's records are processed by one goroutine at a time
		switch {
		case i%10 == 0:
			return errors.New("always bad")
		case i%7 == 0 && attempts[string(r.Key)] == 1:
			return errors.New("flaky")
		}
		return nil
	})
	sink, err := pgsink.New(admin, pgsink.OffsetsTable(schema, "offsets"))
	require.NoError(t, err)
	require.NoError(t, sink.Migrate(ctx))
	p, err := pipeline.New(sink, pipeline.PerRecord[*pgsink.Writer](rs, pipeline.RecordPolicy[*pgsink.Writer]{
		Retries: 1, Backoff: time.Millisecond, DeadLetter: pgsink.DeadLetterTable(dead),
	}), pipeline.Brokers(brokers...), pipeline.Group("dlq"), pipeline.Topics("in"), pipeline.InstanceID("a"),
		pipeline.Concurrency(1), pipeline.MaxWait(20*time.Millisecond), pipeline.SessionTimeout(3*time.Second),
		pipeline.TransactionTimeout(2*time.Second), pipeline.HeartbeatInterval(300*time.Millisecond))
	require.NoError(t, err)
	stop := start(p)
	testkit.WaitFor(t, 60*time.Second, "all records committed", func() bool { return p.Stats().CommittedRecords >= n })
	require.NoError(t, stop())

	var nRows, nDead, distinct int
	require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM `+rows.Sanitize()).Scan(&nRows))
	require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM `+dead.Sanitize()+` WHERE attempts = 2 AND error = 'always bad'`).Scan(&nDead))
	require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM (SELECT kafka_offset, partition FROM `+rows.Sanitize()+
		` UNION ALL SELECT kafka_offset, partition FROM `+dead.Sanitize()+`) u`).Scan(&distinct))
	require.Equal(t, n/10, nDead)
	require.Equal(t, n-n/10, nRows, "the dead letters' rows were rolled back with their savepoints")
	require.Equal(t, n, distinct, "every input is a row or a dead letter, once (the primary keys forbid twice)")
}
