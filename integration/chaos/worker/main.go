// Command worker is the pipeline process the chaos driver starts, kills,
// stops and pauses (integration/chaos). It copies an input topic to an
// output topic (Kafka mode) or to a table (Postgres mode) with exactly's
// pipeline, and reports on stdout, one line per event, for the driver:
//
//	READY <unix ns>                               the process runs (before Run)
//	STAGE <unix ns> <partition> <first> <last>    a Stage call began (-announce-stage)
//	COMMIT <unix ns> <records> <batch start unix ns> <took ns> <stage ns> <commit ns> <partitions>
//	ABORT <unix ns> <reason> <records> <took ns>
//	POLL <unix ns> <records> <took ns>            a batch was collected (its transaction begins)
//	WARN <unix ns> <message> err=<error>          a WARN or ERROR log record (also in the log)
//	EXIT <code> <error>                           Run returned
//
// <partitions> is a comma-separated list of partition:next-offset of the
// input topic ("-" if empty). The fields after the fourth of COMMIT and the
// third of ABORT are for the availability tool (integration/availability).
//
// Exit codes: 0 Run returned nil (SIGTERM or SIGINT cancels it), 3 a fatal
// error (sinks.IsFatal: fenced by a newer instance), 4 a permanent error,
// 1 anything else, 2 bad flags. Logs (WARN and above, INFO with -v) go to
// stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
	"github.com/exactlyonce/exactly/sinks/pgsink"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

// Exit codes.
const (
	exitOK        = 0
	exitOther     = 1
	exitUsage     = 2
	exitFatal     = 3
	exitPermanent = 4
)

type flags struct {
	brokers, group, in, out, instance string
	mode                              string
	pgURL, pgSchema, pgTable          string
	abortRate                         float64
	maxRecords                        int
	maxWait                           time.Duration
	session, txn                      time.Duration
	announceStage, verbose            bool
	dialVia                           map[string]string // broker address -> address to dial instead
}

func parse(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.StringVar(&f.brokers, "brokers", "", "seed brokers, comma-separated")
	fs.StringVar(&f.group, "group", "", "consumer group")
	fs.StringVar(&f.in, "in", "", "input topic")
	fs.StringVar(&f.out, "out", "", "output topic (Kafka mode)")
	fs.StringVar(&f.instance, "instance", "", "instance id")
	fs.StringVar(&f.mode, "mode", "kafka", "kafka or postgres")
	fs.StringVar(&f.pgURL, "pg", "", "Postgres URL (postgres mode)")
	fs.StringVar(&f.pgSchema, "pg-schema", "chaos", "schema of the offsets table and the result table")
	fs.StringVar(&f.pgTable, "pg-table", "", "result table (postgres mode)")
	fs.Float64Var(&f.abortRate, "abort-rate", 0, "probability that a Stage call fails after writing its output")
	fs.IntVar(&f.maxRecords, "max-records", 500, "records per transaction")
	fs.DurationVar(&f.maxWait, "max-wait", 50*time.Millisecond, "batch wait")
	fs.DurationVar(&f.session, "session-timeout", 6*time.Second, "group session timeout")
	fs.DurationVar(&f.txn, "txn-timeout", 5*time.Second, "transaction timeout")
	fs.BoolVar(&f.announceStage, "announce-stage", false, "print a STAGE line when a Stage call begins")
	fs.BoolVar(&f.verbose, "v", false, "log at INFO")
	dialVia := fs.String("dial-via", "", "broker=proxy address pairs, comma-separated: dial each broker through its proxy")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	var err error
	if f.dialVia, err = parseDialVia(*dialVia); err != nil {
		return f, err
	}
	switch {
	case f.brokers == "" || f.group == "" || f.in == "" || f.instance == "":
		return f, errors.New("-brokers, -group, -in and -instance are required")
	case f.mode == "kafka" && f.out == "":
		return f, errors.New("-out is required in kafka mode")
	case f.mode == "postgres" && (f.pgURL == "" || f.pgTable == ""):
		return f, errors.New("-pg and -pg-table are required in postgres mode")
	case f.mode != "kafka" && f.mode != "postgres":
		return f, fmt.Errorf("-mode %q: want kafka or postgres", f.mode)
	}
	return f, nil
}

// out writes one event line at a time (the Stage runs concurrently).
var outMu sync.Mutex

func emit(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

type events struct{}

func (events) OnBatchCommitted(ci pipeline.CommitInfo) {
	var parts []string
	for _, byPart := range ci.Offsets {
		for p, next := range byPart {
			parts = append(parts, strconv.Itoa(int(p))+":"+strconv.FormatInt(next, 10))
		}
	}
	sort.Strings(parts)
	emit("COMMIT %d %d %d %d %d %d %s", time.Now().UnixNano(), ci.Records, ci.Start.UnixNano(),
		ci.Took.Nanoseconds(), ci.Stage.Nanoseconds(), ci.Commit.Nanoseconds(), partList(parts))
}

func (events) OnPolled(pi pipeline.PollInfo) {
	emit("POLL %d %d %d", time.Now().UnixNano(), pi.Records, pi.Took.Nanoseconds())
}

func partList(parts []string) string {
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

// warnTee also prints WARN and ERROR records as WARN lines on stdout, so
// the driver sees them with the other events (re-created sessions, unknown
// outcomes).
type warnTee struct{ slog.Handler }

func (t warnTee) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		msg := r.Message
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "err" {
				msg += " err=" + a.Value.String()
			}
			return true
		})
		emit("WARN %d %s", r.Time.UnixNano(), strings.ReplaceAll(msg, "\n", " "))
	}
	return t.Handler.Handle(ctx, r)
}

func (t warnTee) WithAttrs(as []slog.Attr) slog.Handler { return warnTee{t.Handler.WithAttrs(as)} }
func (t warnTee) WithGroup(name string) slog.Handler    { return warnTee{t.Handler.WithGroup(name)} }

func (events) OnBatchAborted(ai pipeline.AbortInfo) {
	emit("ABORT %d %s %d %d", time.Now().UnixNano(), ai.Reason, ai.Records, ai.Took.Nanoseconds())
}

// errPlanned is the random Stage failure of the random-aborts cell.
var errPlanned = errors.New("chaos: planned Stage failure")

func main() {
	os.Exit(run())
}

func run() int {
	f, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return exitUsage
	}
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(warnTee{slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})}) // the pipeline adds instance=
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	opts := []pipeline.Opt{
		pipeline.Brokers(strings.Split(f.brokers, ",")...),
		pipeline.Group(f.group),
		pipeline.Topics(f.in),
		pipeline.InstanceID(f.instance),
		pipeline.MaxRecords(f.maxRecords),
		pipeline.MaxWait(f.maxWait),
		pipeline.SessionTimeout(f.session),
		pipeline.TransactionTimeout(f.txn),
		pipeline.Backoff(10*time.Millisecond, 500*time.Millisecond),
		pipeline.StageRetries(1000), // random aborts must never end Run
		pipeline.StartTimeout(2 * time.Minute),
		pipeline.Logger(logger),
		pipeline.Hooks(events{}),
	}
	if lv := os.Getenv("EXACTLY_CHAOS_KGO_LOG"); lv != "" {
		// The client's own log (franz-go), for a look inside a stall:
		// EXACTLY_CHAOS_KGO_LOG=debug|info|warn.
		var l slog.Level
		if err := l.UnmarshalText([]byte(lv)); err != nil {
			fmt.Fprintf(os.Stderr, "worker: EXACTLY_CHAOS_KGO_LOG=%q: %v (want debug, info, warn or error)\n", lv, err)
			return exitUsage
		}
		kl := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
		opts = append(opts, pipeline.ClientOpts(kgo.WithLogger(kslog.New(kl))))
	}
	if len(f.dialVia) > 0 {
		opts = append(opts, pipeline.ClientOpts(kgo.Dialer(viaDialer(f.dialVia))))
	}
	fail := func() bool { return f.abortRate > 0 && rand.Float64() < f.abortRate }
	announce := func(b *sinks.Batch) {
		if f.announceStage {
			emit("STAGE %d %d %d %d", time.Now().UnixNano(), b.Partition, b.FirstOffset(), b.LastOffset())
		}
	}

	emit("READY %d", time.Now().UnixNano())
	switch f.mode {
	case "kafka":
		stage := pipeline.StageFunc[*kafkasink.Writer](func(_ context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
			announce(b)
			for _, r := range b.Records {
				w.Produce(&kgo.Record{Topic: f.out, Key: r.Key, Value: r.Value, Headers: kafkasink.AppendSourceHeaders(nil, r)})
			}
			if fail() {
				return errPlanned
			}
			return nil
		})
		p, err := pipeline.New(kafkasink.New(), stage, append(opts, pipeline.Outputs(f.out))...)
		if err != nil {
			return finish(err)
		}
		return finish(p.Run(ctx))
	default:
		pool, err := pgxpool.New(ctx, f.pgURL)
		if err != nil {
			return finish(err)
		}
		defer pool.Close()
		sink, err := pgsink.New(pool, pgsink.OffsetsTable(f.pgSchema, "offsets"))
		if err != nil {
			return finish(err)
		}
		table := pgx.Identifier{f.pgSchema, f.pgTable}
		stage := pipeline.StageFunc[*pgsink.Writer](func(ctx context.Context, b *sinks.Batch, w *pgsink.Writer) error {
			announce(b)
			rows := make([][]any, len(b.Records))
			for i, r := range b.Records {
				rows[i] = []any{r.Partition, r.Offset, f.instance}
			}
			if _, err := w.CopyFrom(ctx, table, []string{"part", "off", "worker"}, pgx.CopyFromRows(rows)); err != nil {
				return err
			}
			if fail() {
				return errPlanned
			}
			return nil
		})
		p, err := pipeline.New(sink, stage, opts...)
		if err != nil {
			return finish(err)
		}
		return finish(p.Run(ctx))
	}
}

func finish(err error) int {
	code := exitOK
	switch {
	case err == nil:
	case sinks.IsFatal(err):
		code = exitFatal
	case sinks.IsPermanent(err):
		code = exitPermanent
	default:
		code = exitOther
	}
	msg := "<nil>"
	if err != nil {
		msg = strings.ReplaceAll(err.Error(), "\n", " ")
	}
	emit("EXIT %d %s", code, msg)
	return code
}

// parseDialVia parses -dial-via: "host:port=host:port,...".
func parseDialVia(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	m := map[string]string{}
	for _, pair := range strings.Split(s, ",") {
		from, to, ok := strings.Cut(pair, "=")
		if !ok || from == "" || to == "" {
			return nil, fmt.Errorf("-dial-via %q: want broker=proxy pairs like 127.0.0.1:9492=127.0.0.1:40001, comma-separated", pair)
		}
		m[from] = to
	}
	return m, nil
}

// viaDialer dials every broker in via through its proxy, and any other
// address directly.
func viaDialer(via map[string]string) func(ctx context.Context, network, host string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		if to, ok := via[host]; ok {
			host = to
		}
		return d.DialContext(ctx, network, host)
	}
}
