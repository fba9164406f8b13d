// Command etl is the example exactly-once ETL: JSON order events are
// validated and enriched (line totals, totals normalised to US cents) and
// written keyed by customer; malformed events go to a dead-letter topic with
// the error and their source in headers, in the same transaction. With no
// flags it starts an in-process Kafka cluster (kfake, 3 brokers), produces
// 100,000 events, runs two pipeline instances in one consumer group, checks
// the result with an independent read_committed verifier and prints, last:
//
//	exactly-once verified: in=<N> out=<M> dead=<K> duplicates=0 missing=0
//
// It exits 0 only if every input appears exactly once in the output or the
// dead-letter topic.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	cfg := defaultConfig()
	flag.StringVar(&cfg.brokers, "brokers", "", "comma-separated seed brokers of a real cluster (default: an embedded in-process cluster)")
	flag.IntVar(&cfg.records, "records", cfg.records, "input events to produce")
	flag.IntVar(&cfg.partitions, "partitions", cfg.partitions, "partitions of the input topic")
	flag.IntVar(&cfg.instances, "instances", cfg.instances, "pipeline instances in the consumer group")
	flag.Float64Var(&cfg.malformedPct, "malformed", cfg.malformedPct, "percent of input events that are malformed")
	flag.StringVar(&cfg.sink, "sink", cfg.sink, "where effects and offsets commit: kafka or postgres")
	flag.StringVar(&cfg.pgURL, "pg", cfg.pgURL, "Postgres URL for -sink postgres ($EXACTLY_PG_URL if set, else the database 'make pg-up' creates)")
	flag.DurationVar(&cfg.timeout, "timeout", cfg.timeout, "give up if the run takes longer")
	flag.IntVar(&cfg.batch, "batch", cfg.batch, "max records per transaction (pipeline.MaxRecords)")
	flag.BoolVar(&cfg.verbose, "v", false, "log the pipeline's warnings and retries")
	flag.BoolVar(&cfg.keep, "keep", false, "with -sink postgres: keep the run's tables and its group's rows in the offsets table instead of deleting them")
	flag.StringVar(&cfg.metrics.addr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on this address while running, e.g. 127.0.0.1:9464")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stdout, "etl: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stdout, res.line())
	if !res.ok() {
		os.Exit(1)
	}
}

type config struct {
	brokers      string
	records      int
	partitions   int
	instances    int
	malformedPct float64
	sink         string
	pgURL        string
	timeout      time.Duration
	batch        int
	verbose      bool
	keep         bool
	seed         uint64
	log          io.Writer // where -v logs go
	metrics      observeConfig
}

func defaultConfig() config {
	pg := os.Getenv("EXACTLY_PG_URL")
	if pg == "" {
		pg = "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable"
	}
	return config{
		records:      100_000,
		partitions:   6,
		instances:    2,
		malformedPct: 3,
		sink:         "kafka",
		pgURL:        pg,
		timeout:      5 * time.Minute,
		batch:        50_000, // the library's default MaxRecords
		seed:         1,
		log:          os.Stderr,
	}
}

func (c config) validate() error {
	switch {
	case c.records <= 0:
		return fmt.Errorf("-records %d: must be positive", c.records)
	case c.partitions <= 0:
		return fmt.Errorf("-partitions %d: must be positive", c.partitions)
	case c.instances <= 0:
		return fmt.Errorf("-instances %d: must be positive", c.instances)
	case c.malformedPct < 0 || c.malformedPct > 100:
		return fmt.Errorf("-malformed %v: must be a percentage", c.malformedPct)
	case c.sink != "kafka" && c.sink != "postgres":
		return fmt.Errorf("-sink %q: must be kafka or postgres", c.sink)
	case c.batch <= 0:
		return fmt.Errorf("-batch %d: must be positive", c.batch)
	}
	return nil
}

func (c config) logger() *slog.Logger {
	level := slog.LevelError
	if c.verbose {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(c.log, &slog.HandlerOptions{Level: level}))
}

func (c config) brokerList() []string {
	var out []string
	for _, b := range strings.Split(c.brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// result is what a run found.
type result struct {
	in, out, dead     int
	duplicates        int
	missing           int
	unknown, disorder int
	wantDead          int // malformed events the generator produced
	took              time.Duration
	group             string // the run's consumer group
}

func (r result) ok() bool {
	return r.duplicates == 0 && r.missing == 0 && r.unknown == 0 && r.disorder == 0 &&
		r.out+r.dead == r.in && r.dead == r.wantDead
}

func (r result) line() string {
	verdict := "exactly-once verified"
	if !r.ok() {
		verdict = fmt.Sprintf("exactly-once NOT verified (unknown=%d order_violations=%d expected_dead=%d)", r.unknown, r.disorder, r.wantDead)
	}
	return fmt.Sprintf("%s: in=%d out=%d dead=%d duplicates=%d missing=%d", verdict, r.in, r.out, r.dead, r.duplicates, r.missing)
}
