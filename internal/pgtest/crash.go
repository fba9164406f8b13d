package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/exactlyonce/exactly/internal/eostest"
	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/pgsink"
)

// Environment of the worker process CrashRestart starts: the test binary
// again, running only the test that calls CrashWorker.
const (
	envWorker = "EXACTLY_PGT_WORKER" // brokers|input|group|schema|url
	envKill   = "EXACTLY_PGT_KILL"   // "stage:N", "commit:N" or empty
)

const crashInstance = "crashy"

// Kill points of the worker.
const (
	// KillInStage: SIGKILL inside the Stage of the N-th batch, after its
	// rows were written in the open Postgres transaction.
	KillInStage = "stage"
	// KillAfterCommit: SIGKILL right after the N-th COMMIT succeeded,
	// before anything else (the mirror to Kafka) ran.
	KillAfterCommit = "commit"
)

// CrashWorker is the body of the worker process of CrashRestart: a test
// binary that runs CrashRestart must have a test, named as CrashRestart is
// told, that calls CrashWorker and nothing else. Run in a normal test run it
// skips. The worker copies the input into the rows table in Postgres mode,
// prints "COMMIT n" after every committed transaction, kills itself with
// SIGKILL where EXACTLY_PGT_KILL says, and stops cleanly on SIGTERM.
func CrashWorker(t *testing.T) {
	spec := os.Getenv(envWorker)
	if spec == "" {
		t.Skip("runs only as pgtest.CrashRestart's child process")
	}
	f := strings.Split(spec, "|")
	require.Len(t, f, 5, envWorker)
	brokers, input, group, schema, url := strings.Split(f[0], ","), f[1], f[2], f[3], f[4]
	var mode string
	var at int64
	if k := os.Getenv(envKill); k != "" {
		m, n, ok := strings.Cut(k, ":")
		require.True(t, ok, envKill)
		mode = m
		v, err := strconv.Atoi(n)
		require.NoError(t, err, envKill)
		at = int64(v)
	}
	kill := func() { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL) }

	var batches, commits atomic.Int64
	copyRows := CopyStage(schema)
	stage := pipeline.StageFunc[*pgsink.Writer](func(ctx context.Context, b *sinks.Batch, w *pgsink.Writer) error {
		if err := copyRows.Process(ctx, b, w); err != nil {
			return err
		}
		if mode == KillInStage && batches.Add(1) == at {
			kill() // the rows are written, the transaction is open
		}
		return nil
	})
	env := eostest.Env{Brokers: brokers, Timeouts: eostest.KafkaTimeouts}
	pool := Pool(t, url)
	sink, err := pgsink.New(pool, pgsink.OffsetsTable(schema, "offsets"))
	require.NoError(t, err)
	p, err := pipeline.New(sink, stage, Opts(env, input, group, crashInstance, 200,
		pipeline.SessionTimeout(crashSessionTimeout),
		pipeline.TransactionTimeout(crashTransactionTimeout),
		pipeline.OnCommit(func(ci pipeline.CommitInfo) {
			if mode == KillAfterCommit && commits.Add(1) == at {
				kill() // committed; nothing after the commit ran
			}
			fmt.Printf("COMMIT %d\n", ci.Records)
		}),
	)...)
	require.NoError(t, err)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	fmt.Println("STARTED")
	require.NoError(t, p.Run(ctx))
	fmt.Println("STOPPED")
}

// The worker's group timeouts: longer than any wait of the test, so a
// restart that waited for the group to expire the dead member could not
// commit before the test gives up; its static instance id lets it take
// the dead member's place at once instead.
// (The transaction timeout only sets the Stage's budget in Postgres mode; it
// stays below pgsink's default IdleInTransactionTimeout.)
const (
	crashSessionTimeout     = 4 * time.Minute
	crashTransactionTimeout = 30 * time.Second
)

// startWorker runs workerTest in a child process against the rig.
func startWorker(t *testing.T, workerTest string, r *Rig, kill string) *testkit.Child {
	t.Helper()
	return testkit.StartChild(t, workerTest,
		envWorker+"="+strings.Join([]string{strings.Join(r.env.Brokers, ","), r.In, r.Group, r.Schema, r.URL}, "|"),
		envKill+"="+kill,
	)
}

// CrashRestart runs Postgres mode in a worker process and SIGKILLs it four
// times at the two worst moments — inside the Stage with its rows written
// and the transaction open, and right after a COMMIT — restarting it each
// time with the same instance id. After every kill, with no worker running,
// the rows table must hold exactly the records below the committed offsets
// (effects and offsets are one commit), and the restarted worker must commit
// again (it resumes from the offsets table and takes the dead member's
// place; the group would expire that one only after minutes). A final worker
// drains the input and stops on SIGTERM; the SQL verifier must find every
// input record exactly once, in order. workerTest names the test of the
// calling binary that runs CrashWorker.
func CrashRestart(t *testing.T, env eostest.Env, url, workerTest string) {
	require.Less(t, env.Timeouts.Progress, crashSessionTimeout)
	r := NewRig(t, env, url, 4)
	const n = 10_000
	r.Produce(n)
	// The sink creates its offsets table on Migrate; create it first so
	// the checks below can read it before the first worker ran.
	r.Sink(t, r.Admin)

	kills := []string{KillInStage + ":3", KillAfterCommit + ":3", KillInStage + ":2", KillAfterCommit + ":1"}
	for round, kill := range kills {
		before := r.Committed()
		w := startWorker(t, workerTest, r, kill)
		w.RequireKilled(t, env.Timeouts.Progress, fmt.Sprintf("round %d (%s)", round, kill))
		after := r.RequireCommittedPrefix()
		require.Greater(t, after, before, "round %d (%s): the worker committed nothing before it was killed", round, kill)
		t.Logf("round %d: killed at %s with %d of %d records committed", round, kill, after, n)
	}

	final := startWorker(t, workerTest, r, "")
	select {
	case <-final.Commits:
	case <-final.Done:
		t.Fatalf("the final worker exited: %v", final.Err)
	case <-time.After(env.Timeouts.Progress):
		t.Fatalf("the restarted worker committed nothing in %v: it did not take the dead member's place (session timeout %v)",
			env.Timeouts.Progress, crashSessionTimeout)
	}
	r.WaitCommitted(n)
	require.NoError(t, final.Cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-final.Done:
		require.NoError(t, final.Err, "the final worker must stop cleanly on SIGTERM")
	case <-time.After(env.Timeouts.Progress):
		t.Fatalf("the final worker did not stop within %v of SIGTERM", env.Timeouts.Progress)
	}
	r.Verify(n, false)
}

// RequireCommittedPrefix checks what must hold whenever no transaction is
// open: per partition, the rows table holds exactly one row for each
// offset below the committed next_offset and none at or above it. It
// returns the committed records.
func (r *Rig) RequireCommittedPrefix() int {
	t := r.t
	t.Helper()
	var bad int
	var problems []string
	rows, err := r.Admin.Query(context.Background(), `
		WITH o AS (SELECT partition, next_offset FROM `+pgx.Identifier{r.Schema, "offsets"}.Sanitize()+` WHERE consumer_group = $1 AND topic = $2),
		     c AS (SELECT partition, "offset", count(*) AS n FROM `+pgx.Identifier{r.Schema, "rows"}.Sanitize()+` GROUP BY partition, "offset")
		SELECT coalesce(c.partition, -1), coalesce(c."offset", -1), coalesce(c.n, 0), coalesce(o.next_offset, 0)
		FROM c FULL JOIN o ON c.partition = o.partition
		WHERE c.n IS NULL OR c.n <> 1 OR o.next_offset IS NULL OR c."offset" >= o.next_offset`, r.Group, r.In)
	require.NoError(t, err)
	var (
		p          int32
		off, c, no int64
	)
	_, err = pgx.ForEachRow(rows, []any{&p, &off, &c, &no}, func() error {
		if p == -1 { // a partition with committed offsets but no rows
			return nil
		}
		bad++
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf("partition %d offset %d: %d rows (next_offset %d)", p, off, c, no))
		}
		return nil
	})
	require.NoError(t, err)
	committed := r.Committed()
	var total int
	require.NoError(t, r.Admin.QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{r.Schema, "rows"}.Sanitize()).Scan(&total))
	require.Zero(t, bad, "the rows are not exactly the committed prefix:\n%s", strings.Join(problems, "\n"))
	require.Equal(t, committed, total, "rows vs committed offsets")
	return committed
}
