// Command driver runs the chaos matrix (`make chaos`): it builds the worker,
// starts the suite's own 3-node Apache Kafka cluster with scripts/kafka.sh
// (its own ports and state dir), runs every cell, prints the table and, as
// its last line, "chaos: cells=N passed=P duplicates=D missing=M". It exits
// non-zero when any cell fails, and stops the cluster it started.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/exactlyonce/exactly/integration/chaos"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		portBase = flag.Int("port-base", envInt("EXACTLY_CHAOS_PORT_BASE", 9392), "EXACTLY_KAFKA_PORT_BASE of the suite's cluster (brokers at base+100..102)")
		state    = flag.String("state", envStr("EXACTLY_CHAOS_STATE", "/tmp/exactly-chaos"), "EXACTLY_STATE of the suite's cluster")
		pgURL    = flag.String("pg", envStr("EXACTLY_PG_URL", "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable"), "Postgres URL (\"\" skips the Postgres cells)")
		cells    = flag.String("cells", envStr("EXACTLY_CHAOS_CELLS", ""), "regexp of the cells to run (default all)")
		scale    = flag.Float64("scale", 1, "multiplies every cell's record count")
		keep     = flag.Bool("keep", false, "leave the cluster running at the end")
	)
	flag.Parse()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s chaos: %s\n", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	root, err := moduleRoot()
	if err != nil {
		logf("%v", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Minute)
	defer cancel()

	runID := strconv.FormatInt(time.Now().Unix()%1_000_000, 36)
	dir := filepath.Join(*state, "runs", runID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		logf("%v", err)
		return 1
	}
	bin := filepath.Join(dir, "worker")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./integration/chaos/worker")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		logf("building the worker: %v", err)
		return 1
	}
	version := envStr("EXACTLY_KAFKA_VERSION", "4.1.2")
	cl := &chaos.Cluster{Script: filepath.Join(root, "scripts", "kafka.sh"), State: *state, PortBase: *portBase, Version: version, Log: logf}
	if err := cl.Up(ctx); err != nil {
		logf("%v", err)
		return 1
	}
	down := func() {}
	if !*keep {
		var done bool
		down = func() {
			if done {
				return
			}
			done = true
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := cl.Down(ctx); err != nil {
				logf("stopping the cluster: %v", err)
			}
		}
		defer down()
	}
	var re *regexp.Regexp
	if *cells != "" {
		if re, err = regexp.Compile(*cells); err != nil {
			logf("-cells: %v", err)
			return 2
		}
	}
	cfg := chaos.Config{
		Brokers: cl.Brokers(), Cluster: cl, KafkaVersion: version, PGURL: *pgURL,
		WorkerBin: bin, Dir: dir, RunID: runID, Log: logf,
	}
	logf("run %s: cluster %s (Kafka %s), logs in %s", runID, strings.Join(cfg.Brokers, ","), version, dir)
	var results []chaos.Result
	start := time.Now()
	for _, c := range chaos.Matrix(*scale) {
		if re != nil && !re.MatchString(c.Name) {
			continue
		}
		if c.Mode == chaos.Postgres && *pgURL == "" {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		logf("cell %s: %s, %s mode, %d records, %d workers", c.Name, c.Fault, c.Mode, c.Records, c.Workers)
		res := chaos.RunCell(ctx, cfg, c)
		logf("cell %s: passed=%v dups=%d missing=%d order=%d open=%d in %v", c.Name, res.Passed, res.Duplicates, res.Missing, res.OrderViolations, res.OpenTxns, res.Took.Round(time.Second))
		results = append(results, res)
	}
	logf("matrix took %v", time.Since(start).Round(time.Second))
	down() // before the table: its last line must be the summary
	table := chaos.Table(results)
	_ = os.WriteFile(filepath.Join(dir, "table.txt"), []byte(table), 0o644)
	fmt.Print(table)
	for _, r := range results {
		if !r.Passed {
			return 1
		}
	}
	if len(results) == 0 {
		return 1
	}
	return 0
}

func envStr(k, def string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return def
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return def
}

func moduleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for ; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "scripts", "kafka.sh")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("cannot find the module root (scripts/kafka.sh) from the working directory")
		}
	}
}
