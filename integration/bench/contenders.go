package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
	"github.com/exactlyonce/exactly/sinks/pgsink"
)

// childStats is what a Go contender writes to its -stats file when it stops:
// the transaction commit latencies it measured (ms), if it has
// transactions.
type childStats struct {
	Commits  int       `json:"commits"`
	CommitMS []float64 `json:"commit_ms,omitempty"`
	// TookMS are exactly's CommitInfo.Took (first poll of the batch → end
	// of its commit) and StageMS its Stage time, per transaction.
	TookMS  []float64 `json:"took_ms,omitempty"`
	StageMS []float64 `json:"stage_ms,omitempty"`
	// PollMS is exactly's PollInfo.Took per batch: first poll → batch
	// complete (the rest of TookMS is Begin, Stage and commit).
	PollMS []float64 `json:"poll_ms,omitempty"`
	// BeginMS is exactly-pg's Session.Begin per transaction (one
	// connection and BEGIN per partition).
	BeginMS []float64 `json:"begin_ms,omitempty"`
	// RestMS is what a transaction's Took leaves after its poll, Stage and
	// commit: Begin, starting the Stage calls, the loop's bookkeeping.
	RestMS    []float64 `json:"rest_ms,omitempty"`
	AbortedTx int64     `json:"aborted_txns"`
}

// commitLog collects commit latencies, bounded so a long run cannot grow
// without limit.
type commitLog struct {
	mu       sync.Mutex
	st       childStats
	lastPoll time.Duration // of the batch being committed (OnPolled runs before its commit)
}

const maxCommitSamples = 1 << 20

func (c *commitLog) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Commits++
	if len(c.st.CommitMS) < maxCommitSamples {
		c.st.CommitMS = append(c.st.CommitMS, float64(d.Microseconds())/1000)
	}
}

// took records one transaction's time from the start of its poll to its
// commit, and its Stage time.
func (c *commitLog) took(took, stage time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.st.TookMS) < maxCommitSamples {
		c.st.TookMS = append(c.st.TookMS, float64(took.Microseconds())/1000)
		c.st.StageMS = append(c.st.StageMS, float64(stage.Microseconds())/1000)
	}
}

// OnPolled implements pipeline.HookPolled.
func (c *commitLog) OnPolled(pi pipeline.PollInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastPoll = pi.Took
	if len(c.st.PollMS) < maxCommitSamples {
		c.st.PollMS = append(c.st.PollMS, float64(pi.Took.Microseconds())/1000)
	}
}

// contenderFlags are the flags of `bench contender`.
type contenderFlags struct {
	kind       string
	brokers    string
	in, out    string
	group      string
	batch      int
	maxWait    time.Duration
	pgURL      string
	pgSchema   string
	rowsTable  string
	statsPath  string
	cpuProfile string
	// Diagnostics: exactly-pg's MirrorToKafka and pipeline.Concurrency,
	// and pgraw's per-partition transactions.
	mirror      bool
	concurrency int
	perTx       bool
	fetchPart   int
}

// copyRecord is the transform of every contender: the same key, value and
// headers, to the output topic (Kafka Streams' `stream(in).to(out)` does the
// same).
func copyRecord(out string, r *kgo.Record) *kgo.Record {
	return &kgo.Record{Topic: out, Key: r.Key, Value: r.Value, Headers: r.Headers}
}

func runContender(args []string) error {
	var f contenderFlags
	fs := flag.NewFlagSet("contender", flag.ContinueOnError)
	fs.StringVar(&f.kind, "kind", "", "alo, gts, exactly, exactly-pg, pgraw")
	fs.StringVar(&f.brokers, "brokers", "", "seed broker")
	fs.StringVar(&f.in, "in", "", "input topic")
	fs.StringVar(&f.out, "out", "", "output topic")
	fs.StringVar(&f.group, "group", "", "consumer group")
	fs.IntVar(&f.batch, "batch", 0, "records per poll / transaction (0: the contender's default)")
	fs.DurationVar(&f.maxWait, "maxwait", 0, "exactly: pipeline.MaxWait (0: default)")
	fs.StringVar(&f.pgURL, "pg", "", "Postgres URL")
	fs.StringVar(&f.pgSchema, "pgschema", "exactly_bench", "Postgres schema")
	fs.StringVar(&f.rowsTable, "rows", "", "Postgres result table")
	fs.StringVar(&f.statsPath, "stats", "", "write childStats JSON here on exit")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile here")
	fs.BoolVar(&f.mirror, "mirror", true, "exactly-pg: pgsink.MirrorToKafka")
	fs.IntVar(&f.concurrency, "concurrency", 0, "exactly, exactly-pg: pipeline.Concurrency (0: default)")
	fs.IntVar(&f.fetchPart, "fetchpart", 0, "exactly, exactly-pg: kgo.FetchMaxPartitionBytes through pipeline.ClientOpts (0: kgo's 1 MiB)")
	fs.BoolVar(&f.perTx, "pertx", false, "pgraw: one transaction per partition, on a connection each, at once (exactly's shape)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	// A contender never outlives a lost driver by much.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); _ = pf.Close() }()
	}
	var cl commitLog
	var err error
	switch f.kind {
	case "alo":
		err = runALO(ctx, f)
	case "gts":
		err = runGTS(ctx, f, &cl)
	case "exactly":
		err = runExactly(ctx, f, &cl)
	case "exactly-pg":
		err = runExactlyPG(ctx, f, &cl)
	case "pgraw":
		err = runPGRaw(ctx, f, &cl)
	default:
		err = fmt.Errorf("unknown contender kind %q", f.kind)
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if f.statsPath != "" {
		cl.mu.Lock()
		data, _ := json.Marshal(cl.st)
		cl.mu.Unlock()
		if werr := os.WriteFile(f.statsPath, data, 0o644); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

func batchOr(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}

// runALO is the plain at-least-once loop: poll → produce each copy
// asynchronously → flush → commit the poll's offsets.
func runALO(ctx context.Context, f contenderFlags) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(f.brokers),
		kgo.ConsumerGroup(f.group),
		kgo.ConsumeTopics(f.in),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	batch := batchOr(f.batch, 50_000)
	var perr error
	var mu sync.Mutex
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			perr = err
			mu.Unlock()
		}
	}
	for ctx.Err() == nil {
		fs := cl.PollRecords(ctx, batch)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := fs.Err(); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		fs.EachRecord(func(r *kgo.Record) { cl.Produce(ctx, copyRecord(f.out, r), promise) })
		if err := cl.Flush(ctx); err != nil {
			return err
		}
		mu.Lock()
		e := perr
		mu.Unlock()
		if e != nil {
			return fmt.Errorf("produce: %w", e)
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
	return ctx.Err()
}

// runGTS is a minimal GroupTransactSession loop: poll → Begin → produce →
// End(TryCommit), retrying nothing but what End itself decides.
func runGTS(ctx context.Context, f contenderFlags, log *commitLog) error {
	s, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(f.brokers),
		kgo.ConsumerGroup(f.group),
		kgo.ConsumeTopics(f.in),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.TransactionalID(f.group+"-txn"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.TransactionTimeout(10*time.Second),
		kgo.SessionTimeout(12*time.Second),
	)
	if err != nil {
		return err
	}
	defer s.Close()
	batch := batchOr(f.batch, 50_000)
	for ctx.Err() == nil {
		fs := s.PollRecords(ctx, batch)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := fs.Err(); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		if fs.NumRecords() == 0 {
			continue
		}
		if err := s.Begin(); err != nil {
			return err
		}
		var perr error
		var mu sync.Mutex
		fs.EachRecord(func(r *kgo.Record) {
			s.Produce(ctx, copyRecord(f.out, r), func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					perr = err
					mu.Unlock()
				}
			})
		})
		start := time.Now()
		// End flushes; an error of a produce makes it abort.
		committed, err := s.End(ctx, kgo.TransactionEndTry(perr == nil))
		if err != nil {
			return fmt.Errorf("end: %w", err)
		}
		if committed {
			log.add(time.Since(start))
		} else {
			log.mu.Lock()
			log.st.AbortedTx++
			log.mu.Unlock()
		}
	}
	return ctx.Err()
}

func exactlyOpts(f contenderFlags, log *commitLog) []pipeline.Opt {
	opts := []pipeline.Opt{
		pipeline.Brokers(f.brokers),
		pipeline.Group(f.group),
		pipeline.Topics(f.in),
		pipeline.InstanceID("bench"),
		pipeline.Logger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
		pipeline.OnCommit(func(ci pipeline.CommitInfo) {
			log.add(ci.Commit)
			log.took(ci.Took, ci.Stage)
			log.mu.Lock()
			if len(log.st.RestMS) < maxCommitSamples {
				rest := ci.Took - log.lastPoll - ci.Stage - ci.Commit
				log.st.RestMS = append(log.st.RestMS, float64(rest.Microseconds())/1000)
			}
			log.mu.Unlock()
		}),
		pipeline.Hooks(log),
	}
	if f.batch > 0 {
		opts = append(opts, pipeline.MaxRecords(f.batch))
	}
	if f.maxWait > 0 {
		opts = append(opts, pipeline.MaxWait(f.maxWait))
	}
	if f.concurrency > 0 {
		opts = append(opts, pipeline.Concurrency(f.concurrency))
	}
	if f.fetchPart > 0 {
		opts = append(opts, pipeline.ClientOpts(kgo.FetchMaxPartitionBytes(int32(f.fetchPart))))
	}
	return opts
}

// runExactly is exactly in Kafka mode with a copy Stage.
func runExactly(ctx context.Context, f contenderFlags, log *commitLog) error {
	out := f.out
	stage := pipeline.StageFunc[*kafkasink.Writer](func(_ context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
		for _, r := range b.Records {
			w.Produce(copyRecord(out, r))
		}
		return nil
	})
	p, err := pipeline.New(kafkasink.New(), stage, exactlyOpts(f, log)...)
	if err != nil {
		return err
	}
	err = p.Run(ctx)
	log.mu.Lock()
	log.st.AbortedTx = int64(p.Stats().AbortedTxns)
	log.mu.Unlock()
	return err
}

var rowColumns = []string{"part", "off", "key", "value"}

func copyRows(recs []*kgo.Record) pgx.CopyFromSource {
	return pgx.CopyFromSlice(len(recs), func(i int) ([]any, error) {
		r := recs[i]
		return []any{r.Partition, r.Offset, r.Key, r.Value}, nil
	})
}

// runExactlyPG is exactly in Postgres mode: each partition's batch is
// CopyFrom'd into the rows table in the transaction that moves its offset.
func runExactlyPG(ctx context.Context, f contenderFlags, log *commitLog) error {
	cfg, err := pgxpool.ParseConfig(f.pgURL)
	if err != nil {
		return err
	}
	cfg.MaxConns = 12
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	sink, err := pgsink.New(pool, pgsink.OffsetsTable(f.pgSchema, "exactly_offsets"), pgsink.MirrorToKafka(f.mirror))
	if err != nil {
		return err
	}
	if err := sink.Migrate(ctx); err != nil {
		return err
	}
	table := pgx.Identifier{f.pgSchema, f.rowsTable}
	stage := pipeline.StageFunc[*pgsink.Writer](func(ctx context.Context, b *sinks.Batch, w *pgsink.Writer) error {
		_, err := w.CopyFrom(ctx, table, rowColumns, copyRows(b.Records))
		return err
	})
	p, err := pipeline.New[*pgsink.Writer](timedPG{Sink: sink, log: log}, stage, exactlyOpts(f, log)...)
	if err != nil {
		return err
	}
	return p.Run(ctx)
}

// timedPG is the Postgres sink with its sessions' Begin timed. The sink's
// other methods (CheckConfig, ConsumesFromKafka) are promoted, so the
// pipeline sees the same sink.
type timedPG struct {
	*pgsink.Sink
	log *commitLog
}

func (t timedPG) Open(ctx context.Context, cfg sinks.SessionConfig) (sinks.Session[*pgsink.Writer], error) {
	s, err := t.Sink.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return timedSession{Session: s, log: t.log}, nil
}

type timedSession struct {
	sinks.Session[*pgsink.Writer]
	log *commitLog
}

// EndBatchWhenDrained forwards the Postgres session's answer to the
// pipeline, which finds it by type assertion on the session.
func (t timedSession) EndBatchWhenDrained() bool {
	e, ok := t.Session.(interface{ EndBatchWhenDrained() bool })
	return ok && e.EndBatchWhenDrained()
}

func (t timedSession) Begin(ctx context.Context, batches []*sinks.Batch) (sinks.Txn[*pgsink.Writer], error) {
	start := time.Now()
	tx, err := t.Session.Begin(ctx, batches)
	t.log.mu.Lock()
	if len(t.log.st.BeginMS) < maxCommitSamples {
		t.log.st.BeginMS = append(t.log.st.BeginMS, float64(time.Since(start).Microseconds())/1000)
	}
	t.log.mu.Unlock()
	return tx, err
}

// runPGRaw is the raw pgx loop a user would write by hand: offsets loaded
// from Postgres on assignment; per poll one transaction with one CopyFrom of
// the rows and an upsert of each partition's next offset.
func runPGRaw(ctx context.Context, f contenderFlags, log *commitLog) error {
	conn, err := pgx.Connect(ctx, f.pgURL)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	offsets := pgx.Identifier{f.pgSchema, "raw_offsets"}.Sanitize()
	table := pgx.Identifier{f.pgSchema, f.rowsTable}
	var loadErr error
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(f.brokers),
		kgo.ConsumerGroup(f.group),
		kgo.ConsumeTopics(f.in),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(func(ctx context.Context, cl *kgo.Client, as map[string][]int32) {
			rows, err := conn.Query(ctx, `SELECT partition, next_offset FROM `+offsets+` WHERE grp = $1 AND topic = $2`, f.group, f.in)
			if err != nil {
				loadErr = err
				return
			}
			at := map[int32]kgo.EpochOffset{}
			for rows.Next() {
				var p int32
				var o int64
				if err := rows.Scan(&p, &o); err != nil {
					loadErr = err
					return
				}
				at[p] = kgo.EpochOffset{Epoch: -1, Offset: o}
			}
			if err := rows.Err(); err != nil {
				loadErr = err
				return
			}
			if len(at) > 0 {
				cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{f.in: at})
			}
		}),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	defer cl.AllowRebalance() // before Close: a blocked rebalance would hang it
	var pool *pgxpool.Pool
	if f.perTx {
		pc, err := pgxpool.ParseConfig(f.pgURL)
		if err != nil {
			return err
		}
		pc.MaxConns = 6
		if pool, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
			return err
		}
		defer pool.Close()
	}
	batch := batchOr(f.batch, 50_000)
	for ctx.Err() == nil {
		polled := time.Now()
		fs := cl.PollRecords(ctx, batch)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if loadErr != nil {
			return loadErr
		}
		if err := fs.Err(); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		recs := fs.Records()
		if len(recs) == 0 {
			cl.AllowRebalance()
			continue
		}
		var (
			err   error
			stage time.Duration
		)
		if pool != nil {
			err = rawPerPartition(ctx, pool, log, table, offsets, f, fs)
		} else {
			next := map[int32]int64{}
			for _, r := range recs {
				next[r.Partition] = r.Offset + 1
			}
			err = rawTxn(ctx, conn, log, func(tx pgx.Tx) error {
				t0 := time.Now()
				if _, err := tx.CopyFrom(ctx, table, rowColumns, copyRows(recs)); err != nil {
					return err
				}
				stage = time.Since(t0)
				return rawOffsets(ctx, tx, offsets, f, next)
			})
		}
		if err == nil {
			log.took(time.Since(polled), stage)
		}
		cl.AllowRebalance()
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}

// rawOffsets upserts each partition's next offset, in one round trip.
func rawOffsets(ctx context.Context, tx pgx.Tx, offsets string, f contenderFlags, next map[int32]int64) error {
	b := &pgx.Batch{}
	for p, o := range next {
		b.Queue(`INSERT INTO `+offsets+` (grp, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
ON CONFLICT (grp, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset`, f.group, f.in, p, o)
	}
	return tx.SendBatch(ctx, b).Close()
}

// rawPerPartition is the raw loop in exactly's shape: one transaction per
// partition of the poll, each on a connection of its own, all at once.
func rawPerPartition(ctx context.Context, pool *pgxpool.Pool, log *commitLog, table pgx.Identifier, offsets string, f contenderFlags, fs kgo.Fetches) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		recs := p.Records
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := rawTxn(ctx, pool, log, func(tx pgx.Tx) error {
				if _, err := tx.CopyFrom(ctx, table, rowColumns, copyRows(recs)); err != nil {
					return err
				}
				return rawOffsets(ctx, tx, offsets, f, map[int32]int64{p.Partition: recs[len(recs)-1].Offset + 1})
			})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	})
	wg.Wait()
	return errors.Join(errs...)
}

// rawTxn runs fn in a transaction and logs how long its COMMIT took.
func rawTxn(ctx context.Context, conn interface {
	Begin(context.Context) (pgx.Tx, error)
}, log *commitLog, fn func(pgx.Tx) error) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback(context.Background())
		return err
	}
	start := time.Now()
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	log.add(time.Since(start))
	return nil
}
