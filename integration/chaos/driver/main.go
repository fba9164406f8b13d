// Command driver runs the chaos matrix (`make chaos`): it builds the worker
// and, for each Apache Kafka version of -versions in turn (default 4.1.2
// and 4.4.0), starts the suite's own 3-node cluster of that version with
// scripts/kafka.sh (its own ports and state dir), runs the version's cells
// and stops the cluster. The Kafka-mode cells run on every version, the
// Postgres-mode cells (Kafka is only their input) on the last one unless
// -pg-versions says otherwise; on every version but the last the record
// counts are halved (-scale-others), which keeps the whole run within its
// 20-minute budget. It prints the table and, as its last line,
// "chaos: cells=N passed=P duplicates=D missing=M", and exits non-zero when
// any cell fails.
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

	"github.com/jackc/pgx/v5"

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
		versions = flag.String("versions", envStr("EXACTLY_CHAOS_VERSIONS", "4.1.2,4.4.0"), "Apache Kafka versions to run the matrix on, one cluster each, in this order")
		pgVers   = flag.String("pg-versions", envStr("EXACTLY_CHAOS_PG_VERSIONS", ""), "versions that also run the Postgres-mode cells: comma-separated, \"all\", or \"\" for the last of -versions")
		others   = flag.Float64("scale-others", 0.5, "multiplies the record counts again on every version but the last (the time budget: 20 min for the whole run)")
		short    = flag.Bool("short", false, "run ShortMatrix (one short cell per fault type, what `make test` runs) instead of Matrix")
	)
	flag.Parse()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s chaos: %s\n", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	root, err := chaos.ModuleRoot()
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
	// Two drivers on one state dir and port base would share, and stop,
	// each other's cluster.
	unlock, err := lockState(*state)
	if err != nil {
		logf("%v", err)
		return 2
	}
	defer unlock()
	bin := filepath.Join(dir, "worker")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./integration/chaos/worker")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		logf("building the worker: %v", err)
		return 1
	}
	var re *regexp.Regexp
	if *cells != "" {
		if re, err = regexp.Compile(*cells); err != nil {
			logf("-cells: %v", err)
			return 2
		}
	}
	vers := splitList(*versions)
	if len(vers) == 0 {
		logf("-versions is empty: give at least one Apache Kafka version, e.g. -versions 4.1.2,4.4.0")
		return 2
	}
	pgOn := map[string]bool{vers[len(vers)-1]: true}
	switch *pgVers {
	case "":
	case "all":
		for _, v := range vers {
			pgOn[v] = true
		}
	default:
		pgOn = map[string]bool{}
		for _, v := range splitList(*pgVers) {
			pgOn[v] = true
		}
	}
	matrixOf := func(version string) []chaos.Cell {
		switch {
		case *short:
			return chaos.ShortMatrix()
		case version != vers[len(vers)-1]:
			return chaos.Matrix(*scale * *others)
		default:
			return chaos.Matrix(*scale)
		}
	}
	selected := map[string][]chaos.Cell{}
	needPG := false
	for _, version := range vers {
		for _, c := range matrixOf(version) {
			if re != nil && !re.MatchString(c.Name) {
				continue
			}
			if c.Mode == chaos.Postgres && (*pgURL == "" || !pgOn[version]) {
				continue
			}
			selected[version] = append(selected[version], c)
			needPG = needPG || c.Mode == chaos.Postgres
		}
	}
	if needPG {
		// Every Postgres cell would fail its setup one by one; say it once, now.
		if err := pingPostgres(ctx, *pgURL); err != nil {
			logf("Postgres at %s is not reachable: %v; start it (`make pg-up` starts the machine's own), point -pg (EXACTLY_PG_URL) at a running server, or skip the Postgres cells with -pg=", redactURL(*pgURL), err)
			return 2
		}
	}
	var results []chaos.Result
	start := time.Now()
	for _, version := range vers {
		if ctx.Err() != nil {
			break
		}
		todo := selected[version]
		if len(todo) == 0 {
			logf("Kafka %s: no cell selected", version)
			continue
		}
		res, err := runVersion(ctx, root, version, *state, *portBase, *pgURL, bin, dir, runID, *keep, todo, logf)
		results = append(results, res...)
		if err != nil {
			logf("Kafka %s: %v", version, err)
			results = append(results, chaos.Result{Cell: "cluster", Fault: "-", Mode: "-", Kafka: version,
				Failures: []string{err.Error()}})
		}
	}
	logf("matrix took %v (%d cells on Kafka %s)", time.Since(start).Round(time.Second), len(results), strings.Join(vers, ", "))
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

// runVersion brings up the suite's cluster on Kafka version, runs cells on
// it and brings it down again (unless keep), also on failure.
func runVersion(ctx context.Context, root, version, state string, portBase int, pgURL, bin, dir, runID string, keep bool,
	cells []chaos.Cell, logf func(string, ...any)) ([]chaos.Result, error) {
	cl := &chaos.Cluster{Script: filepath.Join(root, "scripts", "kafka.sh"), State: state, PortBase: portBase, Version: version, Log: logf}
	t0 := time.Now()
	if err := cl.Up(ctx); err != nil {
		return nil, err
	}
	if !keep {
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := cl.Down(ctx); err != nil {
				logf("stopping the Kafka %s cluster: %v", version, err)
			}
		}()
	}
	cfg := chaos.Config{
		Brokers: cl.Brokers(), Cluster: cl, KafkaVersion: version, PGURL: pgURL,
		WorkerBin: bin, Dir: filepath.Join(dir, version), RunID: runID + "v" + strings.ReplaceAll(version, ".", ""), Log: logf,
	}
	for _, c := range cells {
		if c.Feeder == chaos.FeederVerifiableProducer {
			tools, err := cl.ToolsDir(ctx)
			if err != nil {
				return nil, err
			}
			cfg.ToolsDir = tools
			break
		}
	}
	logf("run %s: cluster %s (Kafka %s) up in %v, logs in %s", cfg.RunID, strings.Join(cfg.Brokers, ","), version, time.Since(t0).Round(time.Second), cfg.Dir)
	var results []chaos.Result
	for _, c := range cells {
		if ctx.Err() != nil {
			break
		}
		logf("cell %s on Kafka %s: %s, %s mode, %d records at %d/s, %d workers", c.Name, version, c.Fault, c.Mode, c.Records, c.Rate, c.Workers)
		res := chaos.RunCell(ctx, cfg, c)
		logf("cell %s on Kafka %s: passed=%v dups=%d missing=%d order=%d open=%d in %v", c.Name, version, res.Passed, res.Duplicates, res.Missing, res.OrderViolations, res.OpenTxns, res.Took.Round(time.Second))
		results = append(results, res)
	}
	logf("Kafka %s: %d cells in %v (with the cluster's start)", version, len(results), time.Since(t0).Round(time.Second))
	return results, nil
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
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

// pingPostgres connects to url and runs SELECT 1, within 10 s.
func pingPostgres(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.Ping(ctx)
}

// redactURL names the Postgres server of a URL or key=value DSN without
// its password.
func redactURL(raw string) string {
	cfg, err := pgx.ParseConfig(raw)
	if err != nil {
		return "(an unparsable Postgres URL)"
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
}

// lockState takes an exclusive lock on state/driver.lock for the run, or
// says which process holds it.
func lockState(state string) (unlock func(), err error) {
	path := filepath.Join(state, "driver.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		return nil, fmt.Errorf("another chaos run (pid %s) uses %s and its cluster: wait for it to end, or give this one its own -state and -port-base", strings.TrimSpace(string(holder)), state)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, nil
}
