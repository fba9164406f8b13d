// Package sinkharness holds the sinktest harnesses of the two sinks, so that
// the conformance suite runs on them from the sinks' own tests (kfake) and
// from the integration tests (Apache Kafka) alike.
package sinkharness

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
	"github.com/exactlyonce/exactly/sinks/pgsink"
	"github.com/exactlyonce/exactly/sinks/sinktest"
)

// Kafka is the Kafka sink's harness: each effect is a copy of the input
// record in the output topic, with source headers; the visible effects are
// read back with a read_committed consumer.
type Kafka struct{}

// Sink implements sinktest.Harness.
func (Kafka) Sink(*testing.T, sinktest.Env) sinks.Sink[*kafkasink.Writer] {
	return kafkasink.New()
}

// Write implements sinktest.Harness.
func (Kafka) Write(_ context.Context, env sinktest.Env, w *kafkasink.Writer, r *kgo.Record) error {
	w.Produce(kafkasink.DeadLetterRecord(env.Output, r, nil)) // key, value, source headers
	return nil
}

// Effects implements sinktest.Harness.
func (Kafka) Effects(t *testing.T, env sinktest.Env) []string {
	t.Helper()
	recs, err := verify.ReadAll(context.Background(), []kgo.Opt{kgo.SeedBrokers(env.Brokers...)}, env.Output, 30*time.Second)
	require.NoError(t, err, "reading the output with read_committed")
	ids := make([]string, 0, len(recs))
	for _, r := range recs {
		src, err := verify.SourceFromHeaders(r)
		require.NoError(t, err)
		ids = append(ids, sinktest.ID(src.Topic, src.Partition, src.Offset))
	}
	return ids
}

// Postgres is the Postgres sink's harness: each effect is a row (id) of an
// effects table without a unique key, so a duplicate would show, in a schema
// of the case's own; its offsets table lives there too.
type Postgres struct {
	Pool *pgxpool.Pool
	Opts []pgsink.Opt // extra sink options
}

// Schema is the case's schema.
func (h Postgres) Schema(env sinktest.Env) string { return "exactly_ct_" + env.Name }

func (h Postgres) effects(env sinktest.Env) string {
	return pgx.Identifier{h.Schema(env), "effects"}.Sanitize()
}

// Sink implements sinktest.Harness: it creates the schema (dropped when the
// test ends) and the effects table.
func (h Postgres) Sink(t *testing.T, env sinktest.Env) sinks.Sink[*pgsink.Writer] {
	t.Helper()
	ctx := context.Background()
	schema := h.Schema(env)
	id := pgx.Identifier{schema}.Sanitize()
	_, err := h.Pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+id+` CASCADE`)
	require.NoError(t, err)
	_, err = h.Pool.Exec(ctx, `CREATE SCHEMA `+id)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := h.Pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+id+` CASCADE`); err != nil {
			t.Logf("dropping schema %s: %v", schema, err)
		}
	})
	_, err = h.Pool.Exec(ctx, `CREATE TABLE `+h.effects(env)+` (id text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`)
	require.NoError(t, err)
	sink, err := pgsink.New(h.Pool, append([]pgsink.Opt{pgsink.OffsetsTable(schema, "offsets")}, h.Opts...)...)
	require.NoError(t, err)
	require.NoError(t, sink.Migrate(ctx))
	return sink
}

// Write implements sinktest.Harness.
func (h Postgres) Write(ctx context.Context, env sinktest.Env, w *pgsink.Writer, r *kgo.Record) error {
	_, err := w.Exec(ctx, `INSERT INTO `+h.effects(env)+` (id) VALUES ($1)`, sinktest.RecordID(r))
	return err
}

// Effects implements sinktest.Harness.
func (h Postgres) Effects(t *testing.T, env sinktest.Env) []string {
	t.Helper()
	rows, err := h.Pool.Query(context.Background(), `SELECT id FROM `+h.effects(env)+` ORDER BY at`)
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return ids
}
