package main

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// pgSchema connects to EXACTLY_PG_URL and creates a schema of its own for
// the test, dropped when it ends.
func pgSchema(t *testing.T) (string, *pgx.Conn, string) {
	t.Helper()
	url := os.Getenv("EXACTLY_PG_URL")
	if url == "" {
		unavailable(t, "EXACTLY_PG_URL is not set; run `make services-up`")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		unavailable(t, "Postgres at EXACTLY_PG_URL: %v", err)
	}
	schema := "lag_test_" + strconv.FormatUint(rand.Uint64()%1e9, 10)
	_, err = conn.Exec(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
		_ = conn.Close(ctx)
	})
	return url, conn, schema
}

// TestLagFromPostgres: in Postgres mode the committed offsets come from
// exactly's offsets table, not from Kafka.
func TestLagFromPostgres(t *testing.T) {
	url, conn, schema := pgSchema(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The table as sinks.NewPostgres creates it.
	_, err := conn.Exec(ctx, `CREATE TABLE `+schema+`.exactly_offsets (
    consumer_group text NOT NULL, topic text NOT NULL, partition integer NOT NULL,
    next_offset bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition))`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO `+schema+`.exactly_offsets (consumer_group, topic, partition, next_offset)
VALUES ('g', 'lag-pg', 0, 3), ('g', 'lag-pg', 1, 1), ('other', 'lag-pg', 0, 1), ('g', 'elsewhere', 0, 9)`)
	require.NoError(t, err)

	brokers, adm, seeds := cluster(t, 1)
	mkTopic(t, adm, "lag-pg", 2, 1)
	produceKeys(t, seeds, "lag-pg", 0, "a", "b", "c", "d", "e")
	produceKeys(t, seeds, "lag-pg", 1, "a", "b")

	code, out, _ := exactly(t, "lag", "-brokers", brokers, "-topics", "lag-pg", "-group", "g", "-pg", url, "-pg-table", schema+".exactly_offsets")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "total lag 3 (group g, offsets from postgres \""+schema+"\".\"exactly_offsets\"")

	code, _, errs := exactly(t, "lag", "-brokers", brokers, "-topics", "lag-pg", "-group", "g", "-pg", url, "-pg-table", schema+".nope")
	require.Equal(t, exitError, code)
	require.Contains(t, errs, "is -pg-table the pipeline's offsets table")
}

// TestVerifySQL: the Postgres variant of verify compares the input topic
// with result rows, here with a planted duplicate row.
func TestVerifySQL(t *testing.T) {
	url, conn, schema := pgSchema(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := conn.Exec(ctx, `CREATE TABLE `+schema+`.orders (seq bigserial PRIMARY KEY, id text NOT NULL)`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO `+schema+`.orders (id) VALUES ('a'), ('b'), ('c')`)
	require.NoError(t, err)

	brokers, adm, seeds := cluster(t, 1)
	mkTopic(t, adm, "orders", 1, 1)
	produceKeys(t, seeds, "orders", 0, "a", "b", "c")
	q := "select id from " + schema + ".orders order by seq"
	code, out, _ := exactly(t, "verify", "-brokers", brokers, "-topic", "orders", "-by", "json:id", "-pg", url, "-sql", q)
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "EXACT (by json:id): in=3 out=[sql=3]")

	_, err = conn.Exec(ctx, `INSERT INTO `+schema+`.orders (id) VALUES ('b')`)
	require.NoError(t, err)
	code, out, _ = exactly(t, "verify", "-brokers", brokers, "-topic", "orders", "-pg", url, "-sql", q)
	require.Equal(t, exitFound, code)
	require.Contains(t, out, "duplicates=1")

	code, _, errs := exactly(t, "verify", "-brokers", brokers, "-topic", "orders", "-pg", url, "-sql", "select id, seq from "+schema+".orders")
	require.Equal(t, exitError, code)
	require.Contains(t, errs, "returns 2 columns")
}
