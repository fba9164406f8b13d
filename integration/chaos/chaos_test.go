package chaos

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// plant is a doctoring of an exact output.
type plant struct {
	name                   string
	doctor                 func([]int) []int // indexes of the input records, in output order
	dups, missing, reorder int
}

var plants = []plant{
	{"exact", func(o []int) []int { return o }, 0, 0, 0},
	{"duplicate", func(o []int) []int { return append(o[:6:6], append([]int{o[5]}, o[6:]...)...) }, 1, 0, 0},
	{"gap", func(o []int) []int { return append(o[:4:4], o[5:]...) }, 0, 1, 0},
	{"reorder", func(o []int) []int {
		o = append([]int(nil), o...)
		o[2], o[3] = o[3], o[2] // two records of partition 0
		return o
	}, 0, 0, 1},
}

// TestCheckCatchesPlantedKafka feeds the driver's Kafka-mode check
// (KafkaReport, read_committed) doctored outputs on an in-process cluster:
// a planted duplicate, gap and reorder must each fail the cell.
func TestCheckCatchesPlantedKafka(t *testing.T) {
	ctx, brokers, produceDoctored := plantedKafka(t, plants)
	for _, pl := range plants {
		t.Run(pl.name, func(t *testing.T) {
			out, _ := produceDoctored(t, pl)
			rep, err := KafkaReport(ctx, brokers, "in", out)
			require.NoError(t, err)
			var r Result
			r.Apply(rep)
			require.Equal(t, pl.dups, r.Duplicates, "%v", rep)
			require.Equal(t, pl.missing, r.Missing, "%v", rep)
			require.Equal(t, pl.reorder, r.OrderViolations, "%v", rep)
			require.Equal(t, pl.name == "exact", r.Exact(), "%v", rep)
		})
	}
}

// TestCheckCatchesPlantedRows does the same for Postgres mode's check over
// result rows in insertion order (CompareRows), over two input partitions.
func TestCheckCatchesPlantedRows(t *testing.T) {
	var inputs []verify.Source
	var rows []RowSource
	for i := range 10 {
		p, o := int32(i%2), int64(i/2)
		inputs = append(inputs, verify.Source{Topic: "in", Partition: p, Offset: o})
		rows = append(rows, RowSource{Partition: p, Offset: o})
	}
	for _, pl := range plants {
		t.Run(pl.name, func(t *testing.T) {
			idx := make([]int, len(rows))
			for i := range idx {
				idx[i] = i
			}
			// For the reorder, swap two rows of the same partition.
			doctored := pl.doctor(idx)
			if pl.name == "reorder" {
				doctored = append([]int(nil), idx...)
				doctored[2], doctored[4] = doctored[4], doctored[2]
			}
			var got []RowSource
			for _, i := range doctored {
				got = append(got, rows[i])
			}
			var r Result
			r.Apply(CompareRows(inputs, "in", "rows", got))
			require.Equal(t, pl.dups, r.Duplicates)
			require.Equal(t, pl.missing, r.Missing)
			require.Equal(t, pl.reorder, r.OrderViolations)
			require.Equal(t, pl.name == "exact", r.Exact())
		})
	}
}

// TestTableSummary: the table's last line is the summary, with real counts.
func TestTableSummary(t *testing.T) {
	ok := Result{Cell: "a", Checked: true, Passed: true, Restarts: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}}
	bad := Result{Cell: "b", Checked: true, Duplicates: 2, Missing: 3, Failures: []string{"x"}}
	out := Table([]Result{ok, bad})
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	require.Equal(t, "chaos: cells=2 passed=1 duplicates=2 missing=3", lines[len(lines)-1])
	require.Contains(t, out, "| 2s / 3s (n=3) ")
	for _, col := range []string{"cell", "fault", "mode", "kafka version", "records", "duplicates", "missing", "order violations", "open transactions", "restart to first commit", "result"} {
		require.Contains(t, lines[0], col)
	}
	require.Equal(t, 2*time.Second, Percentile(ok.Restarts, 50))
	require.Equal(t, 3*time.Second, Percentile(ok.Restarts, 100))
}

// TestChaosShort runs ShortMatrix — one short cell of each fault type of
// the matrix, 2,000–4,000 records and 2 workers each — against a 3-node
// cluster of its own, started with scripts/kafka.sh at
// EXACTLY_CHAOS_SHORT_PORT_BASE (default 9992: brokers 10092-10094,
// controllers 10192-10194), state EXACTLY_CHAOS_SHORT_STATE (default
// /tmp/exactly-chaos-short), Kafka EXACTLY_KAFKA_VERSION (default 4.1.2),
// so that it never touches the shared cluster the other integration
// packages use at the same time. Every cell must pass. It runs under
// `make test` (EXACTLY_REQUIRE_SERVICES=1) or with EXACTLY_CHAOS=1, and
// skips otherwise; the Postgres-mode cells need EXACTLY_PG_URL. The cluster
// is stopped at the end unless EXACTLY_CHAOS_KEEP=1.
func TestChaosShort(t *testing.T) {
	if os.Getenv("EXACTLY_CHAOS") != "1" && os.Getenv("EXACTLY_REQUIRE_SERVICES") != "1" {
		t.Skip("set EXACTLY_CHAOS=1 (or EXACTLY_REQUIRE_SERVICES=1, as `make test` does) to run the short chaos cells (starts its own 3-node Kafka cluster)")
	}
	base := 9992
	if v := os.Getenv("EXACTLY_CHAOS_SHORT_PORT_BASE"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "EXACTLY_CHAOS_SHORT_PORT_BASE=%q: want a port number", v)
		base = n
	}
	state := os.Getenv("EXACTLY_CHAOS_SHORT_STATE")
	if state == "" {
		state = "/tmp/exactly-chaos-short"
	}
	version := os.Getenv("EXACTLY_KAFKA_VERSION")
	if version == "" {
		version = "4.1.2"
	}
	pgURL := os.Getenv("EXACTLY_PG_URL")
	if pgURL == "" && os.Getenv("EXACTLY_REQUIRE_SERVICES") == "1" {
		t.Fatal("EXACTLY_PG_URL not set but EXACTLY_REQUIRE_SERVICES=1: the Postgres-mode short cells need it")
	}
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	dir := t.TempDir()
	// t.TempDir is removed at the end; keep what a failed cell's workers
	// logged (cleanups run last-registered first, so this one comes first).
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		keep, err := os.MkdirTemp("", "exactly-chaos-short-failed-")
		if err == nil {
			err = os.CopyFS(keep, os.DirFS(dir))
		}
		if err != nil {
			t.Logf("keeping the workers' logs: %v", err)
			return
		}
		t.Logf("the workers' logs of this run are kept in %s", keep)
	})
	bin := filepath.Join(dir, "worker")
	build := exec.Command("go", "build", "-o", bin, "./integration/chaos/worker")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cl := &Cluster{Script: filepath.Join(root, "scripts", "kafka.sh"), State: state, PortBase: base, Version: version, Log: t.Logf}
	require.NoError(t, cl.Up(ctx))
	if os.Getenv("EXACTLY_CHAOS_KEEP") != "1" {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			require.NoError(t, cl.Down(ctx))
			t.Logf("short chaos cells with the cluster's start and stop: %v", time.Since(start).Round(time.Second))
		})
	}
	cfg := Config{Brokers: cl.Brokers(), Cluster: cl, KafkaVersion: version, PGURL: pgURL, WorkerBin: bin, Dir: dir,
		RunID: "t" + strconv.FormatInt(time.Now().Unix()%100000, 36), Log: t.Logf}
	var results []Result
	for _, c := range ShortMatrix() {
		if c.Mode == Postgres && pgURL == "" {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			res := RunCell(ctx, cfg, c)
			results = append(results, res)
			require.True(t, res.Passed, "%s", Table([]Result{res}))
			if c.Schedule != nil && strings.Contains(c.Fault, "SIGKILL each worker") {
				require.NotEmpty(t, res.Restarts, "restart to first commit measured")
			}
		})
	}
	t.Logf("\n%s", Table(results))
}

// TestLostAckProxy: through the proxy, a COMMIT whose answer is dropped
// fails on the client although the transaction committed. Needs Postgres
// (EXACTLY_PG_URL); skips without it.
func TestLostAckProxy(t *testing.T) {
	pgURL := os.Getenv("EXACTLY_PG_URL")
	if pgURL == "" {
		t.Skip("EXACTLY_PG_URL not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	direct, err := pgx.Connect(ctx, pgURL)
	require.NoError(t, err)
	defer direct.Close(context.Background())
	cfg := direct.Config()
	p := &LostAckProxy{Target: cfg.Host + ":" + strconv.Itoa(int(cfg.Port)), Every: 2}
	addr, err := p.Listen()
	require.NoError(t, err)
	defer p.Close()
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	pc := cfg.Copy()
	pc.Host = host
	n, _ := strconv.Atoi(port)
	pc.Port = uint16(n)
	table := "chaos_proxy_test_" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	_, err = direct.Exec(ctx, "CREATE TABLE "+table+" (v int)")
	require.NoError(t, err)
	defer direct.Exec(context.Background(), "DROP TABLE "+table) //nolint:errcheck

	insert := func(v int) error {
		c, err := pgx.ConnectConfig(ctx, pc)
		require.NoError(t, err)
		defer c.Close(context.Background())
		tx, err := c.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, "INSERT INTO "+table+" VALUES ($1)", v)
		require.NoError(t, err)
		return tx.Commit(ctx)
	}
	require.NoError(t, insert(1)) // the 1st COMMIT is answered
	require.Error(t, insert(2))   // the 2nd's answer is dropped
	require.Equal(t, int64(1), p.Dropped())
	var count int
	require.NoError(t, direct.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&count))
	require.Equal(t, 2, count, "the transaction whose answer was lost committed")
}

// TestShortMatrix: one short cell per fault type of Matrix, with the same
// schedule, a few thousand records and 2 workers (or the cell's MinWorkers);
// none restarts the shared Postgres server.
func TestShortMatrix(t *testing.T) {
	full := map[string]Cell{}
	faults := map[string]bool{}
	for _, c := range Matrix(1) {
		full[c.Name] = c
		if c.Feeder == "" && !c.RestartsSharedServer {
			faults[c.Fault] = true
		}
	}
	short := ShortMatrix()
	got := map[string]bool{}
	for _, c := range short {
		require.False(t, got[c.Fault], "fault %q twice", c.Fault)
		got[c.Fault] = true
		f, ok := full[strings.TrimPrefix(c.Name, "short-")]
		require.True(t, ok, "%s derives from no cell of Matrix", c.Name)
		require.Equal(t, f.Mode, c.Mode)
		require.Equal(t, f.Schedule == nil, c.Schedule == nil, c.Name)
		require.Equal(t, f.AbortRate, c.AbortRate, c.Name)
		require.Equal(t, f.LostCommitAck, c.LostCommitAck, c.Name)
		require.GreaterOrEqual(t, c.Records, 2000, c.Name)
		require.LessOrEqual(t, c.Records, 4000, c.Name)
		require.Equal(t, min(f.Workers, max(2, f.MinWorkers)), c.Workers, c.Name)
		feed := time.Duration(float64(c.Records) / float64(c.Rate) * float64(time.Second))
		require.LessOrEqual(t, feed, shortMaxFeed+time.Second, c.Name)
	}
	require.Equal(t, faults, got, "every fault type of the matrix has a short cell")
}

// A COMMIT line's commit phase began at its time minus the commit's
// duration (the worker prints both, in ns).
func TestCommitBegan(t *testing.T) {
	f := strings.Fields("COMMIT 1796136795971147188 23 1796136789863786094 6107354554 486816 6016020290 0:721,3:654")
	require.Equal(t, int64(1796136795971147188-6016020290), commitBegan(f).UnixNano())
	require.True(t, commitBegan([]string{"COMMIT", "1", "2", "3"}).IsZero())
}

func TestOnlyCompleting(t *testing.T) {
	const (
		prepCommit = "transaction g:w1 is PrepareCommit"
		prepAbort  = "transaction g:w1 is PrepareAbort"
		ongoing    = "transaction g:w2 is Ongoing"
		epochFence = "transaction g:w1 is PrepareEpochFence"
		lag        = "out[2]: last stable offset 5 < high watermark 9"
		pgIdle     = "2 Postgres sessions of the workers idle in transaction"
	)
	for _, tc := range []struct {
		o    openSet
		want bool
	}{
		{openSet{}, false},
		{openSet{lines: []string{prepCommit}, completing: 1}, true},
		{openSet{lines: []string{prepAbort, lag}, completing: 1, lsoLag: 1}, true},
		{openSet{lines: []string{prepCommit, ongoing}, completing: 1}, false},
		{openSet{lines: []string{lag}, lsoLag: 1}, false},
		{openSet{lines: []string{epochFence}}, false},
		{openSet{lines: []string{prepCommit, pgIdle}, completing: 1}, false},
	} {
		require.Equal(t, tc.want, tc.o.onlyCompleting(), "%v", tc.o.lines)
	}
}

// plantedKafka starts an in-process cluster with the topic "in" (10 records
// of partition 0) and an output topic "out-<name>" per plant, and returns
// produceDoctored, which writes a plant's doctored copy of the input (each
// record naming its source in its headers) and returns the output topic and
// how many records it wrote.
func plantedKafka(t *testing.T, pls []plant) (ctx context.Context, brokers []string, produceDoctored func(*testing.T, plant) (string, int)) {
	topics := []string{"in"}
	for _, pl := range pls {
		topics = append(topics, "out-"+pl.name)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topics...))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	brokers = c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	var in []*kgo.Record
	for i := range 10 {
		in = append(in, &kgo.Record{Topic: "in", Partition: 0, Value: []byte(strconv.Itoa(i))})
	}
	require.NoError(t, cl.ProduceSync(ctx, in...).FirstErr()) // fills in each record's partition and offset
	order := make([]int, len(in))
	for i := range order {
		order[i] = i
	}
	return ctx, brokers, func(t *testing.T, pl plant) (string, int) {
		out := "out-" + pl.name
		var rs []*kgo.Record
		for _, i := range pl.doctor(order) {
			rs = append(rs, &kgo.Record{Topic: out, Value: in[i].Value, Headers: kafkasink.AppendSourceHeaders(nil, in[i])})
		}
		require.NoError(t, cl.ProduceSync(ctx, rs...).FirstErr())
		return out, len(rs)
	}
}
