package pipeline_test

// Throughput benchmarks: Kafka mode against a plain at-least-once
// consume→produce loop on the same broker, measured in the same run.
//
//	go test -run '^$' -bench Throughput -benchtime=1x ./pipeline/
//
// See BENCHMARKS.md for what the numbers mean and what limits the ratio.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

const (
	benchInput      = "bench-in"
	benchPartitions = 6
	// benchRecords is a multiple of every MaxRecords swept below, so the
	// last transaction fills up and never waits out MaxWait: the runs
	// measure throughput, not the latency bound of the final batch. Runs
	// of about a second keep the noise of a shared 2-core machine down.
	benchRecords    = 1_000_000
	benchValueBytes = 100
	// benchRounds is how many times each loop runs per setting. The two
	// loops alternate and swap who goes first each round, so drift of the
	// machine hits both alike.
	benchRounds = 5
	// benchQuietCores is how much CPU other processes may use during a
	// run before its round counts as disturbed and is run again (at most
	// benchRounds extra times per setting). On a shared 2-core machine one
	// busy neighbour cuts a run's rate by a third; without this the
	// ratio's noise is ±20%.
	benchQuietCores = 0.25
	// benchQuietWait is how long, in all, runs may wait for the machine to
	// be quiet (other processes below benchQuietCores for 300ms) before
	// they start.
	benchQuietWait = 20 * time.Second

	// The long-input benchmark: enough records that anything kept per
	// record would show in the heap.
	benchLongRecords = 1_000_000
	// benchWindows splits a run by progress: the peak live heap is kept
	// per window, and the first and last are compared.
	benchWindows = 5

	envBenchRecords = "EXACTLY_BENCH_RECORDS"      // overrides benchRecords
	envBenchRounds  = "EXACTLY_BENCH_ROUNDS"       // overrides benchRounds
	envBenchLong    = "EXACTLY_BENCH_LONG_RECORDS" // overrides benchLongRecords
	envBenchBroker  = "EXACTLY_BENCH_BROKER_PROCESS"
)

func benchEnvInt(b *testing.B, name string, def, multipleOf int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n%multipleOf != 0 {
		b.Fatalf("%s=%q: want a positive multiple of %d", name, v, multipleOf)
	}
	return n
}

// BenchmarkThroughput runs a plain at-least-once consume→produce loop and
// the pipeline in Kafka mode over the same input on one in-process kfake
// cluster, alternately, and reports the records/s of each and their ratio.
//
// Each setting compares the two at the same batch size: the plain loop
// polls (and commits) up to as many records per iteration as the pipeline
// puts in one transaction, so the ratio is the cost of exactly-once itself.
// The "default" setting uses the pipeline's defaults and gives the plain
// loop the batch size the pipeline turned out to use.
//
// Other processes on the machine move the numbers far more than anything
// measured here, so each run first waits (within a budget) for a quiet
// moment, and a round in which other processes used more than
// benchQuietCores is dropped and run again (at most benchRounds times).
//
// Metrics, each the median over the rounds kept: <loop>-rec/s, from the
// first record fetched to the last offsets committed; ratio, the median of
// the rounds' exactly/plain ratios; ratio-best, best run over best run;
// cpu-µs/rec, allocs/rec and B/rec of the whole process (which includes
// the in-process broker) per input record; rec/commit.
func BenchmarkThroughput(b *testing.B) {
	n := benchEnvInt(b, envBenchRecords, benchRecords, 50_000)
	rounds := benchEnvInt(b, envBenchRounds, benchRounds, 1)
	if !canSeeOthers() {
		b.Logf("/proc/stat unreadable: cannot tell disturbed rounds, all count")
	}
	// The cluster of testkit.Cluster, closed on return rather than in a
	// Cleanup: the testing package keeps a finished benchmark's cleanups
	// reachable, and with them every record the cluster stored, which
	// would then sit in the heap BenchmarkThroughputLongInput measures.
	c, err := kfake.NewCluster(
		kfake.NumBrokers(3),
		kfake.SeedTopics(benchPartitions, benchInput),
		kfake.GroupMinSessionTimeout(100*time.Millisecond),
	)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	env := newBenchEnv(b, c.ListenAddrs())
	defer env.close()
	env.fill(b, n)
	// One discarded run of each first: the first runs in a process pay
	// for connections, code paths and heap growth the later ones do not.
	// The pipeline's run also tells its default batch size.
	warm := env.runExactly(b, n)
	env.runPlain(b, n, warm.maxBatch)

	settings := []struct {
		name  string
		batch int
		opts  []pipeline.Opt
	}{
		{"default", warm.maxBatch, nil},
		{"MaxRecords=1000", 1_000, []pipeline.Opt{pipeline.MaxRecords(1_000)}},
		{"MaxRecords=50000", 50_000, []pipeline.Opt{pipeline.MaxRecords(50_000)}},
	}
	for _, s := range settings {
		b.Run(s.name, func(b *testing.B) {
			var base, exact []benchResult
			for range b.N {
				for round := 0; len(base) < rounds && round < 2*rounds; round++ {
					var rb, re benchResult
					if round%2 == 0 {
						rb = env.runPlain(b, n, s.batch)
						re = env.runExactly(b, n, s.opts...)
					} else {
						re = env.runExactly(b, n, s.opts...)
						rb = env.runPlain(b, n, s.batch)
					}
					// A disturbed round is run again, unless the
					// attempts left are just enough for the rounds
					// still missing.
					quiet := rb.others < benchQuietCores && re.others < benchQuietCores
					keep := quiet || 2*rounds-round <= rounds-len(base)
					note := ""
					switch {
					case !quiet && keep:
						note = " (disturbed, kept: out of retries)"
					case !quiet:
						note = " (disturbed: dropped, run again)"
					}
					b.Logf("round %d: plain %s | exactly %s | ratio %.3f%s", round, rb, re, re.rate()/rb.rate(), note)
					if keep {
						base, exact = append(base, rb), append(exact, re)
					}
				}
			}
			var ratios []float64
			for i := range base {
				ratios = append(ratios, exact[i].rate()/base[i].rate())
			}
			reportResults(b, "plain", base)
			reportResults(b, "exactly", exact)
			b.ReportMetric(median(ratios), "ratio")
			b.ReportMetric(best(exact)/best(base), "ratio-best")
			b.ReportMetric(0, "ns/op") // one op is many runs of both loops: meaningless
		})
	}
}

// BenchmarkThroughputLongInput runs both loops once over a million records
// with the broker in a child process, so that the heap sampled here is the
// clients' alone (an in-process kfake keeps every record it stores in the
// same heap). It reports the peak live heap (what the last GC marked: the
// memory the loop holds) over the first fifth of the input and over the
// last fifth: about equal peaks mean memory does not grow with the input.
// The peak of the heap including garbage not yet collected (GOGC lets it
// grow to about twice the live heap) is reported too. Its rec/s and ratio
// come from one run each, so they are only indicative.
func BenchmarkThroughputLongInput(b *testing.B) {
	if testing.Short() {
		b.Skip("long input")
	}
	n := benchEnvInt(b, envBenchLong, benchLongRecords, 50_000)
	// An in-process cluster closed by an earlier benchmark stays reachable
	// from its pending timers (long polls, group timeouts) until they
	// fire; let them, so its records are not counted here.
	time.Sleep(time.Second)
	brokers := startBrokerProcess(b)
	env := newBenchEnv(b, brokers)
	defer env.close()
	env.fill(b, n)
	for range b.N {
		re := env.runExactly(b, n)
		rb := env.runPlain(b, n, re.maxBatch)
		b.Logf("%d records: plain %s, peak live heap by fifth of the input %s MiB, peak heap %.1f MiB | exactly %s, peak live heap by fifth %s MiB, peak heap %.1f MiB | ratio %.3f", n,
			rb, fmtMiB(rb.peakLive[:]), mib(rb.peakHeap), re, fmtMiB(re.peakLive[:]), mib(re.peakHeap), re.rate()/rb.rate())
		b.ReportMetric(rb.rate(), "plain-rec/s")
		b.ReportMetric(re.rate(), "exactly-rec/s")
		b.ReportMetric(re.rate()/rb.rate(), "ratio")
		b.ReportMetric(mib(rb.peakLive[0]), "plain-liveMiB-first")
		b.ReportMetric(mib(rb.peakLive[benchWindows-1]), "plain-liveMiB-last")
		b.ReportMetric(mib(rb.peakHeap), "plain-heapMiB")
		b.ReportMetric(mib(re.peakLive[0]), "exactly-liveMiB-first")
		b.ReportMetric(mib(re.peakLive[benchWindows-1]), "exactly-liveMiB-last")
		b.ReportMetric(mib(re.peakHeap), "exactly-heapMiB")
		b.ReportMetric(float64(rb.mallocs)/float64(rb.records), "plain-allocs/rec")
		b.ReportMetric(float64(re.mallocs)/float64(re.records), "exactly-allocs/rec")
	}
	b.ReportMetric(0, "ns/op")
}

// benchResult is one run of one loop.
type benchResult struct {
	records int
	took    time.Duration // first record fetched → last offsets committed
	startup time.Duration // client created → first record fetched
	mallocs uint64        // heap allocations during took, whole process
	bytes   uint64        // heap bytes allocated during took, whole process
	cpu     time.Duration // user+system CPU of the whole process, client created → end
	others  float64       // cores other processes kept busy during the run (from /proc/stat)
	txns    int           // commits (transactions, or offset commits for the plain loop)
	// maxBatch is the most records one commit covered.
	maxBatch int
	// Sampled every 5ms during the run: the peak of the live heap (as
	// marked by the last GC) in each window of progress (window i holds
	// the samples taken while i/benchWindows to (i+1)/benchWindows of
	// the records were committed), and the peak of the heap including
	// garbage.
	peakLive [benchWindows]uint64
	peakHeap uint64
}

func mib(bytes uint64) float64 { return float64(bytes) / (1 << 20) }

func fmtMiB(xs []uint64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf("%.1f", mib(x)))
	}
	return strings.Join(parts, "/")
}

func (r benchResult) rate() float64 { return float64(r.records) / r.took.Seconds() }

func (r benchResult) String() string {
	return fmt.Sprintf("%7.0f rec/s (%v, start %v, %d commits, %.2f cpu-µs/rec, %.1f allocs/rec, %.0f B/rec, others %.2f cores)",
		r.rate(), r.took.Round(time.Millisecond), r.startup.Round(time.Millisecond), r.txns,
		r.cpuPerRec(), float64(r.mallocs)/float64(r.records), float64(r.bytes)/float64(r.records), r.others)
}

func (r benchResult) cpuPerRec() float64 {
	return float64(r.cpu.Microseconds()) / float64(r.records)
}

func reportResults(b *testing.B, name string, rs []benchResult) {
	var rates, cpu, allocs, bytes, perTxn []float64
	for _, r := range rs {
		rates = append(rates, r.rate())
		cpu = append(cpu, r.cpuPerRec())
		allocs = append(allocs, float64(r.mallocs)/float64(r.records))
		bytes = append(bytes, float64(r.bytes)/float64(r.records))
		perTxn = append(perTxn, float64(r.records)/float64(max(r.txns, 1)))
	}
	b.ReportMetric(median(rates), name+"-rec/s")
	b.ReportMetric(median(cpu), name+"-cpu-µs/rec")
	b.ReportMetric(median(allocs), name+"-allocs/rec")
	b.ReportMetric(median(bytes), name+"-B/rec")
	b.ReportMetric(median(perTxn), name+"-rec/commit")
}

// best is the highest rate of rs.
func best(rs []benchResult) float64 {
	var m float64
	for _, r := range rs {
		m = max(m, r.rate())
	}
	return m
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// benchEnv is a cluster with the input topic; each run gets a fresh group
// and a fresh output topic, deleted afterwards so the broker's heap does not
// grow from run to run.
type benchEnv struct {
	brokers     []string
	adm         *kadm.Client
	seq         int
	quietBudget time.Duration // what is left of benchQuietWait
}

func newBenchEnv(b *testing.B, brokers []string) *benchEnv {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		b.Fatal(err)
	}
	return &benchEnv{brokers: brokers, adm: kadm.NewClient(cl), quietBudget: benchQuietWait}
}

func (e *benchEnv) close() { e.adm.Close() }

// fill produces n records of benchValueBytes to the input topic, spread
// over its partitions by key.
func (e *benchEnv) fill(b *testing.B, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := e.adm.CreateTopic(ctx, benchPartitions, -1, nil, benchInput); err != nil && !strings.Contains(err.Error(), "TOPIC_ALREADY_EXISTS") {
		b.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.DefaultProduceTopic(benchInput),
		kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	// Values are random letters, cut at random places from a pool much
	// larger than snappy's 64 KiB window: snappy (the producer's default
	// codec) finds almost nothing to compress, so records cost on the
	// wire and in fetches what 100 bytes cost. A constant value would
	// compress a hundredfold and make fetches of 100k records.
	var (
		perr = atomic.Pointer[error]{}
		rng  = rand.New(rand.NewPCG(1, 2))
		pool = make([]byte, 4<<20)
	)
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	for i := range pool {
		pool[i] = letters[rng.IntN(len(letters))]
	}
	for i := range n {
		off := rng.IntN(len(pool) - benchValueBytes)
		v := pool[off : off+benchValueBytes : off+benchValueBytes]
		r := &kgo.Record{Key: []byte("k" + strconv.Itoa(i)), Value: v}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				e := err // declared here, so only a failure allocates
				perr.CompareAndSwap(nil, &e)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	if p := perr.Load(); p != nil {
		b.Fatal(*p)
	}
}

// next makes a fresh output topic and group name for one run, and returns
// a cleanup that deletes the topic and group.
func (e *benchEnv) next(b *testing.B, kind string) (group, out string, cleanup func()) {
	e.seq++
	group = fmt.Sprintf("bench-%s-%d", kind, e.seq)
	out = fmt.Sprintf("bench-out-%d", e.seq)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.adm.CreateTopic(ctx, benchPartitions, -1, nil, out); err != nil {
		b.Fatal(err)
	}
	runtime.GC() // start each run from the same heap, without the last run's garbage
	e.waitQuiet()
	return group, out, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := e.adm.DeleteTopic(ctx, out); err != nil {
			b.Logf("deleting %s: %v", out, err)
		}
		if _, err := e.adm.DeleteGroup(ctx, group); err != nil {
			b.Logf("deleting group %s: %v", group, err)
		}
	}
}

// waitQuiet waits, while the budget lasts, until other processes leave the
// machine alone for 300ms.
func (e *benchEnv) waitQuiet() {
	if !canSeeOthers() {
		return
	}
	for e.quietBudget > 0 {
		start, busy0, cpu0 := time.Now(), systemBusy(), processCPU()
		time.Sleep(300 * time.Millisecond)
		took := time.Since(start)
		e.quietBudget -= took
		if float64(systemBusy()-busy0-(processCPU()-cpu0))/float64(took) < benchQuietCores {
			return
		}
	}
}

// benchCopy is the transformation both loops apply: testkit's copy, which
// names the source of each output in headers.
func benchCopy(out string, r *kgo.Record) *kgo.Record { return testkit.CopyRecord(out, r) }

func benchStage(out string) pipeline.Stage[*kafkasink.Writer] {
	return pipeline.StageFunc[*kafkasink.Writer](func(_ context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
		for _, r := range b.Records {
			w.Produce(benchCopy(out, r))
		}
		return nil
	})
}

// runPlain is the fair "careless but fast" baseline: a group consumer with
// kgo's defaults (but the pipeline's fetch wait) that polls whatever is
// buffered, up to batch records, produces the copies asynchronously,
// flushes, and commits the offsets of the poll. At least once: a crash
// between the flush and the commit duplicates the poll.
func (e *benchEnv) runPlain(b *testing.B, n, batch int) benchResult {
	group, out, cleanup := e.next(b, "plain")
	defer cleanup()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var first firstFetch
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(e.brokers...),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(benchInput),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		// As the pipeline's consumer (it sets MaxWait). It matters
		// only once the input is drained, where kgo's 5s default
		// leaves a long poll pending in the broker.
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.WithHooks(&first),
	)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()

	m := startMeter(n)
	defer m.stop()
	var (
		perr    atomic.Pointer[error]
		promise = func(_ *kgo.Record, err error) {
			if err != nil {
				e := err // declared here, so only a failure allocates
				perr.CompareAndSwap(nil, &e)
			}
		}
		done, commits, maxBatch int
	)
	for done < n {
		fs := cl.PollRecords(ctx, batch)
		if err := ctx.Err(); err != nil {
			b.Fatalf("plain loop: %v after %d records", err, done)
		}
		if err := fs.Err(); err != nil {
			b.Fatalf("plain loop: poll: %v", err)
		}
		fs.EachRecord(func(r *kgo.Record) { cl.Produce(ctx, benchCopy(out, r), promise) })
		if err := cl.Flush(ctx); err != nil {
			b.Fatalf("plain loop: flush: %v", err)
		}
		if p := perr.Load(); p != nil {
			b.Fatalf("plain loop: produce: %v", *p)
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			b.Fatalf("plain loop: commit: %v", err)
		}
		done += fs.NumRecords()
		commits++
		maxBatch = max(maxBatch, fs.NumRecords())
		m.committed(done)
	}
	res := m.result(&first, done, commits)
	res.maxBatch = maxBatch
	e.checkOutput(b, out, n, n)
	return res
}

// runExactly runs the pipeline in Kafka mode with opts until all n records
// are committed.
func (e *benchEnv) runExactly(b *testing.B, n int, opts ...pipeline.Opt) benchResult {
	group, out, cleanup := e.next(b, "exactly")
	defer cleanup()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var (
		first         firstFetch
		m             *meter
		done, commits int
		maxBatch      int
		res           benchResult
	)
	opts = append([]pipeline.Opt{
		pipeline.Brokers(e.brokers...),
		pipeline.Group(group),
		pipeline.Topics(benchInput),
		pipeline.InstanceID("bench"),
		pipeline.ClientOpts(kgo.WithHooks(&first)),
		pipeline.OnCommit(func(ci pipeline.CommitInfo) {
			done += ci.Records
			commits++
			maxBatch = max(maxBatch, ci.Records)
			m.committed(done)
			if done >= n && res.records == 0 {
				res = m.result(&first, done, commits)
				res.maxBatch = maxBatch
				cancel()
			}
		}),
	}, opts...)
	p, err := pipeline.New(kafkasink.New(), benchStage(out), opts...)
	if err != nil {
		b.Fatal(err)
	}
	m = startMeter(n)
	defer m.stop()
	if err := p.Run(ctx); err != nil {
		b.Fatalf("pipeline: %v", err)
	}
	if res.records == 0 {
		b.Fatalf("pipeline stopped after %d of %d records: %v", done, n, context.Cause(ctx))
	}
	if st := p.Stats(); st.AbortedTxns > 0 {
		b.Logf("pipeline aborted %d transactions", st.AbortedTxns)
	}
	// Each commit adds at most one marker per output partition.
	e.checkOutput(b, out, n, n+commits*benchPartitions)
	return res
}

// checkOutput fails the benchmark unless out's end offsets add up to
// between lo and hi: a loop that wrote nothing would be very fast.
func (e *benchEnv) checkOutput(b *testing.B, out string, lo, hi int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offs, err := e.adm.ListEndOffsets(ctx, out)
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		b.Fatalf("listing the end offsets of %s: %v", out, err)
	}
	var sum int
	offs.Each(func(o kadm.ListedOffset) { sum += int(o.Offset) })
	if sum < lo || sum > hi {
		b.Fatalf("%s holds %d offsets, want %d..%d", out, sum, lo, hi)
	}
}

// firstFetch records when the first batch of records was read from a
// broker, so that both loops are timed from their first record and group
// joins and fencing stay out of the throughput.
type firstFetch struct{ at atomic.Int64 }

func (f *firstFetch) OnFetchBatchRead(kgo.BrokerMetadata, string, int32, kgo.FetchBatchMetrics) {
	if f.at.Load() == 0 {
		f.at.CompareAndSwap(0, time.Now().UnixNano())
	}
}

// meter measures one run from the creation of its client to its last
// commit: allocations, CPU of this process and of the others, and the heap,
// sampled every 5ms.
type meter struct {
	start  time.Time
	cpu0   time.Duration
	busy0  time.Duration
	ms0    runtime.MemStats
	n      int
	quit   chan struct{}
	wg     sync.WaitGroup
	window atomic.Int64 // which window of progress the run is in
	live   [benchWindows]atomic.Uint64
	heap   atomic.Uint64
}

var heapSamples = []metrics.Sample{
	{Name: "/gc/heap/live:bytes"},
	{Name: "/memory/classes/heap/objects:bytes"},
}

func startMeter(n int) *meter {
	m := &meter{start: time.Now(), cpu0: processCPU(), busy0: systemBusy(), n: n, quit: make(chan struct{})}
	runtime.ReadMemStats(&m.ms0)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		s := slices.Clone(heapSamples)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			w := &m.live[m.window.Load()]
			if v := s[0].Value.Uint64(); v > w.Load() {
				w.Store(v)
			}
			if v := s[1].Value.Uint64(); v > m.heap.Load() {
				m.heap.Store(v)
			}
			select {
			case <-t.C:
			case <-m.quit:
				return
			}
		}
	}()
	return m
}

func (m *meter) committed(done int) {
	m.window.Store(int64(min(done*benchWindows/m.n, benchWindows-1)))
}

func (m *meter) result(first *firstFetch, records, commits int) benchResult {
	end, cpu, busy := time.Now(), processCPU(), systemBusy()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	t0 := time.Unix(0, first.at.Load())
	if first.at.Load() == 0 {
		t0 = m.start
	}
	r := benchResult{
		records:  records,
		took:     end.Sub(t0),
		startup:  t0.Sub(m.start),
		cpu:      cpu - m.cpu0,
		others:   max(0, float64(busy-m.busy0-(cpu-m.cpu0))/float64(end.Sub(m.start))),
		mallocs:  ms1.Mallocs - m.ms0.Mallocs,
		bytes:    ms1.TotalAlloc - m.ms0.TotalAlloc,
		txns:     commits,
		peakHeap: m.heap.Load(),
	}
	for i := range r.peakLive {
		r.peakLive[i] = m.live[i].Load()
	}
	return r
}

// systemBusy is the CPU time all processes used so far, from the first
// line of /proc/stat (0 where there is none).
func systemBusy() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal guest guest_nice
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for i, v := range f[1:8] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		x, _ := strconv.ParseInt(v, 10, 64)
		ticks += x
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/stat: 100 on every Linux ABI Go
// supports.
const clockTicks = 100

func canSeeOthers() bool { return systemBusy() > 0 }

// processCPU is the user and system CPU time the process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (m *meter) stop() {
	select {
	case <-m.quit:
	default:
		close(m.quit)
	}
	m.wg.Wait()
}

// startBrokerProcess runs a one-broker kfake cluster in a child process
// (TestBenchBrokerProcess) and returns its address; the child exits when
// the benchmark ends.
func startBrokerProcess(b *testing.B) []string {
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchBrokerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envBenchBroker+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close() // the child closes its cluster and exits
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if addrs, ok := strings.CutPrefix(sc.Text(), "BROKERS "); ok {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return strings.Split(addrs, ",")
		}
	}
	b.Fatalf("broker process exited before it listened: %v", errors.Join(sc.Err(), cmd.Wait()))
	return nil
}

// TestBenchBrokerProcess is not a test: it is the broker that
// BenchmarkThroughputLongInput runs in a child process. It serves until its
// stdin closes.
func TestBenchBrokerProcess(t *testing.T) {
	if os.Getenv(envBenchBroker) == "" {
		t.Skip("runs only as the long-input benchmark's broker process")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(benchPartitions, benchInput))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Printf("BROKERS %s\n", strings.Join(c.ListenAddrs(), ","))
	_, _ = io.Copy(io.Discard, os.Stdin)
}
