// Package chaos is the fault suite: it runs pipeline workers as separate OS
// processes (integration/chaos/worker) against the suite's own 3-node Apache
// Kafka cluster (and Postgres), feeds input, injects faults on a schedule
// that waits for progress (SIGKILL, SIGTERM, SIGSTOP/SIGCONT of workers,
// kill -9 of brokers, random Stage failures, churn), and checks the output
// with the independent verifier (internal/verify: a read_committed consumer,
// or SQL over the result rows): 0 duplicates, 0 missing, order kept per input
// partition, no transaction left open. `make chaos` runs the matrix
// (integration/chaos/driver); TestChaosShort runs one short cell.
package chaos

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/sinks/pgsink"
)

// Config is what every cell shares.
type Config struct {
	Brokers      []string      // the suite's own cluster
	Cluster      *Cluster      // to kill and restart its nodes (broker cells)
	KafkaVersion string        // for the table
	PGURL        string        // Postgres cells; "" skips them
	PGSchema     string        // the suite's schema in the shared server (default "chaos")
	WorkerBin    string        // the built integration/chaos/worker
	Dir          string        // logs
	RunID        string        // makes topic, group and table names unique
	Partitions   int32         // input and output partitions (default 6)
	ToolsDir     string        // kafka-tools jars of the broker's version (kafka.sh tools-fetch), for FeederVerifiableProducer
	LiveEvery    time.Duration // the concurrent verifier's period (default 1.5s; < 0 turns it off)
	Log          func(format string, args ...any)
	// Tap, if set, sees every line a worker prints on stdout, with the time
	// the driver read it (from the process's reader goroutine: it must be
	// safe for concurrent use and fast).
	Tap func(p *Proc, read time.Time, line string)
}

// Mode is where the effects go.
type Mode string

// The modes.
const (
	Kafka    Mode = "kafka"
	Postgres Mode = "postgres"
)

// Cell is one row of the matrix.
type Cell struct {
	Name      string
	Fault     string
	Mode      Mode
	Records   int
	Rate      int // records per second the feeder writes
	Workers   int
	AbortRate float64 // probability that a Stage call fails
	// Schedule injects the faults; it runs while the feeder writes and
	// returns once every fault was injected (and healed).
	Schedule func(ctx context.Context, r *Run) error
	// ExtraArgs are given to every worker of the cell.
	ExtraArgs []string
	// LostCommitAck > 0 puts a LostAckProxy between the workers and
	// Postgres that drops the answer to every LostCommitAck-th COMMIT.
	LostCommitAck int64
	// KafkaProxy puts a KafkaProxy between each worker and the brokers
	// (the kill-mid-commit cells trigger on the requests it sees).
	KafkaProxy bool
	// LostEndTxnAck > 0 (implies KafkaProxy) drops the answer to every
	// LostEndTxnAck-th EndTxn request of each worker.
	LostEndTxnAck int64
	// LostEndTxnFor > 0: after each drop, every EndTxn answer of that
	// worker is dropped for this long (its retries too).
	LostEndTxnFor time.Duration
	// PGCrash "before" or "after" puts a Postgres proxy between the
	// workers and the server whose COMMIT hooks the schedule arms to
	// SIGKILL a worker right before its COMMIT is forwarded, or right
	// after the server's answer arrived (which is then not forwarded).
	PGCrash string
	// Feeder writes the input: "" the suite's own Go producer,
	// FeederVerifiableProducer Kafka's kafka-verifiable-producer.
	Feeder string
	// MinWorkers is how many workers the schedule needs at least
	// (ShortMatrix keeps them; default 2).
	MinWorkers int
	// RestartsSharedServer marks a cell that restarts the Postgres server
	// everyone shares; ShortMatrix leaves it out, because `make test` runs
	// other packages' Postgres tests at the same time.
	RestartsSharedServer bool
}

// Run is one cell being run.
type Run struct {
	Cfg  Config
	Cell Cell
	Dir  string

	in, out, group, table string

	adm       *kadm.Client
	kcl       *kgo.Client
	pool      *pgxpool.Pool
	proxy     *LostAckProxy
	proxyAddr string

	committed atomic.Int64 // records committed, summed over every process's COMMIT lines
	fed       atomic.Int64

	unreportedOnce sync.Once // InputCommitted's note

	mu         sync.Mutex
	changed    chan struct{}
	procs      []*Proc
	gens       map[string]int
	live       map[string]*Proc // the current process per instance id that should run
	intended   map[*Proc]bool   // processes the schedule signalled
	restarts   []time.Duration
	orphans    int     // SIGKILLs that left a transaction open
	vp         *vpAcks // what the verifiable producer acknowledged (FeederVerifiableProducer)
	lastCommit time.Time
	maxGap     time.Duration // the longest time between two commits of any worker
	maxGapAt   float64       // progress when it ended
	notes      []string
	failures   []string
	faults     *faults // faults.go
}

func (r *Run) logf(format string, args ...any) {
	if r.Cfg.Log != nil {
		r.Cfg.Log("[%s] "+format, append([]any{r.Cell.Name}, args...)...)
	}
}

// Note adds a line to the cell's notes.
func (r *Run) Note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.logf("%s", s)
	r.mu.Lock()
	r.notes = append(r.notes, s)
	r.mu.Unlock()
}

// Fail records a failure of the cell (besides what the verifier finds).
func (r *Run) Fail(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.logf("FAIL: %s", s)
	r.mu.Lock()
	r.failures = append(r.failures, s)
	r.mu.Unlock()
}

func (r *Run) notify() {
	r.mu.Lock()
	now := time.Now()
	if !r.lastCommit.IsZero() && now.Sub(r.lastCommit) > r.maxGap {
		r.maxGap, r.maxGapAt = now.Sub(r.lastCommit), float64(r.committed.Load())/float64(r.Cell.Records)
	}
	r.lastCommit = now
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// waitChange waits for the next commit anywhere, at most max.
func (r *Run) waitChange(ctx context.Context, max time.Duration) error {
	r.mu.Lock()
	ch := r.changed
	r.mu.Unlock()
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func (r *Run) workerArgs(id string) []string {
	a := []string{
		"-brokers", strings.Join(r.Cfg.Brokers, ","),
		"-group", r.group, "-in", r.in, "-instance", id,
		"-mode", string(r.Cell.Mode),
	}
	if r.Cell.Mode == Kafka {
		a = append(a, "-out", r.out)
	} else {
		a = append(a, "-pg", r.workerPGURL(id), "-pg-schema", r.Cfg.PGSchema, "-pg-table", r.table)
	}
	if r.Cell.AbortRate > 0 {
		a = append(a, "-abort-rate", strconv.FormatFloat(r.Cell.AbortRate, 'f', -1, 64))
	}
	a = append(a, r.faultArgs(id)...)
	return append(a, r.Cell.ExtraArgs...)
}

func (r *Run) workerPGURL(id string) string {
	u := r.pgURL("chaos-" + r.Cfg.RunID + "-" + id)
	if r.proxyAddr == "" {
		return u
	}
	pu, err := url.Parse(u)
	if err != nil {
		return u
	}
	pu.Host = r.proxyAddr
	return pu.String()
}

func (r *Run) pgURL(app string) string {
	u, err := url.Parse(r.Cfg.PGURL)
	if err != nil {
		return r.Cfg.PGURL
	}
	q := u.Query()
	q.Set("application_name", app)
	q.Set("pool_max_conns", strconv.Itoa(int(r.Cfg.Partitions)+2))
	u.RawQuery = q.Encode()
	return u.String()
}

// Start starts worker id (its first process, or a restart) and makes it one
// that should run.
func (r *Run) Start(id string, extra ...string) (*Proc, error) {
	p, err := r.startProc(id, extra...)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.live[id] = p
	r.mu.Unlock()
	r.logf("started %s.%d (pid %d)", id, p.Gen, p.cmd.Process.Pid)
	return p, nil
}

// Live is the current process of id, if it should run.
func (r *Run) Live(id string) *Proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live[id]
}

// LiveIDs are the ids of the workers that should run, sorted.
func (r *Run) LiveIDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for id := range r.live {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Stop signals p (SIGKILL or SIGTERM) and waits for it to exit; p no longer
// should run. With SIGTERM it must exit 0, with SIGKILL it must die of it.
func (r *Run) Stop(p *Proc, sig syscall.Signal) error {
	r.mu.Lock()
	r.intended[p] = true
	if r.live[p.ID] == p {
		delete(r.live, p.ID)
	}
	r.mu.Unlock()
	if err := p.Signal(sig); err != nil {
		return err
	}
	if err := p.Wait(45 * time.Second); err != nil {
		return err
	}
	code, got, line := p.ExitStatus()
	switch sig {
	case syscall.SIGKILL:
		if got != syscall.SIGKILL {
			return fmt.Errorf("%s.%d: not killed by SIGKILL (code %d, %s)", p.ID, p.Gen, code, line)
		}
	case syscall.SIGTERM:
		if code != 0 {
			return fmt.Errorf("%s.%d: did not stop cleanly on SIGTERM: code %d signal %v, %s", p.ID, p.Gen, code, got, line)
		}
	}
	r.logf("stopped %s.%d with %v", p.ID, p.Gen, sig)
	return nil
}

// Bounce stops the current process of id with sig, starts it again and
// measures the restarted process's start to its first commit.
func (r *Run) Bounce(ctx context.Context, id string, sig syscall.Signal) error {
	p := r.Live(id)
	if p == nil {
		return fmt.Errorf("no live worker %s", id)
	}
	at := r.Progress()
	if err := r.Stop(p, sig); err != nil {
		return err
	}
	if sig == syscall.SIGKILL && r.Cell.Mode == Kafka {
		r.noteOrphan(ctx, id)
	}
	np, err := r.Start(id)
	if err != nil {
		return err
	}
	took, err := r.firstCommitOrDone(ctx, np, 90*time.Second)
	if err != nil {
		r.Fail("%v", err)
		return nil
	}
	if took == 0 {
		r.Note("%v %s at %.0f%%: the whole input was committed before its restart committed anything: no restart time to measure", sig, id, 100*at)
		return nil
	}
	r.mu.Lock()
	r.restarts = append(r.restarts, took)
	r.mu.Unlock()
	r.logf("%v %s at %.0f%%: restart to first commit %v", sig, id, 100*at, took.Round(time.Millisecond))
	return nil
}

// countLogLines counts the lines of the cell's worker logs that contain s.
func (r *Run) countLogLines(s string) int {
	files, _ := filepath.Glob(filepath.Join(r.Dir, "*.log"))
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		n += strings.Count(string(b), s)
	}
	return n
}

// noteOrphan counts a SIGKILL that left the worker's transaction open
// (the restart must fence it at once).
func (r *Run) noteOrphan(ctx context.Context, id string) {
	txnID := r.group + ":" + id
	d, err := r.adm.DescribeTransactions(ctx, txnID)
	if err != nil {
		return
	}
	if t, ok := d[txnID]; ok && t.Err == nil && t.State == "Ongoing" {
		r.mu.Lock()
		r.orphans++
		r.mu.Unlock()
	}
}

// supervise restarts any worker that should run but exited although no
// one signalled it, and records that as a failure.
func (r *Run) supervise() {
	r.mu.Lock()
	var dead []*Proc
	for _, p := range r.live {
		if !p.Alive() && !r.intended[p] {
			dead = append(dead, p)
		}
	}
	r.mu.Unlock()
	for _, p := range dead {
		code, sig, line := p.ExitStatus()
		r.Fail("worker %s.%d exited unexpectedly (code %d, signal %v): %s (log %s)", p.ID, p.Gen, code, sig, line,
			filepath.Join(r.Dir, fmt.Sprintf("%s.%d.log", p.ID, p.Gen)))
		r.mu.Lock()
		r.intended[p] = true
		r.mu.Unlock()
		if _, err := r.Start(p.ID); err != nil {
			r.Fail("restarting %s: %v", p.ID, err)
		}
	}
}

func (r *Run) setup(ctx context.Context) error {
	kcl, err := kgo.NewClient(kgo.SeedBrokers(r.Cfg.Brokers...))
	if err != nil {
		return err
	}
	r.kcl, r.adm = kcl, kadm.NewClient(kcl)
	cfg := map[string]*string{"min.insync.replicas": kadm.StringPtr("2"), "unclean.leader.election.enable": kadm.StringPtr("false")}
	topics := []string{r.in}
	if r.Cell.Mode == Kafka {
		topics = append(topics, r.out)
	}
	resp, err := r.adm.CreateTopics(ctx, r.Cfg.Partitions, 3, cfg, topics...)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("creating topics %v: %w", topics, err)
	}
	if r.Cell.Mode == Postgres {
		pool, err := pgxpool.New(ctx, r.pgURL("chaos-"+r.Cfg.RunID+"-driver"))
		if err != nil {
			return err
		}
		r.pool = pool
		if err := pgMigrate(ctx, pool, r.Cfg.PGSchema); err != nil {
			return err
		}
		if r.Cell.LostCommitAck > 0 {
			pc := pool.Config().ConnConfig
			r.proxy = &LostAckProxy{Target: fmt.Sprintf("%s:%d", pc.Host, pc.Port), Every: r.Cell.LostCommitAck}
			if r.proxyAddr, err = r.proxy.Listen(); err != nil {
				return err
			}
		}
		if _, err := pool.Exec(ctx, `CREATE TABLE `+pgx.Identifier{r.Cfg.PGSchema, r.table}.Sanitize()+` (
			id bigserial PRIMARY KEY, part integer NOT NULL, off bigint NOT NULL, worker text NOT NULL)`); err != nil {
			return fmt.Errorf("creating the result table: %w", err)
		}
	}
	return r.setupFaults(ctx)
}

func (r *Run) teardown() {
	r.mu.Lock()
	procs := append([]*Proc(nil), r.procs...)
	r.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	if r.proxy != nil {
		r.proxy.Close()
	}
	r.closeFaults()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r.adm != nil {
		topics := []string{r.in}
		if r.Cell.Mode == Kafka {
			topics = append(topics, r.out)
		}
		if _, err := r.adm.DeleteTopics(ctx, topics...); err != nil {
			r.logf("deleting topics: %v", err)
		}
		if _, err := r.adm.DeleteGroup(ctx, r.group); err != nil {
			r.logf("deleting group: %v", err)
		}
		r.kcl.Close()
	}
	if r.pool != nil {
		if _, err := r.pool.Exec(ctx, `DROP TABLE IF EXISTS `+pgx.Identifier{r.Cfg.PGSchema, r.table}.Sanitize()); err != nil {
			r.logf("dropping the result table: %v", err)
		}
		if _, err := r.pool.Exec(ctx, `DELETE FROM `+pgx.Identifier{r.Cfg.PGSchema, "offsets"}.Sanitize()+` WHERE consumer_group = $1`, r.group); err != nil {
			r.logf("deleting offsets rows: %v", err)
		}
		r.pool.Close()
	}
}

// RunCell runs one cell and returns its result. It stops every process it
// started, also on failure.
func RunCell(ctx context.Context, cfg Config, cell Cell) (res Result) {
	if cfg.Partitions == 0 {
		cfg.Partitions = 6
	}
	if cfg.PGSchema == "" {
		cfg.PGSchema = "chaos"
	}
	name := strings.ReplaceAll(cell.Name, "-", "_")
	r := &Run{
		Cfg: cfg, Cell: cell,
		Dir:     filepath.Join(cfg.Dir, cell.Name),
		in:      "chaos-" + cfg.RunID + "-" + cell.Name + "-in",
		out:     "chaos-" + cfg.RunID + "-" + cell.Name + "-out",
		group:   "chaos-" + cfg.RunID + "-" + cell.Name,
		table:   "rows_" + cfg.RunID + "_" + name,
		changed: make(chan struct{}),
		gens:    map[string]int{}, live: map[string]*Proc{}, intended: map[*Proc]bool{},
	}
	res = Result{Cell: cell.Name, Fault: cell.Fault, Mode: string(cell.Mode), Kafka: cfg.KafkaVersion, Records: cell.Records}
	start := time.Now()
	defer func() {
		res.Took = time.Since(start)
		r.mu.Lock()
		res.Notes = append(res.Notes, r.notes...)
		res.Failures = append(res.Failures, r.failures...)
		res.Restarts = append(res.Restarts, r.restarts...)
		r.mu.Unlock()
		res.Passed = len(res.Failures) == 0 && res.Exact()
	}()
	if cell.Mode == Postgres && cfg.PGURL == "" {
		r.Fail("no Postgres URL")
		return res
	}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		r.Fail("%v", err)
		return res
	}
	defer r.teardown()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := r.setup(ctx); err != nil {
		r.Fail("setup: %v", err)
		return res
	}
	for i := 1; i <= cell.Workers; i++ {
		if _, err := r.Start("w" + strconv.Itoa(i)); err != nil {
			r.Fail("%v", err)
			return res
		}
	}
	feedCtx, stopFeed := context.WithCancel(ctx)
	defer stopFeed()
	fedErr := make(chan error, 1)
	go func() { fedErr <- r.runFeeder(feedCtx) }()
	live := r.startLive(ctx)
	defer live.close()

	if cell.Schedule != nil {
		if err := cell.Schedule(ctx, r); err != nil {
			r.Fail("schedule: %v", err)
		}
	}
	select {
	case err := <-fedErr:
		if err != nil {
			r.Fail("feeder: %v", err)
			return res
		}
	case <-ctx.Done():
		r.Fail("feeder: %v", ctx.Err())
		return res
	}
	if err := r.WaitFor(ctx, 3*time.Minute, "the group to commit every input record", r.drained); err != nil {
		r.Fail("%v (committed %d of %d by the workers' reports)", err, r.committed.Load(), cell.Records)
	} else {
		r.InputCommitted(ctx) // notes it if the workers' reports fell short
	}
	for _, id := range r.LiveIDs() {
		if err := r.Stop(r.Live(id), syscall.SIGTERM); err != nil {
			r.Fail("final stop: %v", err)
		}
	}
	r.supervise() // reports workers that had died since
	live.finish(ctx)
	r.noteAborts()
	r.mu.Lock()
	gap, gapAt := r.maxGap, r.maxGapAt
	r.mu.Unlock()
	r.Note("longest time without any commit: %v (ending at %.0f%% progress)", gap.Round(time.Millisecond), 100*gapAt)
	if r.proxy != nil {
		r.Note("the proxy saw %d COMMITs and dropped the answer to %d of them; the workers logged %d \"commit outcome unknown; resolving it from the database\"",
			r.proxy.commits.Load(), r.proxy.Dropped(), r.countLogLines("commit outcome unknown"))
		if r.proxy.Dropped() == 0 {
			r.Fail("the proxy dropped no COMMIT answer")
		}
	}
	r.noteFaults()
	r.check(ctx, &res)
	return res
}

// pgMigrate creates the suite's schema and offsets table with the sink's own
// Migrate (the workers never migrate: they start at once, in parallel).
func pgMigrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	sink, err := pgsink.New(pool, pgsink.OffsetsTable(schema, "offsets"))
	if err != nil {
		return err
	}
	if err := sink.Migrate(ctx); err != nil {
		return fmt.Errorf("migrating the offsets table: %w", err)
	}
	return nil
}
