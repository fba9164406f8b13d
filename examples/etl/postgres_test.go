package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// pgURL is the database of the Postgres-mode test; it skips when the
// database is unreachable, unless EXACTLY_REQUIRE_SERVICES=1 (make test).
func pgURL(t *testing.T) string {
	t.Helper()
	url := defaultConfig().pgURL
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err == nil {
		err = conn.Ping(ctx)
		conn.Close(ctx)
	}
	if err != nil {
		if os.Getenv("EXACTLY_REQUIRE_SERVICES") == "1" {
			t.Fatalf("Postgres at %s unreachable: %v", redact(url), err)
		}
		t.Skipf("Postgres at %s unreachable (run make pg-up): %v", redact(url), err)
	}
	return url
}

func TestRunEmbeddedPostgres(t *testing.T) {
	cfg := defaultConfig()
	cfg.pgURL = pgURL(t)
	cfg.sink = "postgres"
	cfg.records = 5000
	cfg.instances = 2
	cfg.batch = 700
	cfg.timeout = 2 * time.Minute
	cfg.log = io.Discard
	var out bytes.Buffer
	res, err := run(context.Background(), cfg, &out)
	require.NoError(t, err, out.String())
	require.True(t, res.ok(), "%s\n%s", res.line(), out.String())
	require.Equal(t, 5000, res.in)
	require.Positive(t, res.dead)
	require.Contains(t, out.String(), "Postgres sink: rows into")

	// Without -keep the run leaves no rows of its group in the offsets
	// table.
	conn, err := pgx.Connect(context.Background(), cfg.pgURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var rows int
	require.NoError(t, conn.QueryRow(context.Background(),
		`SELECT count(*) FROM public.exactly_offsets WHERE consumer_group = $1`, res.group).Scan(&rows))
	require.Zero(t, rows, "the run's offsets rows were left behind")
}

func TestPostgresUnreachable(t *testing.T) {
	cfg := defaultConfig()
	cfg.sink = "postgres"
	cfg.pgURL = "postgres://nobody:secret@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"
	cfg.records = 10
	_, err := run(context.Background(), cfg, io.Discard)
	require.ErrorContains(t, err, "cannot reach Postgres at postgres://nobody:xxxxx@127.0.0.1:1/none")
	require.NotContains(t, err.Error(), "secret")
}
