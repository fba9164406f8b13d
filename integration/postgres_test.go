package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/exactlyonce/exactly/internal/pgtest"
	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/pgsink"
)

// TestPostgresCrashWorker is not a test: it is the worker process that
// TestPostgresCrashRestart starts and SIGKILLs.
func TestPostgresCrashWorker(t *testing.T) { pgtest.CrashWorker(t) }

// TestPostgresCrashRestart: a Postgres-mode worker process SIGKILLed inside
// its Stage and right after a COMMIT, four times, restarted each time, on
// Apache Kafka; verified by SQL. See pgtest.CrashRestart.
func TestPostgresCrashRestart(t *testing.T) {
	url := PGURL(t)
	pgtest.CrashRestart(t, kafkaEnv(t), url, "TestPostgresCrashWorker")
}

// TestPostgresPipeline runs Postgres mode end to end on Apache Kafka: two
// instances, the second joining mid-stream and the first leaving, copy the
// input into a table; the SQL verifier must find every record once, in
// order, and the offsets mirrored to Kafka.
func TestPostgresPipeline(t *testing.T) {
	url := PGURL(t)
	env := kafkaEnv(t)
	r := pgtest.NewRig(t, env, url, 4)
	n := env.Records
	r.Produce(n)
	pool := pgtest.Pool(t, url)
	a := r.Start("a", pool, 500)
	r.WaitCommitted(n / 4)
	b := r.Start("b", pool, 500)
	r.WaitCommitted(n / 2)
	require.NoError(t, r.Stop(a))
	r.WaitCommitted(n)
	require.NoError(t, r.Stop(b))
	t.Logf("a: %+v", a.P.Stats())
	t.Logf("b: %+v", b.P.Stats())
	r.Verify(n, true)
}

// TestPostgresServerRestart restarts the PostgreSQL server with
// `pg_ctlcluster VERSION NAME restart -m immediate` (a crash: every backend
// is killed, open transactions and COMMITs in flight included, then crash
// recovery) while a Postgres-mode pipeline on Apache Kafka is mid-stream. The
// pipeline must ride it out — Run keeps going, the transaction the test
// holds open across the restart fails — and the SQL verifier must find
// every input record once, in order. EXACTLY_PG_RESTART overrides the
// command. It disrupts every other user of the server, which is why it lives
// here: `make test` runs the integration tests after the unit tests, and the
// tests of this package run one at a time.
func TestPostgresServerRestart(t *testing.T) {
	url := PGURL(t)
	restart := pgRestartCommand(t, url)
	env := kafkaEnv(t)
	r := pgtest.NewRig(t, env, url, 4)
	n := 2 * env.Records
	r.Produce(n)
	// One transaction is held open, its rows written, when the server
	// goes down: the restart must kill it, not land between transactions.
	var (
		held    = make(chan struct{})
		release = make(chan struct{})
		once    sync.Once
	)
	copyRows := pgtest.CopyStage(r.Schema)
	stage := pipeline.StageFunc[*pgsink.Writer](func(ctx context.Context, b *sinks.Batch, w *pgsink.Writer) error {
		if err := copyRows.Process(ctx, b, w); err != nil {
			return err
		}
		if r.Committed() < n*3/10 {
			return nil
		}
		hold := false
		once.Do(func() { hold = true })
		if !hold {
			return nil
		}
		close(held)
		select {
		case <-release:
			return nil // and the commit meets a dead connection
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	in := r.StartStage("a", pgtest.Pool(t, url), 250, stage)
	select {
	case <-held:
	case <-in.Done():
		t.Fatalf("Run stopped before the held transaction: %v", in.Err())
	case <-time.After(env.Timeouts.Progress):
		t.Fatalf("no transaction was held within %v", env.Timeouts.Progress)
	}

	started := func() time.Time {
		var at time.Time
		testkit.WaitFor(t, env.Timeouts.Progress, "the server to answer", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return r.Admin.QueryRow(ctx, `SELECT pg_postmaster_start_time()`).Scan(&at) == nil
		})
		return at
	}
	before := started()
	at := r.Committed()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sh", "-c", restart).CombinedOutput()
	require.NoError(t, err, "%s: %s", restart, out)
	require.True(t, started().After(before), "the server did not restart")
	t.Logf("restarted the server (%s) at %d of %d records committed", restart, at, n)
	close(release)
	select {
	case <-in.Done():
		t.Fatalf("Run stopped after the server restart: %v", in.Err())
	default:
	}
	r.WaitCommitted(n)
	require.NoError(t, r.Stop(in))
	st := in.P.Stats()
	t.Logf("stats: %+v", st)
	require.Positive(t, st.AbortedTxns+st.UnknownOutcomes, "the transaction held open across the restart did not fail")
	r.Verify(n, true)
}

// pgRestartCommand is EXACTLY_PG_RESTART, or the pg_ctlcluster command that
// restarts (immediately) the Debian cluster serving url's port.
func pgRestartCommand(t *testing.T, url string) string {
	t.Helper()
	if cmd := os.Getenv("EXACTLY_PG_RESTART"); cmd != "" {
		return cmd
	}
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	if cfg.Host != "127.0.0.1" && cfg.Host != "localhost" && !strings.HasPrefix(cfg.Host, "/") {
		serviceUnavailable(t, "PostgreSQL at %s is not local: set EXACTLY_PG_RESTART to the command that restarts it", redactURL(url))
	}
	out, err := exec.Command("pg_lsclusters", "--no-header").Output()
	if err != nil {
		serviceUnavailable(t, "pg_lsclusters: %v: set EXACTLY_PG_RESTART to the command that restarts the server", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[2] == strconv.Itoa(int(cfg.Port)) && strings.HasPrefix(f[3], "online") {
			return fmt.Sprintf("pg_ctlcluster %s %s restart -m immediate", f[0], f[1])
		}
	}
	serviceUnavailable(t, "no online cluster on port %d in pg_lsclusters:\n%s", cfg.Port, out)
	return ""
}
