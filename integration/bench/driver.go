package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Contender is one program the benchmark runs: a Go contender of this
// binary (Kind) or the Kafka Streams app (Java).
type Contender struct {
	Name     string        // as in the table
	Family   string        // kafka or postgres
	Kind     string        // alo, gts, exactly, exactly-pg, pgraw, kstreams
	Batch    int           // records per poll/transaction, 0 for the default
	MaxWait  time.Duration // exactly's MaxWait, 0 for the default
	Guarante string        // kstreams: processing.guarantee
	Threads  int           // kstreams: stream threads
	Latency  bool          // measured at a fixed input rate too
	// Extra are more flags of `bench contender`; Optional contenders are
	// diagnostics that run only when -only names them.
	Extra    []string
	Optional bool
}

func contenders() []Contender {
	return []Contender{
		{Name: "alo", Family: "kafka", Kind: "alo", Latency: true},
		{Name: "alo_1k", Family: "kafka", Kind: "alo", Batch: 1000, Latency: true},
		{Name: "gts", Family: "kafka", Kind: "gts", Latency: true},
		{Name: "exactly", Family: "kafka", Kind: "exactly", Latency: true},
		{Name: "exactly_1k", Family: "kafka", Kind: "exactly", Batch: 1000, Latency: true},
		{Name: "exactly_10k", Family: "kafka", Kind: "exactly", Batch: 10_000, Latency: true},
		{Name: "exactly_10ms", Family: "kafka", Kind: "exactly", MaxWait: 10 * time.Millisecond, Latency: true},
		{Name: "kstreams_eos_1t", Family: "kafka", Kind: "kstreams", Guarante: "exactly_once_v2", Threads: 1, Latency: true},
		{Name: "kstreams_eos_2t", Family: "kafka", Kind: "kstreams", Guarante: "exactly_once_v2", Threads: 2, Latency: true},
		{Name: "kstreams_alo", Family: "kafka", Kind: "kstreams", Guarante: "at_least_once", Threads: 1, Latency: true},
		{Name: "exactly_pg", Family: "postgres", Kind: "exactly-pg"},
		{Name: "pgraw", Family: "postgres", Kind: "pgraw"},
		// Diagnostics of what bounds pg/raw (-only names them): exactly
		// without the offset mirror to Kafka, exactly with one Stage call
		// at a time, and the raw loop with exactly's shape — one
		// transaction per partition, on 6 connections at once.
		{Name: "exactly_pg_nomirror", Family: "postgres", Kind: "exactly-pg", Extra: []string{"-mirror=false"}, Optional: true},
		{Name: "exactly_pg_c1", Family: "postgres", Kind: "exactly-pg", Extra: []string{"-concurrency", "1"}, Optional: true},
		{Name: "exactly_pg_fetch4m", Family: "postgres", Kind: "exactly-pg", Extra: []string{"-fetchpart", "4194304"}, Optional: true},
		{Name: "exactly_pg_fetch2m", Family: "postgres", Kind: "exactly-pg", Extra: []string{"-fetchpart", "2097152"}, Optional: true},
		{Name: "exactly_fetch4m", Family: "kafka", Kind: "exactly", Extra: []string{"-fetchpart", "4194304"}, Optional: true},
		{Name: "pgraw_pertx", Family: "postgres", Kind: "pgraw", Extra: []string{"-pertx"}, Optional: true},
	}
}

// Run is the result of one contender's throughput run.
type Run struct {
	Contender string  `json:"contender"`
	Size      int     `json:"value_bytes"`
	Round     int     `json:"round"`
	Records   int     `json:"records"`
	Seconds   float64 `json:"seconds"`        // process start → all committed and visible
	Steady    float64 `json:"steady_seconds"` // first committed progress → all committed
	RecPerS   float64 `json:"records_per_s"`
	CPUSec    float64 `json:"cpu_s"`
	RSSMB     float64 `json:"peak_rss_mb"`
	CommitP50 float64 `json:"commit_p50_ms,omitempty"`
	CommitP99 float64 `json:"commit_p99_ms,omitempty"`
	TookP50   float64 `json:"txn_took_p50_ms,omitempty"`  // exactly: first poll → committed
	StageP50  float64 `json:"txn_stage_p50_ms,omitempty"` // exactly: the Stage
	PollP50   float64 `json:"txn_poll_p50_ms,omitempty"`  // exactly: collecting the batch
	RestP50   float64 `json:"txn_rest_p50_ms,omitempty"`  // exactly: took − poll − stage − commit
	BeginP50  float64 `json:"txn_begin_p50_ms,omitempty"` // exactly_pg: Session.Begin
	PollSum   float64 `json:"txn_poll_sum_s,omitempty"`
	CommitSum float64 `json:"txn_commit_sum_s,omitempty"`
	TookSum   float64 `json:"txn_took_sum_s,omitempty"` // the transactions' Took added up: the rest of Seconds is start and idle
	Commits   int     `json:"commits,omitempty"`
	Aborted   int64   `json:"aborted_txns,omitempty"`
	Others    float64 `json:"others_cores"` // CPU other processes used during the run, in cores
	Disturbed bool    `json:"disturbed"`
	Repeated  bool    `json:"repeated,omitempty"`
}

// Latency is one contender's end-to-end latency at a fixed input rate.
type Latency struct {
	Contender string    `json:"contender"`
	Round     int       `json:"round"`
	Rate      int       `json:"rate"`
	Sent      int       `json:"sent"`
	Received  int       `json:"received"`
	P50       float64   `json:"p50_ms"`
	P99       float64   `json:"p99_ms"`
	Max       float64   `json:"max_ms"`
	Others    float64   `json:"others_cores"`
	Disturbed bool      `json:"disturbed"`
	samples   []float64 // ms
}

type driver struct {
	cfg     config
	adm     *kadm.Client
	kcl     *kgo.Client
	pool    *pgxpool.Pool
	self    string
	seq     int
	inputs  map[int]string // value size → input topic
	runID   string
	broker  int // pid of the broker, for the disturbance check
	workDir string
}

type config struct {
	brokers    string
	pgURL      string
	records    int
	sizes      []int
	rounds     int
	rate       int
	latencyDur time.Duration
	outDir     string
	kstreamsCP string
	brokerPID  string
	only       map[string]bool
	profile    bool
	quietCores float64
}

const partitions = 6

func (d *driver) topicName(kind string) string {
	d.seq++
	return fmt.Sprintf("bench-%s-%s-%d", d.runID, kind, d.seq)
}

// fill produces n records with values of size random letters.
func (d *driver) fill(ctx context.Context, topic string, n, size int) error {
	if _, err := d.adm.CreateTopic(ctx, partitions, 1, nil, topic); err != nil {
		return err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(d.cfg.brokers), kgo.DefaultProduceTopic(topic),
		kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(50_000), kgo.ProducerBatchMaxBytes(1<<20))
	if err != nil {
		return err
	}
	defer cl.Close()
	rng := rand.New(rand.NewPCG(1, uint64(size)))
	pool := make([]byte, 4<<20)
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	for i := range pool {
		pool[i] = letters[rng.IntN(len(letters))]
	}
	var mu sync.Mutex
	var perr error
	for i := range n {
		off := rng.IntN(len(pool) - size)
		cl.Produce(ctx, &kgo.Record{Key: []byte("k" + strconv.Itoa(i)), Value: pool[off : off+size : off+size]},
			func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					perr = err
					mu.Unlock()
				}
			})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	return perr
}

// child is a started contender process.
type child struct {
	cmd       *exec.Cmd
	start     time.Time
	done      chan error
	statsPath string
	stderr    *os.File
}

func (d *driver) startChild(c Contender, in, out, group, rows string, profile string) (*child, error) {
	var cmd *exec.Cmd
	statsPath := filepath.Join(d.workDir, group+".stats.json")
	if c.Kind == "kstreams" {
		cmd = exec.Command("java", "-Xmx512m", "-cp", d.cfg.kstreamsCP, "exactlybench.Copy",
			d.cfg.brokers, in, out, group, c.Guarante, strconv.Itoa(c.Threads), "100")
		statsPath = ""
	} else {
		args := []string{"contender", "-kind", c.Kind, "-brokers", d.cfg.brokers, "-in", in, "-out", out,
			"-group", group, "-stats", statsPath, "-pg", d.cfg.pgURL, "-rows", rows}
		if c.Batch > 0 {
			args = append(args, "-batch", strconv.Itoa(c.Batch))
		}
		if c.MaxWait > 0 {
			args = append(args, "-maxwait", c.MaxWait.String())
		}
		args = append(args, c.Extra...)
		if profile != "" {
			args = append(args, "-cpuprofile", profile)
		}
		cmd = exec.Command(d.self, args...)
	}
	errf, err := os.Create(filepath.Join(d.workDir, group+".stderr"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout = errf
	cmd.Stderr = errf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	ch := &child{cmd: cmd, done: make(chan error, 1), statsPath: statsPath, stderr: errf}
	ch.start = time.Now()
	if err := cmd.Start(); err != nil {
		_ = errf.Close()
		return nil, err
	}
	go func() { ch.done <- cmd.Wait() }()
	return ch, nil
}

// stop sends SIGTERM and waits up to 20 s, then SIGKILLs the child's process
// group. It returns the child's rusage.
func (ch *child) stop() (*syscall.Rusage, error) {
	defer func() { _ = ch.stderr.Close() }()
	_ = ch.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-ch.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-ch.cmd.Process.Pid, syscall.SIGKILL)
		err = <-ch.done
		err = fmt.Errorf("did not stop within 20s after SIGTERM (killed): %v", err)
	}
	ru, _ := ch.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	// Java exits 143 on SIGTERM; Go contenders exit 0.
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 143 {
		err = nil
	}
	return ru, err
}

func (ch *child) exited() error {
	select {
	case err := <-ch.done:
		ch.done <- err
		if err == nil {
			err = errors.New("exited")
		}
		return err
	default:
		return nil
	}
}

// committedKafka is the sum of the group's committed offsets on topic.
func (d *driver) committedKafka(ctx context.Context, group, topic string) (int64, error) {
	offs, err := d.adm.FetchOffsets(ctx, group)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, ps := range offs[topic] {
		if ps.Err == nil && ps.At > 0 {
			sum += ps.At
		}
	}
	return sum, nil
}

func (d *driver) committedPG(ctx context.Context, c Contender, group, topic string) (int64, error) {
	q := `SELECT coalesce(sum(next_offset),0) FROM exactly_bench.exactly_offsets WHERE consumer_group = $1 AND topic = $2`
	if c.Kind == "pgraw" {
		q = `SELECT coalesce(sum(next_offset),0) FROM exactly_bench.raw_offsets WHERE grp = $1 AND topic = $2`
	}
	var n int64
	err := d.pool.QueryRow(ctx, q, group, topic).Scan(&n)
	return n, err
}

// visible reports whether every partition of out has no open transaction
// (last stable offset = high watermark) and the records add up to at least n.
func (d *driver) visible(ctx context.Context, out string, n int64) (bool, error) {
	hw, err := d.adm.ListEndOffsets(ctx, out)
	if err != nil {
		return false, err
	}
	lso, err := d.adm.ListCommittedOffsets(ctx, out)
	if err != nil {
		return false, err
	}
	var sum int64
	ok := true
	hw.Each(func(o kadm.ListedOffset) {
		sum += o.Offset
		if l, found := lso.Lookup(out, o.Partition); !found || l.Offset != o.Offset {
			ok = false
		}
	})
	return ok && sum >= n, nil
}

// throughput runs contender c once on the input of size and returns its run.
func (d *driver) throughput(ctx context.Context, c Contender, size, round int, profile string) (Run, error) {
	in := d.inputs[size]
	out := d.topicName("out")
	group := d.topicName("g-" + c.Name)
	rows := strings.ReplaceAll(group, "-", "_")
	if c.Family == "kafka" {
		if _, err := d.adm.CreateTopic(ctx, partitions, 1, nil, out); err != nil {
			return Run{}, err
		}
		defer d.deleteTopic(out)
	} else {
		if _, err := d.pool.Exec(ctx, `CREATE TABLE `+pgx.Identifier{"exactly_bench", rows}.Sanitize()+
			` (part integer NOT NULL, off bigint NOT NULL, key bytea, value bytea)`); err != nil {
			return Run{}, err
		}
		defer func() {
			_, _ = d.pool.Exec(context.Background(), `DROP TABLE IF EXISTS `+pgx.Identifier{"exactly_bench", rows}.Sanitize())
		}()
	}
	n := int64(d.cfg.records)
	m0 := d.sample()
	ch, err := d.startChild(c, in, out, group, rows, profile)
	if err != nil {
		return Run{}, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_, _ = ch.stop()
		}
	}()
	deadline := time.Now().Add(10 * time.Minute)
	var first time.Time
	var end time.Time
	for {
		if time.Now().After(deadline) {
			return Run{}, fmt.Errorf("%s: not done within 10 minutes", c.Name)
		}
		if err := ch.exited(); err != nil {
			return Run{}, fmt.Errorf("%s exited early: %v (see %s)", c.Name, err, ch.stderr.Name())
		}
		var got int64
		var err error
		if c.Family == "kafka" {
			got, err = d.committedKafka(ctx, group, in)
		} else {
			got, err = d.committedPG(ctx, c, group, in)
		}
		if err == nil && got > 0 && first.IsZero() {
			first = time.Now()
		}
		if err == nil && got >= n {
			if c.Family != "kafka" {
				end = time.Now()
				break
			}
			if ok, err := d.visible(ctx, out, n); err == nil && ok {
				end = time.Now()
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	hwm := vmHWM(ch.cmd.Process.Pid)
	ru, err := ch.stop()
	stopped = true
	if err != nil {
		return Run{}, fmt.Errorf("%s: %v (see %s)", c.Name, err, ch.stderr.Name())
	}
	m1 := d.sample()
	r := Run{Contender: c.Name, Size: size, Round: round, Records: int(n),
		Seconds: end.Sub(ch.start).Seconds(), Steady: end.Sub(first).Seconds()}
	r.RecPerS = float64(n) / r.Seconds
	if ru != nil {
		r.CPUSec = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	// Not ru.Maxrss: Linux carries the high-water mark across execve, so
	// a child's maxrss includes this driver's RSS at fork time.
	r.RSSMB = float64(hwm) / 1024
	r.Others = m1.others(m0, r.CPUSec)
	r.Disturbed = r.Others > d.cfg.quietCores
	if ch.statsPath != "" {
		if data, err := os.ReadFile(ch.statsPath); err == nil {
			var st childStats
			if json.Unmarshal(data, &st) == nil {
				r.Commits, r.Aborted = st.Commits, st.AbortedTx
				if len(st.CommitMS) > 0 {
					r.CommitP50, r.CommitP99 = Percentile(st.CommitMS, 50), Percentile(st.CommitMS, 99)
				}
				r.TookP50, r.StageP50 = Percentile(st.TookMS, 50), Percentile(st.StageMS, 50)
				r.PollP50, r.RestP50 = Percentile(st.PollMS, 50), Percentile(st.RestMS, 50)
				r.BeginP50 = Percentile(st.BeginMS, 50)
				for _, ms := range st.TookMS {
					r.TookSum += ms / 1000
				}
				r.PollSum, r.CommitSum = sum(st.PollMS)/1000, sum(st.CommitMS)/1000
			}
		}
	}
	if c.Family == "kafka" {
		if err := d.checkOutput(ctx, out, n, c); err != nil {
			return r, err
		}
	} else {
		var cnt int64
		if err := d.pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{"exactly_bench", rows}.Sanitize()).Scan(&cnt); err != nil {
			return r, err
		}
		if cnt != n {
			return r, fmt.Errorf("%s: %d rows, want %d", c.Name, cnt, n)
		}
	}
	return r, nil
}

func sum(xs []float64) float64 {
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return t
}

// checkOutput checks the output's offsets: exactly n records for the
// idempotent at-least-once loops (no failures, so no duplicates), at least n
// for the transactional ones (their offsets include commit markers).
func (d *driver) checkOutput(ctx context.Context, out string, n int64, c Contender) error {
	hw, err := d.adm.ListEndOffsets(ctx, out)
	if err != nil {
		return err
	}
	var sum int64
	hw.Each(func(o kadm.ListedOffset) { sum += o.Offset })
	if sum < n || (c.Kind == "alo" && sum != n) {
		return fmt.Errorf("%s: output %s holds %d offsets for %d input records", c.Name, out, sum, n)
	}
	return nil
}

func (d *driver) deleteTopic(t string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = d.adm.DeleteTopic(ctx, t)
}

// latency runs c on a fresh input produced at cfg.rate records/s for
// cfg.latencyDur, and measures send time → visible to a read_committed
// consumer of the output.
func (d *driver) latency(ctx context.Context, c Contender, round int) (Latency, error) {
	in, out := d.topicName("lat-in"), d.topicName("lat-out")
	group := d.topicName("lat-g-" + c.Name)
	for _, t := range []string{in, out} {
		if _, err := d.adm.CreateTopic(ctx, partitions, 1, nil, t); err != nil {
			return Latency{}, err
		}
		defer d.deleteTopic(t)
	}
	m0 := d.sample()
	ch, err := d.startChild(c, in, out, group, "", "")
	if err != nil {
		return Latency{}, err
	}
	defer func() { _, _ = ch.stop() }()
	// Wait until the contender's group is stable with members.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if time.Now().After(deadline) {
			return Latency{}, fmt.Errorf("%s: group %s not stable within 60s", c.Name, group)
		}
		if err := ch.exited(); err != nil {
			return Latency{}, fmt.Errorf("%s exited early: %v (see %s)", c.Name, err, ch.stderr.Name())
		}
		gs, err := d.adm.DescribeGroups(ctx, group)
		if err == nil {
			if g, ok := gs[group]; ok && g.State == "Stable" && len(g.Members) > 0 {
				if len(g.AssignedPartitions()[in]) == partitions {
					break
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // let the first fetches start
	cons, err := kgo.NewClient(kgo.SeedBrokers(d.cfg.brokers), kgo.ConsumeTopics(out),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(10*time.Millisecond),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return Latency{}, err
	}
	defer cons.Close()
	prod, err := kgo.NewClient(kgo.SeedBrokers(d.cfg.brokers), kgo.DefaultProduceTopic(in), kgo.ProducerLinger(0))
	if err != nil {
		return Latency{}, err
	}
	defer prod.Close()

	total := int(float64(d.cfg.rate) * d.cfg.latencyDur.Seconds())
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	var sent int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		const tick = 5 * time.Millisecond
		per := d.cfg.rate * int(tick) / int(time.Second)
		t := time.NewTicker(tick)
		defer t.Stop()
		val := make([]byte, 100)
		for i := range val {
			val[i] = 'a' + byte(i%26)
		}
		for sent < total {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			for range min(per, total-sent) {
				ts := strconv.FormatInt(time.Now().UnixNano(), 10)
				prod.Produce(pctx, &kgo.Record{Key: []byte("k" + strconv.Itoa(sent)), Value: val,
					Headers: []kgo.RecordHeader{{Key: "sent", Value: []byte(ts)}}}, nil)
				sent++
			}
		}
	}()
	samples := make([]float64, 0, total)
	rdeadline := time.Now().Add(d.cfg.latencyDur + 30*time.Second)
	for len(samples) < total && time.Now().Before(rdeadline) {
		fctx, fcancel := context.WithTimeout(ctx, time.Second)
		fs := cons.PollFetches(fctx)
		fcancel()
		now := time.Now().UnixNano()
		fs.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == "sent" {
					if t, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
						samples = append(samples, float64(now-t)/1e6)
					}
				}
			}
		})
	}
	pcancel()
	wg.Wait()
	m1 := d.sample()
	l := Latency{Contender: c.Name, Round: round, Rate: d.cfg.rate, Sent: sent, Received: len(samples),
		P50: Percentile(samples, 50), P99: Percentile(samples, 99), Max: Percentile(samples, 100), samples: samples}
	l.Others = m1.others(m0, 0)
	l.Disturbed = l.Others > d.cfg.quietCores+1 // the producer, consumer and contender are ours
	if len(samples) < total {
		return l, fmt.Errorf("%s: received %d of %d records within the deadline", c.Name, len(samples), total)
	}
	return l, nil
}

// cpuSample is the machine's busy CPU and that of the processes we know
// (this driver and the broker) at one moment.
type cpuSample struct {
	at     time.Time
	busy   time.Duration
	driver time.Duration
	broker time.Duration
}

func (d *driver) sample() cpuSample {
	s := cpuSample{at: time.Now(), busy: systemBusy()}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.driver = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if d.broker > 0 {
		s.broker = procCPU(d.broker)
	}
	return s
}

// others is the CPU, in cores, that processes other than ours used between
// s0 and s: the machine's busy time less the driver's, the broker's and the
// child's.
func (s cpuSample) others(s0 cpuSample, childCPU float64) float64 {
	wall := s.at.Sub(s0.at).Seconds()
	if wall <= 0 || s.busy == 0 {
		return 0
	}
	o := (s.busy - s0.busy - (s.driver - s0.driver) - (s.broker - s0.broker)).Seconds() - childCPU
	return max(0, o/wall)
}

// systemBusy is the CPU time all processes used so far (/proc/stat).
func systemBusy() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
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
	return time.Duration(ticks) * time.Second / 100
}

// procCPU is the user+system CPU of pid from /proc/<pid>/stat.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * time.Second / 100
}

// vmHWM is the peak resident set of pid in KiB (VmHWM of /proc/<pid>/status),
// 0 where it cannot be read.
func vmHWM(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
