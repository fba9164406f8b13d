package pgsink_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/pgsink"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// pgsink.New(nil) — what a pgxpool.New whose error was ignored leaves —
// says what probably happened.
func TestPostgresNilPool(t *testing.T) {
	_, err := pgsink.New(nil)
	var ce *sinks.ConfigError
	require.ErrorAs(t, err, &ce)
	require.ErrorContains(t, err, "pool is nil: pgxpool.New failed? check its error")
}

// The offsets table missing (Migrate not run) stops Run at once with an
// error that names the table and the fix, instead of retrying until
// StartTimeout and ending in "context deadline exceeded".
func TestPostgresMissingOffsetsTableFailsFast(t *testing.T) {
	pool := pgPool(t)
	schema := testSchema(t, pool, uniqueName("exactly_missing"))
	_, brokers := testkit.Cluster(t, 1, "in")
	sink, err := pgsink.New(pool, pgsink.OffsetsTable(schema, "offsets"))
	require.NoError(t, err)
	stage := pipeline.StageFunc[*pgsink.Writer](func(context.Context, *sinks.Batch, *pgsink.Writer) error { return nil })
	p, err := pipeline.New(sink, stage, pipeline.Brokers(brokers...), pipeline.Group("g"),
		pipeline.Topics("in"), pipeline.InstanceID("w1"), pipeline.StartTimeout(30*time.Second))
	require.NoError(t, err)
	start := time.Now()
	err = p.Run(context.Background())
	took := time.Since(start)
	t.Logf("after %v: %v", took, err)
	require.Less(t, took, 5*time.Second)
	require.ErrorIs(t, err, sinks.ErrPermanent)
	var me *sinks.MissingError
	require.ErrorAs(t, err, &me)
	require.Equal(t, pgx.Identifier{schema, "offsets"}.Sanitize(), me.Name)
	var pe *pgconn.PgError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "42P01", pe.Code)
	require.ErrorContains(t, err, "offsets table")
	require.ErrorContains(t, err, "Migrate")
	require.False(t, sinks.IsRetryable(err))
}

// RunUntilCaughtUp in Postgres mode reads the committed offsets from the
// offsets table (the sink is a sinks.OffsetReader), not from Kafka; the
// mirror is off here, so Kafka's view would never catch up. The lifecycle
// (partitions assigned and revoked) is logged at INFO.
func TestPostgresRunUntilCaughtUp(t *testing.T) {
	r := newPgRun(t, 3, 2000)
	sink, err := pgsink.New(r.admin, pgsink.OffsetsTable(r.schema, "offsets"), pgsink.MirrorToKafka(false))
	require.NoError(t, err)
	require.NoError(t, sink.Migrate(context.Background()))
	var _ sinks.OffsetReader = sink
	rowsTable := pgx.Identifier{r.schema, "rows"}
	stage := pipeline.StageFunc[*pgsink.Writer](func(ctx context.Context, b *sinks.Batch, w *pgsink.Writer) error {
		rows := make([][]any, len(b.Records))
		for i, rec := range b.Records {
			rows[i] = []any{rec.Topic, rec.Partition, rec.Offset, string(rec.Value)}
		}
		_, err := w.CopyFrom(ctx, rowsTable, []string{"topic", "partition", "offset", "value"}, pgx.CopyFromRows(rows))
		return err
	})
	var logs lockedBuffer
	p, err := pipeline.New(sink, stage, pipeline.Brokers(r.brokers...), pipeline.Group(r.group),
		pipeline.Topics("in"), pipeline.InstanceID("w1"), pipeline.MaxWait(20*time.Millisecond),
		pipeline.Logger(slog.New(slog.NewTextHandler(&logs, nil))))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, p.RunUntilCaughtUp(ctx))
	require.Equal(t, r.n, r.committed())
	offs, err := sink.CommittedOffsets(ctx, r.group, []string{"in"})
	require.NoError(t, err)
	require.Len(t, offs["in"], 3)
	r.verify(false)
	out := logs.String()
	require.Contains(t, out, `level=INFO msg="partitions assigned; positions loaded from postgres"`)
	require.Contains(t, out, `sink=postgres partitions="map[in:[0 1 2]]"`)
	require.Contains(t, out, `level=INFO msg="partitions revoked"`)
	require.Contains(t, out, `reason="context done" err="pipeline: caught up with the input"`)

	n, err := sink.DeleteOffsets(ctx, r.group)
	require.NoError(t, err)
	require.Equal(t, int64(3), n)
}

// In Postgres mode nothing but the consumer talks to Kafka, and a consumer
// only retries in the background: Run checks the brokers before it starts,
// so unreachable brokers end in a *pipeline.StartError within StartTimeout
// instead of a pipeline that waits silently.
func TestPostgresUnreachableBrokers(t *testing.T) {
	pool := pgPool(t)
	schema := testSchema(t, pool, uniqueName("exactly_unreach"))
	sink, err := pgsink.New(pool, pgsink.OffsetsTable(schema, "offsets"))
	require.NoError(t, err)
	require.NoError(t, sink.Migrate(context.Background()))
	stage := pipeline.StageFunc[*pgsink.Writer](func(context.Context, *sinks.Batch, *pgsink.Writer) error { return nil })
	const startTimeout = 2 * time.Second
	p, err := pipeline.New(sink, stage, pipeline.Brokers("127.0.0.1:1"), pipeline.Group("g"),
		pipeline.Topics("in"), pipeline.InstanceID("w1"), pipeline.StartTimeout(startTimeout))
	require.NoError(t, err)
	start := time.Now()
	err = p.Run(context.Background())
	took := time.Since(start)
	t.Logf("after %v: %v", took, err)
	require.Less(t, took, startTimeout+time.Second)
	var se *pipeline.StartError
	require.ErrorAs(t, err, &se)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.ErrorContains(t, err, "127.0.0.1:1")
}

// A table the Stage writes to that does not exist stops Run at the first
// batch, naming the table, instead of after StageRetries; a wrong password
// stops it at once instead of after StartTimeout.
func TestPostgresPermanentStageAndLoginErrors(t *testing.T) {
	pool := pgPool(t)
	schema := testSchema(t, pool, uniqueName("exactly_perm"))
	_, brokers := testkit.Cluster(t, 1, "in")
	testkit.Produce(t, brokers, "in", 5)
	for _, tc := range []struct {
		name  string
		pool  func(t *testing.T) *pgxpool.Pool
		stage pipeline.Stage[*pgsink.Writer]
		text  []string
	}{{
		name: "copy into a missing table",
		pool: func(*testing.T) *pgxpool.Pool { return pool },
		stage: pipeline.StageFunc[*pgsink.Writer](func(ctx context.Context, b *sinks.Batch, w *pgsink.Writer) error {
			_, err := w.CopyFrom(ctx, pgx.Identifier{schema, "nope"}, []string{"v"}, pgx.CopyFromRows([][]any{{1}}))
			return err
		}),
		text: []string{`table "` + schema + `"."nope" does not exist`, "create it", "after 1 attempts"},
	}, {
		name: "insert into a missing table",
		pool: func(*testing.T) *pgxpool.Pool { return pool },
		stage: pipeline.StageFunc[*pgsink.Writer](func(ctx context.Context, b *sinks.Batch, w *pgsink.Writer) error {
			_, err := w.Exec(ctx, `INSERT INTO `+pgx.Identifier{schema, "nope"}.Sanitize()+` VALUES (1)`)
			return err
		}),
		text: []string{`table "` + schema + `.nope" does not exist`},
	}, {
		name: "wrong password",
		pool: func(t *testing.T) *pgxpool.Pool {
			cfg := pgConfig(t)
			cfg.ConnConfig.Password = "wrong-password"
			p, err := pgxpool.NewWithConfig(context.Background(), cfg)
			require.NoError(t, err)
			t.Cleanup(p.Close)
			return p
		},
		stage: pipeline.StageFunc[*pgsink.Writer](func(context.Context, *sinks.Batch, *pgsink.Writer) error { return nil }),
		text:  []string{"postgres refused the login", "check the user and password"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			sink, err := pgsink.New(tc.pool(t), pgsink.OffsetsTable(schema, "offsets"))
			require.NoError(t, err)
			if tc.name != "wrong password" {
				require.NoError(t, sink.Migrate(context.Background()))
			}
			p, err := pipeline.New(sink, tc.stage, pipeline.Brokers(brokers...), pipeline.Group("g"),
				pipeline.Topics("in"), pipeline.InstanceID("w1"), pipeline.StartTimeout(30*time.Second))
			require.NoError(t, err)
			start := time.Now()
			err = p.Run(context.Background())
			took := time.Since(start)
			t.Logf("after %v: %v", took, err)
			require.Less(t, took, 10*time.Second)
			require.ErrorIs(t, err, sinks.ErrPermanent)
			var pe *pgconn.PgError
			require.ErrorAs(t, err, &pe)
			for _, s := range tc.text {
				require.ErrorContains(t, err, s)
			}
			require.Zero(t, p.Stats().CommittedRecords)
		})
	}
}
