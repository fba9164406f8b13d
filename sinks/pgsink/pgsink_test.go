package pgsink_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactlyonce/exactly/internal/pgtest"
	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/pgsink"
	"github.com/exactlyonce/exactly/sinks/sinktest"
)

const defaultPgURL = "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable"

// pgURL is the database the Postgres tests use: EXACTLY_PG_URL, or the
// local default that scripts/pg.sh sets up.
func pgURL() string {
	if u := os.Getenv("EXACTLY_PG_URL"); u != "" {
		return u
	}
	return defaultPgURL
}

// redacted is u without its password, for messages.
func redacted(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return pu.Redacted()
}

// pgConfig parses the test database's URL; tweaks adjust it.
func pgConfig(t testing.TB, tweaks ...func(*pgxpool.Config)) *pgxpool.Config {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(pgURL())
	require.NoError(t, err, "parsing EXACTLY_PG_URL")
	for _, f := range tweaks {
		f(cfg)
	}
	return cfg
}

// pgPool connects to the test database, closed when the test ends. If the
// database is unreachable the test is skipped, or fails when
// EXACTLY_REQUIRE_SERVICES=1.
func pgPool(t testing.TB, tweaks ...func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg := pgConfig(t, tweaks...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		if err = pool.Ping(ctx); err != nil {
			pool.Close()
		}
	}
	if err != nil {
		msg := "postgres unreachable at " + redacted(pgURL()) + ": " + err.Error()
		if os.Getenv("EXACTLY_REQUIRE_SERVICES") == "1" {
			t.Fatalf("%s (EXACTLY_REQUIRE_SERVICES=1; start it with scripts/pg.sh up)", msg)
		}
		t.Skipf("%s (start it with scripts/pg.sh up, or set EXACTLY_PG_URL)", msg)
	}
	t.Cleanup(pool.Close)
	return pool
}

// appName sets the pool's application_name, so a test can find (and
// terminate) exactly its connections.
func appName(name string) func(*pgxpool.Config) {
	return func(c *pgxpool.Config) { c.ConnConfig.RuntimeParams["application_name"] = name }
}

// maxConns sets the pool's size.
func maxConns(n int32) func(*pgxpool.Config) {
	return func(c *pgxpool.Config) { c.MaxConns = n }
}

// uniqueName is prefix with a random suffix, so concurrent runs of the
// same test against one server do not collide.
func uniqueName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

// testSchema creates a fresh schema, dropped with everything in it when
// the test ends.
func testSchema(t testing.TB, pool *pgxpool.Pool, name string) string {
	t.Helper()
	ctx := context.Background()
	id := pgx.Identifier{name}.Sanitize()
	_, err := pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+id+` CASCADE`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `CREATE SCHEMA `+id)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+id+` CASCADE`); err != nil {
			t.Logf("dropping schema %s: %v", name, err)
		}
	})
	return name
}

// terminate ends the backends of the given application name (except the
// caller's) and returns how many.
func terminate(t testing.TB, admin *pgxpool.Pool, app string) int {
	t.Helper()
	var n int
	err := admin.QueryRow(context.Background(),
		`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`, app).Scan(&n)
	require.NoError(t, err)
	return n
}

// pgProxy is a TCP proxy to Postgres that can lose a COMMIT or its answer,
// as a network failure at the worst moment would.
type pgProxy struct {
	ln     net.Listener
	target string
	mode   atomic.Int32 // proxyPass, proxyLoseAnswer or proxyLoseCommit: applies to the next COMMIT
	cut    atomic.Bool  // after losing, drop every connection and refuse new ones
	lost   chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	refused bool
}

const (
	proxyPass       = iota
	proxyLoseAnswer // forward COMMIT, swallow the server's answer, close the connection
	proxyLoseCommit // swallow COMMIT and close the connection: the server never sees it
	// proxyStallCommit swallows COMMIT and closes the client's side only:
	// the server's session stays open, idle in its transaction, as behind
	// a network partition that sends no reset.
	proxyStallCommit
)

func newPgProxy(t testing.TB, target string) *pgProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &pgProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, lost: make(chan struct{}, 1)}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// arm makes the next COMMIT suffer mode; with cut, the database becomes
// unreachable through the proxy right after.
func (p *pgProxy) arm(mode int32, cut bool) {
	p.cut.Store(cut)
	p.mode.Store(mode)
}

func (p *pgProxy) addr() string { return p.ln.Addr().String() }

// setDown makes the database unreachable through the proxy (every
// connection dropped, new ones refused), or reachable again.
func (p *pgProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refused = down
	if down {
		for c := range p.conns {
			_ = c.Close()
			delete(p.conns, c)
		}
	}
}

// via points a pool's connections at the proxy.
func (p *pgProxy) via(c *pgxpool.Config) {
	host, port, _ := net.SplitHostPort(p.addr())
	n, _ := strconv.Atoi(port)
	c.ConnConfig.Host, c.ConnConfig.Port = host, uint16(n)
	c.ConnConfig.TLSConfig, c.ConnConfig.Fallbacks = nil, nil
}

// pgTarget is host:port of the test database.
func pgTarget(t testing.TB) string {
	c := pgConfig(t)
	return net.JoinHostPort(c.ConnConfig.Host, strconv.Itoa(int(c.ConnConfig.Port)))
}

func (p *pgProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.refused {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *pgProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refused {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *pgProxy) serve(client net.Conn) {
	defer p.wg.Done()
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil || !p.track(server) {
		_ = client.Close()
		if server != nil {
			_ = server.Close()
		}
		return
	}
	var stalled atomic.Bool
	closeBoth := func() {
		_ = client.Close()
		if !stalled.Load() {
			_ = server.Close()
		}
	}
	var swallow atomic.Bool
	p.wg.Add(1)
	go func() { // server -> client
		defer p.wg.Done()
		defer closeBoth()
		for {
			typ, msg, err := readMsg(server, true)
			if err != nil {
				return
			}
			if swallow.Load() {
				if typ == 'Z' { // the COMMIT finished on the server; its answer is lost
					p.tripped()
					return
				}
				continue
			}
			if _, err := client.Write(msg); err != nil {
				return
			}
		}
	}()
	defer closeBoth()
	first := true
	for { // client -> server
		typ, msg, err := readMsg(client, !first)
		if err != nil {
			return
		}
		first = false
		if typ == 'Q' && isCommit(msg[5:]) {
			switch {
			case p.mode.CompareAndSwap(proxyLoseCommit, proxyPass):
				p.tripped()
				return
			case p.mode.CompareAndSwap(proxyStallCommit, proxyPass):
				stalled.Store(true) // the server side is closed with the proxy
				p.tripped()
				return
			case p.mode.CompareAndSwap(proxyLoseAnswer, proxyPass):
				swallow.Store(true)
			}
		}
		if _, err := server.Write(msg); err != nil {
			return
		}
	}
}

// tripped records a lost COMMIT and, if armed so, cuts the database off.
func (p *pgProxy) tripped() {
	if p.cut.Load() {
		p.mu.Lock()
		p.refused = true
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
	}
	select {
	case p.lost <- struct{}{}:
	default:
	}
}

func (p *pgProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	p.refused = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// readMsg reads one protocol message: typed (a type byte and a length) or,
// for a client's first message, untyped (a length only).
func readMsg(r io.Reader, typed bool) (byte, []byte, error) {
	hdr := 4
	if typed {
		hdr = 5
	}
	buf := make([]byte, hdr)
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, err
	}
	l := buf[hdr-4:]
	n := int(l[0])<<24 | int(l[1])<<16 | int(l[2])<<8 | int(l[3])
	if n < 4 || n > 1<<30 {
		return 0, nil, errors.New("bad message length")
	}
	msg := make([]byte, hdr+n-4)
	copy(msg, buf)
	if _, err := io.ReadFull(r, msg[hdr:]); err != nil {
		return 0, nil, err
	}
	if !typed {
		return 0, msg, nil
	}
	return buf[0], msg, nil
}

func isCommit(query []byte) bool {
	q := strings.TrimRight(string(query), "\x00; \n\t")
	return strings.EqualFold(strings.TrimSpace(q), "commit")
}

// sinkOn is the sink of the case's schema (made by h.Sink) on another pool.
func (h pgHarness) sinkOn(t testing.TB, pool *pgxpool.Pool, env sinktest.Env, opts ...pgsink.Opt) *pgsink.Sink {
	t.Helper()
	sink, err := pgsink.New(pool, append([]pgsink.Opt{pgsink.OffsetsTable(h.schema(env), "offsets")}, opts...)...)
	require.NoError(t, err)
	return sink
}

// storedNext is a partition's next_offset in the case's offsets table, -1
// without a row.
func (h pgHarness) storedNext(t testing.TB, env sinktest.Env, partition int32) int64 {
	t.Helper()
	next := int64(-1)
	err := h.pool.QueryRow(context.Background(),
		`SELECT next_offset FROM `+pgx.Identifier{h.schema(env), "offsets"}.Sanitize()+` WHERE consumer_group = $1 AND topic = $2 AND partition = $3`,
		env.Group, env.Input, partition).Scan(&next)
	if errors.Is(err, pgx.ErrNoRows) {
		return -1
	}
	require.NoError(t, err)
	return next
}

func TestPostgresOptions(t *testing.T) {
	pool, err := pgxpool.New(context.Background(), pgURL()) // lazy: never connects here
	require.NoError(t, err)
	defer pool.Close()

	_, err = pgsink.New(nil)
	require.Error(t, err)

	bad := []struct {
		name string
		opt  pgsink.Opt
	}{
		{"empty schema", pgsink.OffsetsTable("", "t")},
		{"empty table", pgsink.OffsetsTable("public", "")},
		{"qualified table", pgsink.OffsetsTable("public", "public.t")},
		{"too long", pgsink.OffsetsTable("public", strings.Repeat("x", 64))},
		{"NUL", pgsink.OffsetsTable("public", "a\x00b")},
		{"zero backoff", pgsink.RetryBackoff(0, time.Second)},
		{"backoff min > max", pgsink.RetryBackoff(2*time.Second, time.Second)},
		{"read only", pgsink.TxOptions(pgx.TxOptions{AccessMode: pgx.ReadOnly})},
		{"unknown isolation", pgsink.TxOptions(pgx.TxOptions{IsoLevel: "sometimes"})},
		{"negative idle timeout", pgsink.IdleInTransactionTimeout(-time.Second)},
		{"sub-millisecond idle timeout", pgsink.IdleInTransactionTimeout(time.Microsecond)},
		{"nil option", nil},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			_, err := pgsink.New(pool, c.opt)
			var ce *sinks.ConfigError
			require.ErrorAs(t, err, &ce)
			t.Log(err)
		})
	}

	s, err := pgsink.New(pool,
		pgsink.OffsetsTable("My Schema", `we"ird`),
		pgsink.MirrorToKafka(false),
		pgsink.StartOffset(kgo.NewOffset().AtEnd()),
		pgsink.RetryBackoff(time.Millisecond, time.Second),
		pgsink.TxOptions(pgx.TxOptions{IsoLevel: pgx.RepeatableRead}),
		pgsink.IdleInTransactionTimeout(0),
	)
	require.NoError(t, err)
	require.Equal(t, `"My Schema"."we""ird"`, s.Table(), "identifiers are quoted, not trusted")
	require.Contains(t, s.DDL(), `CREATE TABLE IF NOT EXISTS "My Schema"."we""ird"`)

	def, err := pgsink.New(pool)
	require.NoError(t, err)
	require.Equal(t, `"public"."exactly_offsets"`, def.Table())
	for _, col := range []string{"consumer_group text", "topic          text", "partition      integer", "next_offset    bigint      NOT NULL", "updated_at     timestamptz NOT NULL DEFAULT now()", "PRIMARY KEY (consumer_group, topic, partition)"} {
		require.Contains(t, def.DDL(), col)
	}
}

// An idle-in-transaction timeout that a transaction may reach while the
// Stage runs would end every slow batch's transaction (25P03), retried
// forever: pipeline.New refuses the combination before anything connects.
func TestPostgresIdleTimeoutMustOutlastTheTransaction(t *testing.T) {
	pool, err := pgxpool.New(context.Background(), pgURL()) // lazy: never connects here
	require.NoError(t, err)
	defer pool.Close()
	stage := pipeline.StageFunc[*pgsink.Writer](func(context.Context, *sinks.Batch, *pgsink.Writer) error { return nil })
	opts := []pipeline.Opt{pipeline.Brokers("127.0.0.1:1"), pipeline.Group("g"), pipeline.Topics("in"), pipeline.InstanceID("a"),
		pipeline.TransactionTimeout(10 * time.Second)}

	for _, idle := range []time.Duration{time.Second, 10 * time.Second} {
		sink, err := pgsink.New(pool, pgsink.IdleInTransactionTimeout(idle))
		require.NoError(t, err, "the sink alone cannot know the pipeline's budget")
		_, err = pipeline.New(sink, stage, opts...)
		var ce *sinks.ConfigError
		require.ErrorAs(t, err, &ce, "idle %v", idle)
		require.Equal(t, "pgsink.IdleInTransactionTimeout", ce.Option)
		require.Contains(t, ce.Reason, "TransactionTimeout 10s")
	}
	for _, idle := range []time.Duration{0, 11 * time.Second, time.Minute} {
		sink, err := pgsink.New(pool, pgsink.IdleInTransactionTimeout(idle))
		require.NoError(t, err)
		_, err = pipeline.New(sink, stage, opts...)
		require.NoError(t, err, "idle %v", idle)
	}
}

func TestPostgresMigrate(t *testing.T) {
	pool := pgPool(t)
	schema := testSchema(t, pool, uniqueName("exactly_mig"))
	ctx := context.Background()

	// Open refuses a missing table and says what to do.
	env := sinktest.NewEnv(t, 1, 0)
	missing, err := pgsink.New(pool, pgsink.OffsetsTable(schema, "nope"))
	require.NoError(t, err)
	_, err = missing.Open(ctx, sinktest.SessionConfig(env, "a"))
	require.ErrorContains(t, err, "does not exist")
	require.ErrorContains(t, err, "Migrate")

	// Migrating many times at once is fine; so is a new schema.
	newSchema := schema + "_new"
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+pgx.Identifier{newSchema}.Sanitize()+` CASCADE`)
	})
	for _, sch := range []string{schema, newSchema} {
		s, err := pgsink.New(pool, pgsink.OffsetsTable(sch, "offsets"))
		require.NoError(t, err)
		var wg sync.WaitGroup
		errs := make([]error, 5)
		for i := range errs {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = s.Migrate(ctx) }()
		}
		wg.Wait()
		require.NoError(t, errors.Join(errs...))
		require.NoError(t, s.Migrate(ctx), "idempotent")
		var cols []string
		rows, err := pool.Query(ctx, `SELECT column_name || ' ' || data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'offsets' ORDER BY ordinal_position`, sch)
		require.NoError(t, err)
		cols, err = pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.Equal(t, []string{"consumer_group text", "topic text", "partition integer", "next_offset bigint", "updated_at timestamp with time zone"}, cols)
	}
}

// TestPostgresTwoOwnersRace: two owners of one partition (a zombie and its
// replacement) commit the same batch at the same moment. Exactly one wins
// and every effect is there once — for a partition's first batch (both
// insert the offsets row) and for a later one (both update it).
func TestPostgresTwoOwnersRace(t *testing.T) {
	pool := pgPool(t)
	for _, precommit := range []bool{false, true} {
		name := "FirstBatch"
		if precommit {
			name = "LaterBatch"
		}
		t.Run(name, func(t *testing.T) {
			h := pgHarness{pool: pool}
			env := sinktest.NewEnv(t, 1, 40)
			sink := h.Sink(t, env)
			a := sinktest.Open(t, sink, sinktest.SessionConfig(env, "a"))
			from := int64(0)
			if precommit {
				require.NoError(t, sinktest.Commit(sinktest.Begin(t, h, env, a, sinktest.Poll(t, a, 10))))
				from = 10
			}
			abs := sinktest.Poll(t, a, 20)
			sinktest.PauseMember(t, env)
			b := sinktest.Open(t, sink, sinktest.SessionConfig(env, "b"))
			bbs := sinktest.Poll(t, b, 20)
			require.Equal(t, sinktest.IDs(abs), sinktest.IDs(bbs), "both owners hold the same batch")
			txs := []sinks.Txn[*pgsink.Writer]{
				sinktest.Begin(t, h, env, a, abs),
				sinktest.Begin(t, h, env, b, bbs),
			}
			var (
				wg    sync.WaitGroup
				start = make(chan struct{})
				errs  = make([]error, 2)
			)
			for i, tx := range txs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					errs[i] = sinktest.Commit(tx)
				}()
			}
			close(start)
			wg.Wait()
			won := 0
			for i, err := range errs {
				if err == nil {
					won++
					continue
				}
				require.True(t, sinks.IsRetryable(err), "the loser's error must be retryable: %v", err)
				require.ErrorIs(t, err, sinks.ErrAborted)
				t.Logf("owner %d lost: %v", i, err)
			}
			require.Equal(t, 1, won, "exactly one owner must win: %v", errs)
			sinktest.RequireEffects(t, h, env, sinktest.Range("in", 0, 0, from+20))
			require.Equal(t, from+20, h.storedNext(t, env, 0))
		})
	}
}

// TestPostgresConnectionLostBeforeCommit: the server ends the partition's
// connection after the Stage wrote and before COMMIT. Commit fails with a
// retryable error, nothing is visible, and the same records come again.
func TestPostgresConnectionLostBeforeCommit(t *testing.T) {
	app := uniqueApp("exactly-test-lost-before-commit")
	pool := pgPool(t, appName(app))
	admin := pgPool(t)
	h := pgHarness{pool: admin}
	env := sinktest.NewEnv(t, 1, 30)
	_ = h.Sink(t, env)
	sink := h.sinkOn(t, pool, env)
	a := sinktest.Open(t, sink, sinktest.SessionConfig(env, "a"))
	bs := sinktest.Poll(t, a, 30)
	tx := sinktest.Begin(t, h, env, a, bs)
	var pid uint32
	require.NoError(t, tx.Writer(bs[0]).Tx().QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&pid))
	_, err := admin.Exec(context.Background(), `SELECT pg_terminate_backend($1)`, pid)
	require.NoError(t, err)

	err = sinktest.Commit(tx)
	require.Error(t, err)
	require.True(t, sinks.IsRetryable(err), "a lost connection is retryable: %v", err)
	t.Logf("commit after the connection was killed: %v", err)
	sinktest.RequireEffects(t, h, env, nil)

	again := sinktest.Poll(t, a, 30)
	require.Equal(t, sinktest.IDs(bs), sinktest.IDs(again), "rewound to the committed offset")
	require.NoError(t, sinktest.Commit(sinktest.Begin(t, h, env, a, again)))
	sinktest.RequireEffects(t, h, env, sinktest.Range("in", 0, 0, 30))
}

// TestPostgresCrashBeforeCommit: an instance dies after writing, before
// COMMIT (its connections die and it stops heartbeating). Its replacement
// resumes exactly at the batch.
func TestPostgresCrashBeforeCommit(t *testing.T) {
	app := uniqueApp("exactly-test-crash-before-commit")
	pool := pgPool(t, appName(app))
	admin := pgPool(t)
	h := pgHarness{pool: admin}
	env := sinktest.NewEnv(t, 1, 50)
	sink := h.Sink(t, env)
	crashing := h.sinkOn(t, pool, env)
	a := sinktest.Open(t, crashing, sinktest.SessionConfig(env, "a"))
	require.NoError(t, sinktest.Commit(sinktest.Begin(t, h, env, a, sinktest.Poll(t, a, 10))))
	_ = sinktest.Begin(t, h, env, a, sinktest.Poll(t, a, 20))

	// The crash: the group stops hearing from it, its connections die.
	sinktest.PauseMember(t, env)
	require.Positive(t, terminate(t, admin, app))

	b := sinktest.Open(t, sink, sinktest.SessionConfig(env, "b"))
	bs := sinktest.Poll(t, b, 40)
	require.Equal(t, sinktest.Range("in", 0, 10, 50), sinktest.IDs(bs), "the replacement resumes at the uncommitted batch")
	require.NoError(t, sinktest.Commit(sinktest.Begin(t, h, env, b, bs)))
	sinktest.RequireEffects(t, h, env, sinktest.Range("in", 0, 0, 50))
	require.Equal(t, int64(50), h.storedNext(t, env, 0))
}

// TestPostgresUnknownCommitOutcome loses a COMMIT or its answer on the
// wire. The sink resolves the outcome from the database, never by
// guessing: an answer lost after the commit landed resolves as committed,
// a COMMIT that never arrived as not committed; and if the instance dies
// before it can find out, its replacement resumes exactly where the
// database says.
func TestPostgresUnknownCommitOutcome(t *testing.T) {
	admin := pgPool(t)
	proxy := newPgProxy(t, pgTarget(t))
	viaProxy := proxy.via

	t.Run("AnswerLostResolvedCommitted", func(t *testing.T) {
		pool := pgPool(t, viaProxy)
		h := pgHarness{pool: admin}
		env := sinktest.NewEnv(t, 1, 30)
		_ = h.Sink(t, env)
		a := sinktest.Open(t, h.sinkOn(t, pool, env), sinktest.SessionConfig(env, "a"))
		tx := sinktest.Begin(t, h, env, a, sinktest.Poll(t, a, 30))
		proxy.arm(proxyLoseAnswer, false)
		require.NoError(t, sinktest.Commit(tx), "the commit landed; the lost answer must resolve as committed")
		requireLost(t, proxy)
		sinktest.RequireEffects(t, h, env, sinktest.Range("in", 0, 0, 30))

		testkit.Produce(t, env.Brokers, env.Input, 10)
		bs := sinktest.Poll(t, a, 10)
		require.Equal(t, sinktest.Range("in", 0, 30, 40), sinktest.IDs(bs), "the session goes on after the batch")
		require.NoError(t, sinktest.Commit(sinktest.Begin(t, h, env, a, bs)))
		sinktest.RequireEffects(t, h, env, sinktest.Range("in", 0, 0, 40))
	})

	t.Run("CommitLostResolvedAborted", func(t *testing.T) {
		pool := pgPool(t, viaProxy)
		h := pgHarness{pool: admin}
		env := sinktest.NewEnv(t, 1, 30)
		_ = h.Sink(t, env)
		a := sinktest.Open(t, h.sinkOn(t, pool, env), sinktest.SessionConfig(env, "a"))
		bs := sinktest.Poll(t, a, 30)
		tx := sinktest.Begin(t, h, env, a, bs)
		proxy.arm(proxyLoseCommit, false)
		err := sinktest.Commit(tx)
		requireLost(t, proxy)
		require.Error(t, err, "the COMMIT never arrived; it must resolve as not committed")
		require.True(t, sinks.IsRetryable(err), "%v", err)
		require.ErrorIs(t, err, sinks.ErrOutcomeUnknown)
		t.Logf("commit: %v", err)
		sinktest.RequireEffects(t, h, env, nil)

		again := sinktest.Poll(t, a, 30)
		require.Equal(t, sinktest.IDs(bs), sinktest.IDs(again), "rewound to the committed offset")
		require.NoError(t, sinktest.Commit(sinktest.Begin(t, h, env, a, again)))
		sinktest.RequireEffects(t, h, env, sinktest.Range("in", 0, 0, 30))
	})

	t.Run("CommitStalledBackendTerminated", func(t *testing.T) {
		pool := pgPool(t, viaProxy)
		h := pgHarness{pool: admin}
		env := sinktest.NewEnv(t, 1, 30)
		_ = h.Sink(t, env)
		a := sinktest.Open(t, h.sinkOn(t, pool, env), sinktest.SessionConfig(env, "a"))
		bs := sinktest.Poll(t, a, 30)
		tx := sinktest.Begin(t, h, env, a, bs)
		// The server never gets the COMMIT and never learns that the
		// client is gone: the transaction stays "in progress" until the
		// sink terminates its backend, and then resolves as aborted.
		proxy.arm(proxyStallCommit, false)
		err := sinktest.Commit(tx)
		requireLost(t, proxy)
		require.Error(t, err)
		require.True(t, sinks.IsRetryable(err), "%v", err)
		require.ErrorIs(t, err, sinks.ErrOutcomeUnknown)
		require.ErrorContains(t, err, "resolved: not committed")
		t.Logf("commit: %v", err)
		sinktest.RequireEffects(t, h, env, nil)

		again := sinktest.Poll(t, a, 30)
		require.Equal(t, sinktest.IDs(bs), sinktest.IDs(again), "rewound to the committed offset")
		require.NoError(t, sinktest.Commit(sinktest.Begin(t, h, env, a, again)))
		sinktest.RequireEffects(t, h, env, sinktest.Range("in", 0, 0, 30))
	})

	t.Run("AnswerLostInstanceDies", func(t *testing.T) {
		pool := pgPool(t, viaProxy)
		h := pgHarness{pool: admin}
		env := sinktest.NewEnv(t, 1, 30)
		sink := h.Sink(t, env)
		a := sinktest.Open(t, h.sinkOn(t, pool, env), sinktest.SessionConfig(env, "a"))
		tx := sinktest.Begin(t, h, env, a, sinktest.Poll(t, a, 30))
		// The commit lands, its answer is lost, and the database
		// becomes unreachable for this instance: it cannot find out.
		proxy.arm(proxyLoseAnswer, true)
		err := sinktest.Commit(tx)
		requireLost(t, proxy)
		require.Error(t, err, "the outcome cannot be resolved without the database")
		require.True(t, sinks.IsRetryable(err), "%v", err)
		require.ErrorIs(t, err, sinks.ErrOutcomeUnknown)
		t.Logf("commit: %v", err)
		sinktest.Close(t, a) // it dies

		testkit.Produce(t, env.Brokers, env.Input, 10)
		b := sinktest.Open(t, sink, sinktest.SessionConfig(env, "b"))
		bs := sinktest.Poll(t, b, 10)
		require.Equal(t, sinktest.Range("in", 0, 30, 40), sinktest.IDs(bs), "the replacement resumes after the batch whose commit landed")
		require.NoError(t, sinktest.Commit(sinktest.Begin(t, h, env, b, bs)))
		sinktest.RequireEffects(t, h, env, sinktest.Range("in", 0, 0, 40))
	})
}

func requireLost(t *testing.T, p *pgProxy) {
	t.Helper()
	select {
	case <-p.lost:
	case <-time.After(sinktest.PollTimeout):
		t.Fatal("the proxy never saw the COMMIT it was armed to lose")
	}
}

// TestPostgresDatabaseDown: while the database is unreachable, newly
// assigned partitions are not consumed (their offsets cannot be loaded; the
// load is retried), and Begin fails with a retryable error and rewinds;
// once it is back, everything is processed exactly once.
func TestPostgresDatabaseDown(t *testing.T) {
	admin := pgPool(t)
	proxy := newPgProxy(t, pgTarget(t))
	pool := pgPool(t, proxy.via)
	h := pgHarness{pool: admin}
	env := sinktest.NewEnv(t, 1, 30)
	_ = h.Sink(t, env)
	sink := h.sinkOn(t, pool, env, pgsink.RetryBackoff(5*time.Millisecond, 50*time.Millisecond))

	// The database goes away just before the group assigns the partition.
	c := env.Cluster
	c.ControlKey(int16(kmsg.SyncGroup), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.DropControl()
		proxy.setDown(true)
		return nil, nil, false
	})
	a := sinktest.Open(t, sink, sinktest.SessionConfig(env, "a"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	fs, err := a.Poll(ctx, 100)
	cancel()
	require.NoError(t, err)
	require.Zero(t, fs.NumRecords(), "nothing is consumed before the partition's offset is loaded")

	proxy.setDown(false)
	bs := sinktest.Poll(t, a, 30)
	require.Equal(t, sinktest.Range("in", 0, 0, 30), sinktest.IDs(bs))

	proxy.setDown(true)
	_, err = a.Begin(context.Background(), bs)
	require.Error(t, err, "Begin without a database")
	require.True(t, sinks.IsRetryable(err), "%v", err)
	t.Logf("begin: %v", err)

	proxy.setDown(false)
	again := sinktest.Poll(t, a, 30)
	require.Equal(t, sinktest.IDs(bs), sinktest.IDs(again), "Begin's failure rewound the partition")
	require.NoError(t, sinktest.Commit(sinktest.Begin(t, h, env, a, again)))
	sinktest.RequireEffects(t, h, env, sinktest.Range("in", 0, 0, 30))
}

// TestPostgresTransactionalInput: an input written by transactional
// producers has offsets with no record (commit markers, aborted
// records). A batch then does not start at the stored next offset, and
// must commit anyway, and a new session must resume after it.
func TestPostgresTransactionalInput(t *testing.T) {
	pool := pgPool(t)
	h := pgHarness{pool: pool}
	env := sinktest.NewEnv(t, 1, 0)
	sink := h.Sink(t, env)
	produceTxns := func(txns, per int, abortEvery int) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...), kgo.DefaultProduceTopic(env.Input), kgo.TransactionalID("in-producer"))
		require.NoError(t, err)
		defer cl.Close()
		ctx := context.Background()
		for i := range txns {
			require.NoError(t, cl.BeginTransaction())
			for j := range per {
				require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i*per + j))}).FirstErr())
			}
			commit := abortEvery == 0 || (i+1)%abortEvery != 0
			require.NoError(t, cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)))
		}
	}
	produceTxns(6, 10, 3) // 40 visible records, a marker after each batch, 20 aborted

	a := sinktest.Open(t, sink, sinktest.SessionConfig(env, "a"))
	first := sinktest.Poll(t, a, 20) // offsets 0-9, 11-20: ends before a marker and an aborted transaction
	require.NoError(t, sinktest.Commit(sinktest.Begin(t, h, env, a, first)))
	sinktest.Close(t, a)

	b := sinktest.Open(t, sink, sinktest.SessionConfig(env, "b"))
	second := sinktest.Poll(t, b, 20)
	require.Greater(t, second[0].FirstOffset(), first[0].LastOffset()+1, "the batch starts past a gap")
	// Rolled back and polled again across the gap, then committed.
	require.NoError(t, sinktest.Rollback(sinktest.Begin(t, h, env, b, second)))
	again := sinktest.Poll(t, b, 20)
	require.Equal(t, sinktest.IDs(second), sinktest.IDs(again))
	require.NoError(t, sinktest.Commit(sinktest.Begin(t, h, env, b, again)))

	// More transactions while the session runs: it goes on across gaps.
	produceTxns(2, 10, 0)
	third := sinktest.Poll(t, b, 20)
	require.NoError(t, sinktest.Commit(sinktest.Begin(t, h, env, b, third)))
	all := append(append(sinktest.IDs(first), sinktest.IDs(again)...), sinktest.IDs(third)...)
	require.Len(t, all, 60)
	sinktest.RequireEffects(t, h, env, all)
	require.Equal(t, third[0].LastOffset()+1, h.storedNext(t, env, 0))
}

// pgRun is a pipeline writing its input's records as rows with CopyFrom,
// into a schema of its own.
type pgRun struct {
	t       *testing.T
	admin   *pgxpool.Pool
	brokers []string
	schema  string
	group   string
	n       int
	// maxRecords is the pipeline's MaxRecords: small makes many
	// transactions, so faults land in the middle of the stream.
	maxRecords int
}

func newPgRun(t *testing.T, partitions int32, n int) *pgRun {
	t.Helper()
	admin := pgPool(t)
	_, brokers := testkit.Cluster(t, partitions, "in")
	testkit.Produce(t, brokers, "in", n)
	schema := testSchema(t, admin, uniqueName("exactly_pipe_"+sqlIdent(t.Name())))
	_, err := admin.Exec(context.Background(), `CREATE TABLE `+pgx.Identifier{schema, "rows"}.Sanitize()+` (
		seq bigserial PRIMARY KEY, topic text NOT NULL, partition integer NOT NULL, "offset" bigint NOT NULL, value text NOT NULL)`)
	require.NoError(t, err)
	return &pgRun{t: t, admin: admin, brokers: brokers, schema: schema, group: "pipe", n: n, maxRecords: 10_000}
}

func sqlIdent(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() > 30 {
		return b.String()[b.Len()-30:]
	}
	return b.String()
}

// pipeline builds a pipeline instance on its own pool.
func (r *pgRun) pipeline(instance string, pool *pgxpool.Pool) *pipeline.Pipeline[*pgsink.Writer] {
	r.t.Helper()
	sink, err := pgsink.New(pool, pgsink.OffsetsTable(r.schema, "offsets"))
	require.NoError(r.t, err)
	require.NoError(r.t, sink.Migrate(context.Background()))
	rowsTable := pgx.Identifier{r.schema, "rows"}
	stage := pipeline.StageFunc[*pgsink.Writer](func(ctx context.Context, b *sinks.Batch, w *pgsink.Writer) error {
		rows := make([][]any, len(b.Records))
		for i, rec := range b.Records {
			rows[i] = []any{rec.Topic, rec.Partition, rec.Offset, string(rec.Value)}
		}
		_, err := w.CopyFrom(ctx, rowsTable, []string{"topic", "partition", "offset", "value"}, pgx.CopyFromRows(rows))
		return err
	})
	p, err := pipeline.New(sink, stage,
		pipeline.Brokers(r.brokers...),
		pipeline.Group(r.group),
		pipeline.Topics("in"),
		pipeline.InstanceID(instance),
		pipeline.MaxRecords(r.maxRecords),
		pipeline.MaxWait(50*time.Millisecond),
		pipeline.SessionTimeout(3*time.Second),
		pipeline.TransactionTimeout(2*time.Second),
		pipeline.HeartbeatInterval(300*time.Millisecond),
		pipeline.Backoff(5*time.Millisecond, 200*time.Millisecond),
		pipeline.Logger(sinktest.Logger()),
	)
	require.NoError(r.t, err)
	return p
}

// start runs p until the returned stop is called; stop returns Run's error.
func start(p *pipeline.Pipeline[*pgsink.Writer]) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return func() error { cancel(); return <-done }
}

// committed is how many input records the offsets table says are done.
func (r *pgRun) committed() int {
	var n int64
	err := r.admin.QueryRow(context.Background(),
		`SELECT coalesce(sum(next_offset), 0) FROM `+pgx.Identifier{r.schema, "offsets"}.Sanitize()+` WHERE consumer_group = $1`, r.group).Scan(&n)
	if err != nil {
		return -1 // the server may be restarting
	}
	return int(n)
}

// waitCommitted waits until at least n input records are committed.
func (r *pgRun) waitCommitted(n int, timeout time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for r.committed() < n {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out after %v: %d of %d records committed", timeout, r.committed(), n)
		}
		<-tick.C
	}
}

// verify checks by SQL that each input record has exactly one row, in
// offset order per partition, that the offsets table stands at the end of
// each partition, and (mirror) that the group's Kafka offsets do too.
func (r *pgRun) verify(mirror bool) {
	r.t.Helper()
	pgtest.VerifyRows(r.t, pgtest.Rows{Conn: []kgo.Opt{kgo.SeedBrokers(r.brokers...)}, Admin: r.admin,
		Schema: r.schema, Topic: "in", Group: r.group, N: r.n, Mirror: mirror})
}

func pgRecords(def int) int {
	if s := os.Getenv("EXACTLY_PG_RECORDS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return n
		}
	}
	return def
}

// TestPostgresPipeline runs the pipeline end to end into Postgres on a
// kfake input and checks the rows by SQL: each input record exactly once.
// EXACTLY_PG_RECORDS sets the input size of the baseline.
func TestPostgresPipeline(t *testing.T) {
	pgPool(t) // skip early without a database

	t.Run("Baseline", func(t *testing.T) {
		n := pgRecords(20_000)
		r := newPgRun(t, 4, n)
		pool := pgPool(t)
		p := r.pipeline("a", pool)
		began := time.Now()
		stop := start(p)
		r.waitCommitted(n, 2*time.Minute)
		took := time.Since(began)
		require.NoError(t, stop())
		st := p.Stats()
		t.Logf("%d records in %v: %.0f rows/s (%d transactions, %d aborted: %v)",
			n, took.Round(time.Millisecond), float64(n)/took.Seconds(), st.CommittedTxns, st.AbortedTxns, st.Aborts)
		r.verify(true)
	})

	t.Run("BackendsKilledMidRun", func(t *testing.T) {
		app := uniqueApp("exactly-test-pipeline-killed")
		n := 20_000
		r := newPgRun(t, 4, n)
		r.maxRecords = 500
		p := r.pipeline("a", pgPool(t, appName(app)))
		stop := start(p)
		r.waitCommitted(n*3/10, time.Minute)
		killed := terminate(t, r.admin, app)
		t.Logf("terminated %d backends at %d of %d records", killed, r.committed(), n)
		r.waitCommitted(n, 2*time.Minute)
		require.NoError(t, stop())
		t.Logf("stats: %+v", p.Stats())
		r.verify(true)
	})

	t.Run("TwoInstancesSmallPool", func(t *testing.T) {
		// Six partitions over a pool of two connections shared by two
		// instances: transactions need more connections than the pool
		// has, and partitions move between the instances twice.
		n := 30_000
		r := newPgRun(t, 6, n)
		r.maxRecords = 300
		pool := pgPool(t, maxConns(2))
		a, b := r.pipeline("a", pool), r.pipeline("b", pool)
		stopA := start(a)
		r.waitCommitted(n/5, time.Minute)
		stopB := start(b)
		r.waitCommitted(n*3/5, time.Minute)
		require.NoError(t, stopA())
		r.waitCommitted(n, 2*time.Minute)
		require.NoError(t, stopB())
		t.Logf("a: %+v", a.Stats())
		t.Logf("b: %+v", b.Stats())
		r.verify(true)
	})

	t.Run("ServerRestart", func(t *testing.T) {
		cmd := os.Getenv("EXACTLY_PG_RESTART")
		if cmd == "" {
			t.Skip("integration.TestPostgresServerRestart runs this under `make test`; to run it here too, set EXACTLY_PG_RESTART to the command that restarts the server (e.g. 'pg_ctlcluster 15 main restart -m immediate'); it disrupts everything else using that server")
		}
		n := 20_000
		r := newPgRun(t, 4, n)
		r.maxRecords = 500
		p := r.pipeline("a", pgPool(t))
		stop := start(p)
		r.waitCommitted(n*3/10, time.Minute)
		at := r.committed()
		began := time.Now()
		out, err := exec.Command("sh", "-c", cmd).CombinedOutput()
		require.NoError(t, err, "%s: %s", cmd, out)
		t.Logf("restarted the server at %d of %d records in %v", at, n, time.Since(began).Round(time.Millisecond))
		r.waitCommitted(n, 2*time.Minute)
		require.NoError(t, stop())
		t.Logf("stats: %+v", p.Stats())
		r.verify(true)
	})
}

// uniqueApp is an application_name no other test process shares: the tests
// terminate backends by it, and another run of the same tests against the
// same server (a second checkout, a parallel CI job) must not lose its own.
func uniqueApp(name string) string { return fmt.Sprintf("%s-%d", name, os.Getpid()) }
