// Package eostest is exactly's exactly-once scenario suite, written once and
// run on any Kafka cluster: on an in-process kfake cluster by the pipeline
// package's tests (fast, under the race detector) and on Apache Kafka by the
// integration tests — in the spirit of pgxtest and of Watermill's shared
// pubsub tests.
//
// Each scenario runs pipelines with the Kafka sink on fresh, uniquely named
// topics and a fresh consumer group, injects one kind of trouble, and ends
// with the independent read_committed verifier (internal/verify): every
// input record's copy is in the output exactly once, in order per partition.
//
//   - Baseline: no faults.
//   - RandomAborts: the Stage fails about a third of the batches the first
//     time it sees them; their transactions abort and are retried.
//   - RestartFromCommitted: Run is cancelled mid-stream with a transaction
//     open; a new pipeline with the same instance id finishes the job.
//   - RebalanceChurn: instances leave and join while records flow, with the
//     default cooperative-sticky balancer; RebalanceChurnEager: the same
//     with the eager range and round-robin balancers.
//   - Panic: the Stage panics; Run returns the *pipeline.StageError and
//     nothing of the batch is visible; a restart finishes the job.
//   - Zombie: an instance frozen mid-transaction (its network stalled by a
//     testkit.Freezer, at its EndTxn or with its Stage blocked) past its
//     session timeout is replaced; when it wakes up its commit must fail.
//     In GenerationOnly its transaction timeout outlasts its session, so
//     only the group generation (KIP-447) can fence it.
//
// Scenarios wait for events (group lag via kadm, pipeline Stats, channels),
// never for time to pass, and stop every pipeline they start before they
// return, so a goleak check in the calling package's TestMain holds.
package eostest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// Timeouts are the timeouts a scenario's pipelines use, and how long it waits
// for them.
type Timeouts struct {
	Session     time.Duration // pipeline.SessionTimeout
	Transaction time.Duration // pipeline.TransactionTimeout; below Session
	Heartbeat   time.Duration // pipeline.HeartbeatInterval; at most Session/3
	MaxWait     time.Duration // pipeline.MaxWait
	// Progress bounds every wait of a scenario: for the group to commit
	// everything, for a group to settle, for Run to return. A scenario
	// that waits longer fails.
	Progress time.Duration
}

var (
	// KfakeTimeouts suit an in-process kfake cluster: short sessions make
	// the zombie scenario fast.
	KfakeTimeouts = Timeouts{
		Session:     2 * time.Second,
		Transaction: 1500 * time.Millisecond,
		Heartbeat:   200 * time.Millisecond,
		MaxWait:     20 * time.Millisecond,
		Progress:    60 * time.Second,
	}
	// KafkaTimeouts suit Apache Kafka with its defaults: its
	// group.min.session.timeout.ms is 6s.
	KafkaTimeouts = Timeouts{
		Session:     6 * time.Second,
		Transaction: 5 * time.Second,
		Heartbeat:   500 * time.Millisecond,
		MaxWait:     50 * time.Millisecond,
		Progress:    90 * time.Second,
	}
)

// Env is the cluster a scenario runs on.
type Env struct {
	// Name says which cluster this is, for logs: "kfake", "Apache Kafka v4.1".
	Name    string
	Brokers []string
	// ClientOpts are extra connection options (TLS, SASL) for every
	// client the scenarios create, pipelines included.
	ClientOpts []kgo.Opt
	// ReplicationFactor of the topics the scenarios create; -1 is the
	// broker's default.
	ReplicationFactor int16
	// Records is the base number of input records of a scenario. Default
	// 4000.
	Records  int
	Timeouts Timeouts
}

// Kfake starts an in-process kfake cluster of three brokers, closed when the
// test ends, and returns its Env.
func Kfake(t *testing.T) Env {
	t.Helper()
	c, err := kfake.NewCluster(
		kfake.NumBrokers(3),
		kfake.GroupMinSessionTimeout(100*time.Millisecond),
	)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return Env{Name: "kfake", Brokers: c.ListenAddrs(), ReplicationFactor: -1, Records: 4000, Timeouts: KfakeTimeouts}
}

// Scenario is one exactly-once scenario.
type Scenario struct {
	Name string
	Run  func(t *testing.T, env Env)
}

// Scenarios are every scenario, in the order Run runs them.
func Scenarios() []Scenario {
	return []Scenario{
		{"Baseline", Baseline},
		{"RandomAborts", RandomAborts},
		{"RestartFromCommitted", RestartFromCommitted},
		{"RebalanceChurn", RebalanceChurn},
		{"RebalanceChurnEager", RebalanceChurnEager},
		{"Panic", Panic},
		{"Zombie", Zombie},
	}
}

// Run runs every scenario as a subtest, each on the Env newEnv returns for
// it (a fresh kfake cluster, or the same real broker with fresh topics).
// The subtests run one after another.
func Run(t *testing.T, newEnv func(*testing.T) Env) {
	for _, sc := range Scenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			env := newEnv(t)
			start := time.Now()
			sc.Run(t, env)
			t.Logf("%s on %s: %v", sc.Name, env.Name, time.Since(start).Round(time.Millisecond))
		})
	}
}

type kw = *kafkasink.Writer

// Rig is one scenario's world: an input and an output topic and a consumer
// group, all named uniquely for the test, with helpers to produce input,
// run pipeline instances, wait for them and verify the output. The
// integration tests build their fault scenarios (a crashed process, a
// killed broker) on it too.
type Rig struct {
	In    string // the input topic
	Out   string // the output topic
	Group string // the consumer group

	t       *testing.T
	env     Env
	parts   int32
	adm     *kadm.Client
	nextKey int // key index of the next produced record
}

// NewRig creates the input and output topics, both of parts partitions,
// with names unique to this run (deleted when the test ends), and names a
// fresh consumer group.
func NewRig(t *testing.T, env Env, parts int32) *Rig {
	t.Helper()
	if env.Records <= 0 {
		env.Records = 4000
	}
	require.NotEmpty(t, env.Brokers, "env has no brokers")
	cl, err := kgo.NewClient(env.Conn()...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	s := &Rig{t: t, env: env, parts: parts, adm: kadm.NewClient(cl)}
	prefix := uniqueName(t)
	s.In, s.Out, s.Group = prefix+"-in", prefix+"-out", prefix+"-g"

	ctx, cancel := context.WithTimeout(context.Background(), env.Timeouts.Progress)
	defer cancel()
	resp, err := s.adm.CreateTopics(ctx, parts, env.ReplicationFactor, nil, s.In, s.Out)
	require.NoError(t, err, "creating topics")
	require.NoError(t, resp.Error(), "creating topics")
	t.Cleanup(func() {
		// Registered before any pipeline starts, so it runs after
		// every pipeline stopped.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := s.adm.DeleteTopics(ctx, s.In, s.Out); err != nil {
			t.Logf("deleting topics %s, %s: %v", s.In, s.Out, err)
		}
	})
	// Clients that ask before the brokers know a new topic wait for their
	// next metadata refresh (franz-go: 5s at the least).
	testkit.WaitFor(t, env.Timeouts.Progress, "the new topics in the brokers' metadata", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		td, err := s.adm.ListTopics(ctx, s.In, s.Out)
		if err != nil || td.Error() != nil || len(td) != 2 {
			return false
		}
		for _, d := range td {
			if len(d.Partitions) != int(parts) {
				return false
			}
			for _, p := range d.Partitions {
				if p.Err != nil || p.Leader < 0 {
					return false
				}
			}
		}
		return true
	})
	return s
}

// Conn are the options that connect a client to the env's brokers.
func (e Env) Conn() []kgo.Opt {
	return append([]kgo.Opt{kgo.SeedBrokers(e.Brokers...)}, e.ClientOpts...)
}

// uniqueName is a topic- and group-safe name unique to this test run.
func uniqueName(t *testing.T) string {
	var b strings.Builder
	for _, r := range strings.ToLower(t.Name()) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '/' || r == '_' || r == '-':
			b.WriteByte('.')
		}
	}
	name := b.String()
	if len(name) > 60 {
		name = name[len(name)-60:]
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	return "eos." + name + "." + hex.EncodeToString(rnd[:])
}

// logger discards, unless EXACTLY_TEST_LOG names a level (debug, info,
// warn): then it logs to stderr.
func logger() *slog.Logger {
	lvl, ok := os.LookupEnv("EXACTLY_TEST_LOG")
	if !ok {
		return slog.New(slog.DiscardHandler)
	}
	var l slog.Level
	_ = l.UnmarshalText([]byte(lvl))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// Produce writes n input records, keyed k<i> with i counting on from the
// previous call, spread over the partitions by key, and waits for every ack.
func (s *Rig) Produce(n int) {
	s.t.Helper()
	cl, err := kgo.NewClient(append(s.env.Conn(), kgo.DefaultProduceTopic(s.In), kgo.MetadataMinAge(100*time.Millisecond))...)
	require.NoError(s.t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), s.env.Timeouts.Progress)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
	)
	for range n {
		i := s.nextKey
		s.nextKey++
		r := &kgo.Record{Key: []byte("k" + strconv.Itoa(i)), Value: []byte("value-" + strconv.Itoa(i))}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	require.NoError(s.t, cl.Flush(ctx), "producing input")
	require.NoError(s.t, firstErr, "producing input")
}

// CopyStage copies each record to the output topic with headers naming its
// source.
func (s *Rig) CopyStage() pipeline.Stage[kw] {
	return pipeline.StageFunc[kw](func(_ context.Context, b *sinks.Batch, w kw) error {
		s.CopyBatch(b, w)
		return nil
	})
}

// CopyBatch writes the copies of b's records through w.
func (s *Rig) CopyBatch(b *sinks.Batch, w kw) {
	for _, r := range b.Records {
		w.Produce(testkit.CopyRecord(s.Out, r))
	}
}

// Opts are the pipeline options of instance id: the rig's brokers, group
// and input, the env's timeouts, small backoffs, at most maxRecords per
// transaction; extra go last and win.
func (s *Rig) Opts(id string, maxRecords int, extra ...pipeline.Opt) []pipeline.Opt {
	to := s.env.Timeouts
	o := []pipeline.Opt{
		pipeline.Brokers(s.env.Brokers...),
		pipeline.Group(s.Group),
		pipeline.Topics(s.In),
		pipeline.InstanceID(id),
		pipeline.MaxRecords(maxRecords),
		pipeline.MaxWait(to.MaxWait),
		pipeline.SessionTimeout(to.Session),
		pipeline.TransactionTimeout(to.Transaction),
		pipeline.HeartbeatInterval(to.Heartbeat),
		pipeline.Backoff(5*time.Millisecond, 200*time.Millisecond),
		pipeline.StartTimeout(to.Progress),
		pipeline.Logger(logger().With("scenario", s.t.Name())),
	}
	if len(s.env.ClientOpts) > 0 {
		o = append(o, pipeline.ClientOpts(s.env.ClientOpts...))
	}
	return append(o, extra...)
}

// Instance is a pipeline running in a goroutine of the test.
type Instance struct {
	ID string                 // its instance id
	P  *pipeline.Pipeline[kw] // the pipeline

	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error         // Run's result, once done is closed
}

// Done is closed when Run returned.
func (in *Instance) Done() <-chan struct{} { return in.done }

// Err is what Run returned; valid once Done is closed.
func (in *Instance) Err() error { return in.err }

// Start builds a pipeline with stage and opts (see Opts) and runs it until
// Stop, or until the test ends.
func (s *Rig) Start(id string, stage pipeline.Stage[kw], opts ...pipeline.Opt) *Instance {
	s.t.Helper()
	p, err := pipeline.New(kafkasink.New(), stage, opts...)
	require.NoError(s.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	in := &Instance{ID: id, P: p, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(in.done)
		in.err = p.Run(ctx)
	}()
	bound := s.env.Timeouts.Progress
	s.t.Cleanup(func() {
		cancel()
		select {
		case <-in.done:
		case <-time.After(bound):
			s.t.Errorf("instance %s: Run did not return within %v of its context's end", id, bound)
			<-in.done
		}
	})
	return in
}

// Stop cancels Run and returns its error; the test fails if Run does not
// return within the Progress timeout.
func (s *Rig) Stop(in *Instance) error {
	s.t.Helper()
	in.cancel()
	select {
	case <-in.done:
		return in.err
	case <-time.After(s.env.Timeouts.Progress):
		s.t.Fatalf("instance %s: Run did not return within %v of its context's end", in.ID, s.env.Timeouts.Progress)
		return nil
	}
}

// RequireRunning fails the test if an instance's Run already returned.
func (s *Rig) RequireRunning(ins ...*Instance) {
	s.t.Helper()
	for _, in := range ins {
		select {
		case <-in.done:
			s.t.Fatalf("instance %s stopped on its own: %v", in.ID, in.err)
		default:
		}
	}
}

// Lag is how many input records the group has not committed.
func (s *Rig) Lag() (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return verify.GroupLag(ctx, s.adm, s.In, s.Group)
}

// WaitDrained waits until the group committed every input record, failing
// early if one of the instances stops.
func (s *Rig) WaitDrained(ins ...*Instance) {
	s.t.Helper()
	testkit.WaitFor(s.t, s.env.Timeouts.Progress, "the group to commit every input record", func() bool {
		s.RequireRunning(ins...)
		l, err := s.Lag()
		return err == nil && l == 0
	})
}

// CommittedOffsets are the group's committed offsets of the input, per
// partition (0 where nothing is committed).
func (s *Rig) CommittedOffsets() map[int32]int64 {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := s.adm.FetchOffsets(ctx, s.Group)
	require.NoError(s.t, err)
	out := map[int32]int64{}
	for p := range s.parts {
		out[p] = 0
		if c, ok := offs.Lookup(s.In, p); ok && c.Err == nil && c.At > 0 {
			out[p] = c.At
		}
	}
	return out
}

// Settled reports whether the group is Stable with exactly the instances
// ids as members, each owning at least one partition, and every input
// partition assigned.
func (s *Rig) Settled(ids ...string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gs, err := s.adm.DescribeGroups(ctx, s.Group)
	if err != nil {
		return false
	}
	g, ok := gs[s.Group]
	if !ok || g.Err != nil || g.State != "Stable" || len(g.Members) != len(ids) {
		return false
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	assigned := 0
	for _, m := range g.Members {
		if m.InstanceID == nil || !want[*m.InstanceID] {
			return false
		}
		c, ok := m.Assigned.AsConsumer()
		if !ok {
			return false
		}
		n := 0
		for _, tp := range c.Topics {
			n += len(tp.Partitions)
		}
		if n == 0 {
			return false
		}
		assigned += n
	}
	return assigned == int(s.parts)
}

// Protocol is the balancer protocol the group agreed on ("" if the group
// cannot be described).
func (s *Rig) Protocol() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gs, err := s.adm.DescribeGroups(ctx, s.Group)
	if err != nil {
		return ""
	}
	return gs[s.Group].Protocol
}

// MemberGone reports whether no member of the group has instance id id.
func (s *Rig) MemberGone(id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gs, err := s.adm.DescribeGroups(ctx, s.Group)
	if err != nil {
		return false
	}
	g, ok := gs[s.Group]
	if !ok || g.Err != nil {
		return false
	}
	for _, m := range g.Members {
		if m.InstanceID != nil && *m.InstanceID == id {
			return false
		}
	}
	return true
}

// VerifyExact runs the independent verifier: the output holds exactly one
// copy of each of the n input records, in order per partition.
func (s *Rig) VerifyExact(n int) verify.Report {
	s.t.Helper()
	rep, err := verify.Check(context.Background(), verify.Options{
		ClientOpts: s.env.Conn(),
		Input:      s.In,
		Outputs:    []string{s.Out},
		SourceOf:   verify.SourceFromHeaders,
		Timeout:    s.env.Timeouts.Progress,
	})
	require.NoError(s.t, err, "verifier")
	require.True(s.t, rep.OK(), "verifier: %v", rep)
	require.Equal(s.t, n, rep.In, "input records")
	require.Equal(s.t, n, rep.TotalOut(), "output records")
	s.t.Logf("verifier: %v", rep)
	return rep
}

// RequireCommittedPrefix checks what must hold at any moment between
// transactions: per input partition, the committed output is exactly one
// copy of each input record below the group's committed offset and nothing
// of any record at or above it. It returns the committed offsets.
func (s *Rig) RequireCommittedPrefix() map[int32]int64 {
	s.t.Helper()
	committed := s.CommittedOffsets()
	ctx := context.Background()
	ins, err := verify.ReadAll(ctx, s.env.Conn(), s.In, s.env.Timeouts.Progress)
	require.NoError(s.t, err, "reading the input")
	outs, err := verify.ReadAll(ctx, s.env.Conn(), s.Out, s.env.Timeouts.Progress)
	require.NoError(s.t, err, "reading the output with read_committed")
	counts := map[verify.Source]int{}
	for _, r := range outs {
		src, err := verify.SourceFromHeaders(r)
		require.NoError(s.t, err, "output %s[%d]@%d", r.Topic, r.Partition, r.Offset)
		counts[src]++
	}
	var problems []string
	problem := func(format string, args ...any) {
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	bad := 0
	for _, r := range ins {
		src := verify.Source{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
		n := counts[src]
		delete(counts, src)
		want := 0
		if r.Offset < committed[r.Partition] {
			want = 1
		}
		if n != want {
			bad++
			problem("%v: %d committed output(s), want %d (committed offset %d)", src, n, want, committed[r.Partition])
		}
	}
	for src, n := range counts {
		bad++
		problem("%v: %d output(s) of a record that is not an input", src, n)
	}
	sort.Strings(problems)
	require.Zero(s.t, bad, "committed output is not exactly the committed input prefix (committed offsets %v):\n%s",
		committed, strings.Join(problems, "\n"))
	return committed
}

// ReadRaw reads every data record of topic up to its current end with
// read_uncommitted isolation: the outputs of aborted and open transactions
// included.
func (s *Rig) ReadRaw(topic string) []*kgo.Record {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.env.Timeouts.Progress)
	defer cancel()
	ends, err := s.adm.ListEndOffsets(ctx, topic)
	require.NoError(s.t, err)
	require.NoError(s.t, ends.Error())
	want := map[int32]int64{}
	ends.Each(func(lo kadm.ListedOffset) {
		if lo.Offset > 0 {
			want[lo.Partition] = lo.Offset
		}
	})
	if len(want) == 0 {
		return nil
	}
	parts := map[int32]kgo.Offset{}
	for p := range want {
		parts[p] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(append(s.env.Conn(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
		kgo.KeepControlRecords(),
	)...)
	require.NoError(s.t, err)
	defer cl.Close()
	end := map[int32]int64{}
	for p, o := range want {
		end[p] = o
	}
	var out []*kgo.Record
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		require.NoError(s.t, ctx.Err(), "reading %s raw to its end", topic)
		for _, fe := range fs.Errors() {
			if !errors.Is(fe.Err, context.DeadlineExceeded) {
				require.NoError(s.t, fe.Err, "reading %s raw", topic)
			}
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= end[r.Partition] {
				return
			}
			if r.Offset+1 >= end[r.Partition] {
				delete(want, r.Partition)
			}
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
		})
	}
	return out
}

// sum adds up a statistic over instances.
func sum(ins []*Instance, stat func(pipeline.Stats) int64) int64 {
	var n int64
	for _, in := range ins {
		n += stat(in.P.Stats())
	}
	return n
}

func committedRecords(s pipeline.Stats) int64 { return s.CommittedRecords }
func abortedTxns(s pipeline.Stats) int64      { return s.AbortedTxns }

// recordCounter counts the records a Stage produced and, as a kgo
// HookProduceRecordUnbuffered, the producer's verdicts on them.
type recordCounter struct {
	produced   atomic.Int64 // records the Stage produced
	unbuffered atomic.Int64 // records the producer is done with
	acked      atomic.Int64 // records the broker acknowledged
}

// OnProduceRecordUnbuffered implements kgo.HookProduceRecordUnbuffered.
func (c *recordCounter) OnProduceRecordUnbuffered(_ *kgo.Record, err error) {
	if err == nil {
		c.acked.Add(1)
	}
	c.unbuffered.Add(1)
}

// copyBatch copies b through w and counts the records.
func (c *recordCounter) copyBatch(s *Rig, b *sinks.Batch, w kw) {
	c.produced.Add(int64(len(b.Records)))
	s.CopyBatch(b, w)
}

// waitAcks waits until the producer is done with every record produced so
// far: they are then in the log (in their open transaction) or failed.
func (c *recordCounter) waitAcks(ctx context.Context) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for c.unbuffered.Load() < c.produced.Load() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
