// Package pgtest runs exactly's Postgres mode end to end for the tests: a
// pipeline with the Postgres sink that copies each input record into a rows
// table, and an independent verifier that reads that table and the offsets
// table by SQL. It works on any eostest.Env (kfake or Apache Kafka) and any
// PostgreSQL, and it has the child-process crash test of Postgres mode
// (crash.go).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/eostest"
	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/pgsink"
)

// Pool connects to url, closed when the test ends; tweaks adjust the
// configuration. The test fails if the database does not answer.
func Pool(t testing.TB, url string, tweaks ...func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err, "parsing the Postgres URL")
	for _, f := range tweaks {
		f(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, pool.Ping(ctx), "Postgres does not answer")
	return pool
}

// Rig is a Postgres-mode scenario: an eostest.Rig's input topic and group,
// and a fresh schema holding the rows table and the offsets table.
type Rig struct {
	*eostest.Rig
	URL    string
	Schema string
	Admin  *pgxpool.Pool // for the verifier and the test's own queries

	t   *testing.T
	env eostest.Env
}

// NewRig creates the topics (see eostest.NewRig) and a schema of its own,
// dropped when the test ends, with the rows table
//
//	rows(seq bigserial primary key, topic, partition, "offset", value)
//
// and no unique key on (topic, partition, offset), so a duplicate shows.
func NewRig(t *testing.T, env eostest.Env, url string, parts int32) *Rig {
	t.Helper()
	admin := Pool(t, url)
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	schema := "exactly_pgt_" + ident(t.Name()) + "_" + hex.EncodeToString(rnd[:])
	ctx := context.Background()
	id := pgx.Identifier{schema}.Sanitize()
	_, err := admin.Exec(ctx, `CREATE SCHEMA `+id)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.Exec(ctx, `DROP SCHEMA IF EXISTS `+id+` CASCADE`); err != nil {
			t.Logf("dropping schema %s: %v", schema, err)
		}
	})
	_, err = admin.Exec(ctx, `CREATE TABLE `+pgx.Identifier{schema, "rows"}.Sanitize()+` (
		seq bigserial PRIMARY KEY, topic text NOT NULL, partition integer NOT NULL, "offset" bigint NOT NULL, value text NOT NULL)`)
	require.NoError(t, err)
	r := &Rig{Rig: eostest.NewRig(t, env, parts), URL: url, Schema: schema, Admin: admin, t: t, env: env}
	return r
}

// ident is s as a short SQL identifier fragment.
func ident(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	out := b.String()
	if len(out) > 24 {
		out = out[len(out)-24:]
	}
	return out
}

// Sink is the Postgres sink on pool with the rig's offsets table.
func (r *Rig) Sink(t testing.TB, pool *pgxpool.Pool, opts ...pgsink.Opt) *pgsink.Sink {
	t.Helper()
	sink, err := pgsink.New(pool, append([]pgsink.Opt{pgsink.OffsetsTable(r.Schema, "offsets")}, opts...)...)
	require.NoError(t, err)
	require.NoError(t, sink.Migrate(context.Background()))
	return sink
}

// CopyStage copies each record of a batch into the rows table with one
// CopyFrom, in offset order.
func CopyStage(schema string) pipeline.Stage[*pgsink.Writer] {
	rowsTable := pgx.Identifier{schema, "rows"}
	return pipeline.StageFunc[*pgsink.Writer](func(ctx context.Context, b *sinks.Batch, w *pgsink.Writer) error {
		rows := make([][]any, len(b.Records))
		for i, rec := range b.Records {
			rows[i] = []any{rec.Topic, rec.Partition, rec.Offset, string(rec.Value)}
		}
		_, err := w.CopyFrom(ctx, rowsTable, []string{"topic", "partition", "offset", "value"}, pgx.CopyFromRows(rows))
		return err
	})
}

// Opts are the pipeline options of a Postgres-mode instance: the env's
// brokers and timeouts, the rig's group and input; extra go last and win.
func (r *Rig) Opts(id string, maxRecords int, extra ...pipeline.Opt) []pipeline.Opt {
	return Opts(r.env, r.In, r.Group, id, maxRecords, extra...)
}

// Opts are the pipeline options of a Postgres-mode instance of group on
// input, with env's brokers and timeouts.
func Opts(env eostest.Env, input, group, id string, maxRecords int, extra ...pipeline.Opt) []pipeline.Opt {
	to := env.Timeouts
	o := []pipeline.Opt{
		pipeline.Brokers(env.Brokers...),
		pipeline.Group(group),
		pipeline.Topics(input),
		pipeline.InstanceID(id),
		pipeline.MaxRecords(maxRecords),
		pipeline.MaxWait(to.MaxWait),
		pipeline.SessionTimeout(to.Session),
		pipeline.TransactionTimeout(to.Transaction),
		pipeline.HeartbeatInterval(to.Heartbeat),
		pipeline.Backoff(5*time.Millisecond, 200*time.Millisecond),
		pipeline.StartTimeout(to.Progress),
		pipeline.Logger(logger()),
	}
	if len(env.ClientOpts) > 0 {
		o = append(o, pipeline.ClientOpts(env.ClientOpts...))
	}
	return append(o, extra...)
}

// Instance is a Postgres-mode pipeline running in a goroutine of the test.
type Instance struct {
	P      *pipeline.Pipeline[*pgsink.Writer]
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Start builds a Postgres-mode pipeline on pool that copies the input into
// the rows table, and runs it until Stop or the end of the test.
func (r *Rig) Start(id string, pool *pgxpool.Pool, maxRecords int, extra ...pipeline.Opt) *Instance {
	r.t.Helper()
	return r.StartStage(id, pool, maxRecords, CopyStage(r.Schema), extra...)
}

// StartStage is Start with a Stage of the test's own.
func (r *Rig) StartStage(id string, pool *pgxpool.Pool, maxRecords int, stage pipeline.Stage[*pgsink.Writer], extra ...pipeline.Opt) *Instance {
	r.t.Helper()
	p, err := pipeline.New(r.Sink(r.t, pool), stage, r.Opts(id, maxRecords, extra...)...)
	require.NoError(r.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	in := &Instance{P: p, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(in.done)
		in.err = p.Run(ctx)
	}()
	r.t.Cleanup(func() { _ = r.Stop(in) })
	return in
}

// Done is closed when Run returned.
func (in *Instance) Done() <-chan struct{} { return in.done }

// Err is what Run returned; valid once Done is closed.
func (in *Instance) Err() error { return in.err }

// Stop cancels Run and returns its error.
func (r *Rig) Stop(in *Instance) error {
	in.cancel()
	select {
	case <-in.done:
		return in.err
	case <-time.After(r.env.Timeouts.Progress):
		r.t.Errorf("Run did not return within %v of its context's end", r.env.Timeouts.Progress)
		return nil
	}
}

// Committed is how many input records the offsets table says are done;
// -1 if it cannot be read (the server may be restarting).
func (r *Rig) Committed() int {
	var n int64
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := r.Admin.QueryRow(ctx, `SELECT coalesce(sum(next_offset), 0) FROM `+
		pgx.Identifier{r.Schema, "offsets"}.Sanitize()+` WHERE consumer_group = $1 AND topic = $2`, r.Group, r.In).Scan(&n)
	if err != nil {
		return -1
	}
	return int(n)
}

// WaitCommitted waits until at least n input records are committed.
func (r *Rig) WaitCommitted(n int) {
	r.t.Helper()
	testkit.WaitFor(r.t, r.env.Timeouts.Progress, fmt.Sprintf("%d records committed to Postgres", n), func() bool {
		return r.Committed() >= n
	})
}

// Verify checks by SQL, independently of the sink, that the rows table
// holds exactly one row per input record (read from the input topic's end
// offsets), written in offset order per partition, and that the offsets
// table stands at the end of every partition. With mirror it checks that
// the group's Kafka offsets do too.
func (r *Rig) Verify(n int, mirror bool) {
	r.t.Helper()
	VerifyRows(r.t, Rows{Conn: r.env.Conn(), Admin: r.Admin, Schema: r.Schema, Topic: r.In, Group: r.Group,
		N: n, Mirror: mirror, MirrorWait: r.env.Timeouts.Progress})
}

// Rows is what VerifyRows checks: a table Schema."rows" (topic, partition,
// "offset", seq) written by a Postgres-mode pipeline of Group from Topic, and
// the offsets table Schema."offsets".
type Rows struct {
	Conn   []kgo.Opt     // to read the input's end offsets (and the mirror)
	Admin  *pgxpool.Pool // to read the tables
	Schema string
	Topic  string
	Group  string
	N      int  // input records
	Mirror bool // also check the offsets the sink mirrored to the group in Kafka
	// MirrorWait is how long the mirror may take to catch up; 0 checks
	// it once, at once.
	MirrorWait time.Duration
}

// VerifyRows is the SQL verifier: every input record has exactly one row,
// rows are in offset order within each partition with no gap, the offsets
// table stands at the end of each partition, and (with Mirror) so do the
// group's offsets in Kafka.
func VerifyRows(t testing.TB, v Rows) {
	t.Helper()
	ctx := context.Background()
	cl, err := kgo.NewClient(v.Conn...)
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, v.Topic)
	require.NoError(t, err)
	require.NoError(t, ends.Error())
	want := map[int32]int64{}
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			total += o.Offset
		}
	})
	require.Equal(t, int64(v.N), total, "input records")

	rowsT := pgx.Identifier{v.Schema, "rows"}.Sanitize()
	var rows, distinct, foreign int
	require.NoError(t, v.Admin.QueryRow(ctx, `SELECT count(*), count(DISTINCT (topic, partition, "offset")), count(*) FILTER (WHERE topic <> $1) FROM `+rowsT, v.Topic).
		Scan(&rows, &distinct, &foreign))
	require.Zero(t, foreign, "rows of another topic")
	require.Equal(t, rows-distinct, 0, "duplicate rows: %d", rows-distinct)
	require.Equal(t, v.N, distinct, "missing rows: %d", v.N-distinct)
	var disorder int
	require.NoError(t, v.Admin.QueryRow(ctx, `SELECT count(*) FROM (
		SELECT "offset" < lag("offset") OVER (PARTITION BY topic, partition ORDER BY seq) AS back FROM `+rowsT+`) x WHERE back`).Scan(&disorder))
	require.Zero(t, disorder, "rows written out of offset order within a partition")
	got := map[int32]int64{}
	res, err := v.Admin.Query(ctx, `SELECT partition, count(*), min("offset"), max("offset") FROM `+rowsT+` GROUP BY partition`)
	require.NoError(t, err)
	var (
		p         int32
		c, lo, hi int64
	)
	_, err = pgx.ForEachRow(res, []any{&p, &c, &lo, &hi}, func() error {
		require.Equal(t, int64(0), lo, "partition %d starts at 0", p)
		require.Equal(t, c-1, hi, "partition %d has no gap", p)
		got[p] = c
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, want, got, "rows per partition match the input")

	offs, err := v.Admin.Query(ctx, `SELECT partition, next_offset FROM `+pgx.Identifier{v.Schema, "offsets"}.Sanitize()+
		` WHERE consumer_group = $1 AND topic = $2`, v.Group, v.Topic)
	require.NoError(t, err)
	stored := map[int32]int64{}
	var next int64
	_, err = pgx.ForEachRow(offs, []any{&p, &next}, func() error { stored[p] = next; return nil })
	require.NoError(t, err)
	require.Equal(t, want, stored, "the offsets table stands at the end of each partition")

	if v.Mirror {
		mirrored := func() map[int32]int64 {
			fetched, err := adm.FetchOffsets(ctx, v.Group)
			require.NoError(t, err)
			kafka := map[int32]int64{}
			fetched.Each(func(o kadm.OffsetResponse) {
				if o.Topic == v.Topic {
					kafka[o.Partition] = o.At
				}
			})
			return kafka
		}
		if v.MirrorWait > 0 {
			testkit.WaitFor(t, v.MirrorWait, "the offsets mirrored to Kafka", func() bool {
				return fmt.Sprint(mirrored()) == fmt.Sprint(want)
			})
		} else {
			require.Equal(t, want, mirrored(), "the offsets mirrored to Kafka")
		}
	}
	t.Logf("SQL verifier: %d input records, %d rows, 0 duplicates, 0 missing, in order; offsets at %v", v.N, rows, stored)
}

// logger discards, unless EXACTLY_TEST_LOG names a level (debug, info,
// warn): then it logs to stderr.
func logger() *slog.Logger {
	lvl, ok := os.LookupEnv("EXACTLY_TEST_LOG")
	if !ok {
		return slog.New(slog.DiscardHandler)
	}
	var l slog.Level
	_ = l.UnmarshalText([]byte(lvl))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
