package pgsink_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/pgsink"
	"github.com/exactlyonce/exactly/sinks/sinktest"
)

// pgHarness writes each effect as a row (id) of an effects table without a
// unique key, so a duplicate would show, in a schema of the case's own.
type pgHarness struct {
	pool *pgxpool.Pool
	opts []pgsink.Opt
}

// TestMain checks that no goroutine outlives the package's tests: sessions,
// clients, pools and mirrors all stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func (h pgHarness) schema(env sinktest.Env) string { return "exactly_ct_" + env.Name }

func (h pgHarness) effects(env sinktest.Env) string {
	return pgx.Identifier{h.schema(env), "effects"}.Sanitize()
}

func (h pgHarness) Sink(t *testing.T, env sinktest.Env) sinks.Sink[*pgsink.Writer] {
	t.Helper()
	schema := testSchema(t, h.pool, h.schema(env))
	_, err := h.pool.Exec(context.Background(), `CREATE TABLE `+h.effects(env)+` (id text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`)
	require.NoError(t, err)
	sink, err := pgsink.New(h.pool, append([]pgsink.Opt{pgsink.OffsetsTable(schema, "offsets")}, h.opts...)...)
	require.NoError(t, err)
	require.NoError(t, sink.Migrate(context.Background()))
	return sink
}

func (h pgHarness) Write(ctx context.Context, env sinktest.Env, w *pgsink.Writer, r *kgo.Record) error {
	_, err := w.Exec(ctx, `INSERT INTO `+h.effects(env)+` (id) VALUES ($1)`, sinktest.RecordID(r))
	return err
}

func (h pgHarness) Effects(t *testing.T, env sinktest.Env) []string {
	t.Helper()
	rows, err := h.pool.Query(context.Background(), `SELECT id FROM `+h.effects(env)+` ORDER BY at`)
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return ids
}

func TestPostgresConformance(t *testing.T) {
	pool := pgPool(t)
	t.Run("Defaults", func(t *testing.T) {
		sinktest.Run[*pgsink.Writer](t, pgHarness{pool: pool})
	})
	t.Run("SerializableNoMirror", func(t *testing.T) {
		sinktest.Run[*pgsink.Writer](t, pgHarness{pool: pool, opts: []pgsink.Opt{
			pgsink.TxOptions(pgx.TxOptions{IsoLevel: pgx.Serializable}),
			pgsink.MirrorToKafka(false),
			pgsink.IdleInTransactionTimeout(0),
		}})
	})
}
