// Command bench is exactly's side-by-side benchmark (make bench): it runs
// exactly and what users would pick instead — a plain franz-go
// at-least-once loop, a franz-go GroupTransactSession loop, Kafka Streams,
// a raw pgx loop — each in its own OS process, on the same input, in
// interleaved rounds, and writes a markdown table, a JSON file and a PNG
// chart. See docs/PERFORMANCE.md.
//
//	bench [flags]            the driver
//	bench contender [flags]  one Go contender (started by the driver)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "contender" {
		if err := runContender(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "contender:", err)
			os.Exit(1)
		}
		return
	}
	if err := runDriver(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func runDriver(args []string) error {
	var cfg config
	var sizes, only string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&cfg.brokers, "brokers", "127.0.0.1:9692", "the benchmark's own broker")
	fs.StringVar(&cfg.pgURL, "pg", "postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable", "Postgres URL")
	fs.IntVar(&cfg.records, "records", 1_000_000, "input records per size")
	fs.StringVar(&sizes, "sizes", "100,1024", "value sizes in bytes")
	fs.IntVar(&cfg.rounds, "rounds", 5, "interleaved rounds")
	fs.IntVar(&cfg.rate, "rate", 20_000, "input rate of the latency runs, records/s")
	fs.DurationVar(&cfg.latencyDur, "latency", 10*time.Second, "duration of each latency run (0: none)")
	fs.StringVar(&cfg.outDir, "out", "out", "where the table, JSON, chart and profile go")
	fs.StringVar(&cfg.kstreamsCP, "kstreams-cp", "kstreams/target/classes:kstreams/target/deps/*", "class path of the Kafka Streams app")
	fs.StringVar(&cfg.brokerPID, "broker-pid", "", "file with the broker's pid (for the disturbance check)")
	fs.StringVar(&only, "only", "", "comma-separated contenders to run (default all)")
	fs.BoolVar(&cfg.profile, "profile", true, "CPU-profile exactly, exactly_1k, exactly_pg and the alo and pgraw loops in the first round")
	fs.Float64Var(&cfg.quietCores, "quiet", 0.75, "a run is disturbed when other processes use more cores than this")
	render := fs.String("render", "", "only redraw the chart of this results.json (into -out)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *render != "" {
		data, err := os.ReadFile(*render)
		if err != nil {
			return err
		}
		var rep Report
		if err := json.Unmarshal(data, &rep); err != nil {
			return err
		}
		return rep.chart(filepath.Join(cfg.outDir, "results.png"))
	}
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return fmt.Errorf("bad -sizes %q", sizes)
		}
		cfg.sizes = append(cfg.sizes, n)
	}
	if only != "" {
		cfg.only = map[string]bool{}
		for _, s := range strings.Split(only, ",") {
			cfg.only[strings.TrimSpace(s)] = true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()

	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.outDir, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "exactly-bench-")
	if err != nil {
		return err
	}
	kcl, err := kgo.NewClient(kgo.SeedBrokers(cfg.brokers))
	if err != nil {
		return err
	}
	defer kcl.Close()
	d := &driver{cfg: cfg, adm: kadm.NewClient(kcl), kcl: kcl, self: self, workDir: work,
		inputs: map[int]string{}, runID: strconv.FormatInt(time.Now().Unix()%1_000_000, 36)}
	if cfg.brokerPID != "" {
		if b, err := os.ReadFile(cfg.brokerPID); err == nil {
			d.broker, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
	}
	var cs []Contender
	for _, c := range contenders() {
		if (cfg.only == nil && !c.Optional) || cfg.only[c.Name] {
			cs = append(cs, c)
		}
	}
	needPG := false
	for _, c := range cs {
		needPG = needPG || c.Family == "postgres"
	}
	if needPG {
		d.pool, err = pgxpool.New(ctx, cfg.pgURL)
		if err != nil {
			return err
		}
		defer d.pool.Close()
		if _, err := d.pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS exactly_bench;
CREATE TABLE IF NOT EXISTS exactly_bench.raw_offsets (grp text NOT NULL, topic text NOT NULL, partition integer NOT NULL,
  next_offset bigint NOT NULL, PRIMARY KEY (grp, topic, partition))`); err != nil {
			return fmt.Errorf("preparing Postgres: %w", err)
		}
	}
	for _, c := range cs {
		if c.Kind == "kstreams" {
			if _, err := exec.LookPath("java"); err != nil {
				return fmt.Errorf("kstreams contenders need java: %w", err)
			}
			break
		}
	}
	started := time.Now()
	for _, size := range cfg.sizes {
		t := d.topicName(fmt.Sprintf("in%d", size))
		fmt.Fprintf(os.Stderr, "bench: filling %s with %d records of %d B\n", t, cfg.records, size)
		if err := d.fill(ctx, t, cfg.records, size); err != nil {
			return fmt.Errorf("filling %s: %w", t, err)
		}
		d.inputs[size] = t
	}
	defer func() {
		for _, t := range d.inputs {
			d.deleteTopic(t)
		}
	}()

	var res Results
	res.Config = ResultConfig{Records: cfg.records, Sizes: cfg.sizes, Rounds: cfg.rounds, Rate: cfg.rate,
		LatencySeconds: cfg.latencyDur.Seconds(), Started: started.UTC().Format(time.RFC3339), Partitions: partitions}
	// Round 0 of the first size profiles these; the plain loops and the
	// raw pgx loop too, so a CPU gap can be read entry by entry.
	profiled := []string{"exactly", "exactly_1k", "alo", "exactly_pg", "pgraw"}
	profilePath := func(name string) string {
		p, _ := filepath.Abs(filepath.Join(cfg.outDir, name+".cpu.pprof"))
		return p
	}
	for round := range cfg.rounds {
		order := rotate(cs, round)
		for _, size := range cfg.sizes {
			for _, c := range order {
				prof := ""
				if cfg.profile && round == 0 && size == cfg.sizes[0] && slices.Contains(profiled, c.Name) {
					prof = profilePath(c.Name)
				}
				r, err := d.throughput(ctx, c, size, round, prof)
				if err == nil && r.Disturbed {
					fmt.Fprintf(os.Stderr, "bench: %s disturbed (others %.2f cores), repeating once\n", c.Name, r.Others)
					r2, err2 := d.throughput(ctx, c, size, round, "")
					if err2 == nil {
						r, r.Repeated = r2, true
					}
				}
				if err != nil {
					return fmt.Errorf("round %d, %d B: %w", round, size, err)
				}
				fmt.Fprintf(os.Stderr, "bench: round %d %4d B %-16s %9.0f rec/s  %5.2fs  cpu %5.2fs  rss %4.0f MB  others %.2f  txns %d (sum %.2fs: poll %.2fs, commit %.2fs; took p50 %.1f ms, poll %.1f, stage %.1f, commit %.1f, rest %.2f, begin %.2f)\n",
					round, size, c.Name, r.RecPerS, r.Seconds, r.CPUSec, r.RSSMB, r.Others, r.Commits, r.TookSum, r.PollSum, r.CommitSum, r.TookP50, r.PollP50, r.StageP50, r.CommitP50, r.RestP50, r.BeginP50)
				res.Runs = append(res.Runs, r)
			}
		}
		if cfg.latencyDur > 0 {
			for _, c := range order {
				if !c.Latency {
					continue
				}
				l, err := d.latency(ctx, c, round)
				if err == nil && l.Disturbed {
					fmt.Fprintf(os.Stderr, "bench: latency %s disturbed (others %.2f cores), repeating once\n", c.Name, l.Others)
					if l2, err2 := d.latency(ctx, c, round); err2 == nil {
						l = l2
					}
				}
				if err != nil {
					return fmt.Errorf("latency round %d: %w", round, err)
				}
				fmt.Fprintf(os.Stderr, "bench: latency round %d %-16s p50 %6.1f p99 %6.1f max %6.1f ms  others %.2f\n",
					round, c.Name, l.P50, l.P99, l.Max, l.Others)
				res.Latencies = append(res.Latencies, l)
			}
		}
	}
	res.Config.Took = time.Since(started).Round(time.Second).String()
	rep := res.Report(cs, cfg.sizes)
	if err := rep.Write(cfg.outDir); err != nil {
		return err
	}
	for _, name := range profiled {
		if _, err := os.Stat(profilePath(name)); err != nil {
			continue
		}
		if out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=35", self, profilePath(name)).CombinedOutput(); err == nil {
			_ = os.WriteFile(filepath.Join(cfg.outDir, name+".cpu.top.txt"), out, 0o644)
		}
	}
	_ = os.RemoveAll(work)
	fmt.Print(rep.Markdown)
	fmt.Println()
	fmt.Println(rep.Summary.LastLine())
	return nil
}

// rotate returns cs rotated left by k, so each round starts with another
// contender.
func rotate(cs []Contender, k int) []Contender {
	if len(cs) == 0 {
		return nil
	}
	k %= len(cs)
	return append(append([]Contender{}, cs[k:]...), cs[:k]...)
}
