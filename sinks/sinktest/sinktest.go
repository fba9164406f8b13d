// Package sinktest is the conformance suite every sink must pass, in the
// manner of Watermill's pubsub/tests: one set of cases, run against each
// sink through a small [Harness] that knows how to write an effect and how
// to read back the visible ones.
//
// Each case runs on a fresh in-process kfake cluster (Run), or on fresh
// topics of a real cluster (RunOn with KafkaEnv), with a fresh group, and
// drives the sink's Session and Txn directly, the way the pipeline does:
// poll, Begin, write through Writer(b), Commit or Rollback.
// The cases check what the framework's guarantee rests on:
//
//   - a commit is visible, a rollback is not, and a rollback rewinds the
//     positions so the same records are polled again;
//   - offsets are atomic with the writes: a new session in the group resumes
//     right after a committed batch, and at the batch after a rollback or a
//     session closed with its transaction open;
//   - sessions resume from the committed offsets across close and open;
//   - Rollback is safe after Commit and safe twice;
//   - Close returns promptly while the session's group join waits for a
//     member that went away without leaving;
//   - a zombie is fenced: an instance paused past its session timeout while
//     another took its partition over and committed the same records fails
//     its commit, and every effect is visible exactly once — also when its
//     Kafka transaction timeout is longer than its session timeout, so the
//     broker's transaction timeout cannot fence it first.
package sinktest

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
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/sinks"
)

// Timeouts the cases use.
const (
	// SessionTimeout is the group session timeout of every session a
	// case opens; a paused member is expired after it.
	SessionTimeout = 2 * time.Second
	// TransactionTimeout is the Kafka transaction timeout of the
	// sessions, below the session timeout as the pipeline requires.
	TransactionTimeout = 1500 * time.Millisecond
	// PollTimeout bounds waiting for records, including the group join
	// and, in the zombie case, the expiry of the paused member.
	PollTimeout = 30 * time.Second
	// LongTransactionTimeout is the zombie's transaction timeout in
	// ZombieFencedLongTransaction: longer than any case runs.
	LongTransactionTimeout = 5 * time.Minute
)

// Env is one case's environment: a fresh cluster with an input and an
// output topic, a consumer group, and a unique name for anything else the
// harness creates (tables, schemas).
type Env struct {
	Cluster *kfake.Cluster
	Brokers []string
	Input   string // the input topic
	Output  string // the output topic, for sinks that write to Kafka
	Group   string
	// Name is unique to the case and usable as an SQL identifier:
	// lower-case letters, digits and '_', starting with a letter, at most
	// 40 bytes.
	Name string
	// Static makes SessionConfig open static group members (KIP-345),
	// whose group instance id is the session's instance id, as the
	// pipeline does by default.
	Static bool
	// SessionTimeout and TransactionTimeout of the sessions SessionConfig
	// opens; zero means the constants of the same names (kfake's).
	SessionTimeout, TransactionTimeout time.Duration

	// freezers holds, on a real cluster (Cluster nil), one Freezer per
	// instance: SessionConfig dials through it, Pause freezes it.
	freezers *freezers
}

type freezers struct {
	mu sync.Mutex
	m  map[string]*testkit.Freezer
}

func (f *freezers) get(instance string) *testkit.Freezer {
	f.mu.Lock()
	defer f.mu.Unlock()
	fz, ok := f.m[instance]
	if !ok {
		fz = testkit.NewFreezer()
		f.m[instance] = fz
	}
	return fz
}

func (f *freezers) thawAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fz := range f.m {
		fz.Thaw()
	}
}

func (e Env) sessionTimeout() time.Duration {
	if e.SessionTimeout > 0 {
		return e.SessionTimeout
	}
	return SessionTimeout
}

func (e Env) transactionTimeout() time.Duration {
	if e.TransactionTimeout > 0 {
		return e.TransactionTimeout
	}
	return TransactionTimeout
}

// NewEnvFunc makes a case's environment: fresh topics env.Input and
// env.Output of the given partitions, records input records (keys
// k0..k(n-1)) and a fresh group. NewEnv is the in-process kfake one;
// KafkaEnv makes them on a real cluster.
type NewEnvFunc func(t *testing.T, partitions int32, records int) Env

// Harness adapts a sink to the suite. W is the sink's writer type.
type Harness[W any] interface {
	// Sink returns the sink a case uses, after preparing whatever its
	// effects need (an output table). Clean up with t.Cleanup.
	Sink(t *testing.T, env Env) sinks.Sink[W]
	// Write writes the effect of input record r through w. The effect's
	// identity is ID(r): Effects must return it for each visible effect.
	Write(ctx context.Context, env Env, w W, r *kgo.Record) error
	// Effects returns the IDs of the visible (committed) effects, one per
	// effect, duplicates included.
	Effects(t *testing.T, env Env) []string
}

// ID is the identity of the effect of the record at topic, partition,
// offset: "topic/partition/offset".
func ID(topic string, partition int32, offset int64) string {
	return topic + "/" + strconv.FormatInt(int64(partition), 10) + "/" + strconv.FormatInt(offset, 10)
}

// RecordID is ID of r's coordinates.
func RecordID(r *kgo.Record) string { return ID(r.Topic, r.Partition, r.Offset) }

// Run runs every case against the harness, each as a subtest on a fresh
// in-process kfake cluster (NewEnv), once with dynamic group members and
// once with static ones.
func Run[W any](t *testing.T, h Harness[W]) { RunOn(t, h, NewEnv) }

// RunOn is Run with the environments newEnv makes: KafkaEnv runs the suite
// on a real cluster.
func RunOn[W any](t *testing.T, h Harness[W], newEnv NewEnvFunc) {
	cases := []struct {
		name string
		fn   func(*testing.T, Harness[W], NewEnvFunc, bool)
	}{
		{"CommitVisible", testCommitVisible[W]},
		{"RollbackInvisibleAndRewound", testRollbackInvisible[W]},
		{"OffsetsAtomicWithWrites", testOffsetsAtomic[W]},
		{"ResumeAcrossSessions", testResume[W]},
		{"RollbackSafeAfterCommitAndTwice", testRollbackSafe[W]},
		{"CloseDuringAJoinThatWaits", testCloseDuringJoin[W]},
		{"ZombieFenced", func(t *testing.T, h Harness[W], ne NewEnvFunc, static bool) {
			testZombie(t, h, ne, static, true, false)
		}},
		{"ZombieFencedFirstBatch", func(t *testing.T, h Harness[W], ne NewEnvFunc, static bool) {
			testZombie(t, h, ne, static, false, false)
		}},
		{"ZombieFencedLongTransaction", func(t *testing.T, h Harness[W], ne NewEnvFunc, static bool) { testZombie(t, h, ne, static, true, true) }},
	}
	for _, static := range []bool{false, true} {
		mode := "Dynamic"
		if static {
			mode = "Static"
		}
		t.Run(mode, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					// The zombie cases spend their time waiting for a
					// session to expire, each on its own topics and
					// group: they run in parallel with each other.
					if strings.HasPrefix(c.name, "Zombie") {
						t.Parallel()
					}
					c.fn(t, h, newEnv, static)
				})
			}
		})
	}
}

var caseSeq atomic.Int64

// NewEnv starts a cluster with topics "in" and "out" of the given
// partitions and writes records input records (keys k0..k(n-1)).
func NewEnv(t *testing.T, partitions int32, records int) Env {
	t.Helper()
	c, brokers := testkit.Cluster(t, partitions, "in", "out")
	if records > 0 {
		testkit.Produce(t, brokers, "in", records)
	}
	name := caseName(t)
	return Env{Cluster: c, Brokers: brokers, Input: "in", Output: "out", Group: "g_" + name, Name: name}
}

// caseName is a name unique to the case, usable as an SQL identifier.
func caseName(t *testing.T) string {
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	name := fmt.Sprintf("c%d_%s_%s", caseSeq.Add(1), hex.EncodeToString(rnd[:]), sqlName(t.Name()))
	if len(name) > 40 {
		name = name[:40]
	}
	return name
}

// KafkaEnv makes the environments on a real cluster: topics named for the
// case (deleted when it ends), created with the brokers' default
// replication factor, and sessions with the given timeouts (the broker's
// group.min.session.timeout.ms bounds the first; the second must be
// below it). A paused member's network is frozen (testkit.Freezer): its
// heartbeats stop reaching the coordinator.
func KafkaEnv(brokers []string, sessionTimeout, transactionTimeout time.Duration) NewEnvFunc {
	return func(t *testing.T, partitions int32, records int) Env {
		t.Helper()
		name := caseName(t)
		in, out := "sinktest."+name+".in", "sinktest."+name+".out"
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
		require.NoError(t, err)
		t.Cleanup(cl.Close)
		adm := kadm.NewClient(cl)
		ctx, cancel := context.WithTimeout(context.Background(), PollTimeout)
		defer cancel()
		resp, err := adm.CreateTopics(ctx, partitions, -1, nil, in, out)
		require.NoError(t, err, "creating topics")
		require.NoError(t, resp.Error(), "creating topics")
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), PollTimeout)
			defer cancel()
			if _, err := adm.DeleteTopics(ctx, in, out); err != nil {
				t.Logf("deleting topics %s, %s: %v", in, out, err)
			}
		})
		testkit.WaitFor(t, PollTimeout, "the new topics in the brokers' metadata", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			td, err := adm.ListTopics(ctx, in, out)
			if err != nil || td.Error() != nil || len(td) != 2 {
				return false
			}
			for _, d := range td {
				for _, p := range d.Partitions {
					if p.Err != nil || p.Leader < 0 {
						return false
					}
				}
			}
			return true
		})
		if records > 0 {
			testkit.Produce(t, brokers, in, records)
		}
		fz := &freezers{m: map[string]*testkit.Freezer{}}
		// Registered after the topics' cleanup, so it runs before it
		// and before the sessions' (registered later still, so they
		// run first: a frozen session's Close returns at its context's
		// end, then the thaw lets its held writes go).
		t.Cleanup(fz.thawAll)
		return Env{
			Brokers: brokers, Input: in, Output: out, Group: "g_" + name, Name: name,
			SessionTimeout: sessionTimeout, TransactionTimeout: transactionTimeout,
			freezers: fz,
		}
	}
}

func sqlName(s string) string {
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		s = s[i+1:]
	}
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// SessionConfig is the configuration the cases open sessions with: the
// pipeline's consumer settings with short timeouts. extra options are
// appended to the consumer options.
func SessionConfig(env Env, instance string, extra ...kgo.Opt) sinks.SessionConfig {
	consumer := []kgo.Opt{
		kgo.ConsumerGroup(env.Group),
		kgo.ConsumeTopics(env.Input),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(env.sessionTimeout()),
		kgo.RebalanceTimeout(3 * env.sessionTimeout()),
		kgo.HeartbeatInterval(100 * time.Millisecond),
		kgo.TransactionTimeout(env.transactionTimeout()),
		kgo.FetchMaxWait(50 * time.Millisecond),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	}
	if env.Static {
		consumer = append(consumer, kgo.InstanceID(instance))
	}
	client := []kgo.Opt{kgo.SeedBrokers(env.Brokers...)}
	if on, _ := strconv.ParseBool(os.Getenv("EXACTLY_TEST_KGO_LOG")); on {
		client = append(client, kgo.WithLogger(kslog.New(Logger().With("client", instance))))
	}
	if env.freezers != nil {
		client = append(client, kgo.Dialer(env.freezers.get(instance).Dial))
	}
	return sinks.SessionConfig{
		ClientOpts:   client,
		ConsumerOpts: append(consumer, extra...),
		Group:        env.Group,
		InstanceID:   instance,
		StaticMember: env.Static,
		Logger:       Logger(),
	}
}

// Logger discards, unless EXACTLY_TEST_LOG is set (then it logs to stderr
// at that level: debug, info, warn). With EXACTLY_TEST_KGO_LOG=1 as well,
// the sessions' franz-go clients log through it too, tagged with their
// instance (client=a): what a case's producers and consumers sent and got.
func Logger() *slog.Logger {
	lvl, ok := os.LookupEnv("EXACTLY_TEST_LOG")
	if !ok {
		return slog.New(slog.DiscardHandler)
	}
	var l slog.Level
	_ = l.UnmarshalText([]byte(lvl))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// Open opens a session of sink and closes it when the test ends (unless
// the test closed it first).
func Open[W any](t *testing.T, sink sinks.Sink[W], cfg sinks.SessionConfig) sinks.Session[W] {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), PollTimeout)
	defer cancel()
	s, err := sink.Open(ctx, cfg)
	require.NoError(t, err, "opening a session")
	t.Cleanup(func() { closeSession(s) })
	return s
}

// closeSession closes s, bounded; closing twice is a no-op for the sinks.
func closeSession[W any](s sinks.Session[W]) error {
	ctx, cancel := context.WithTimeout(context.Background(), PollTimeout)
	defer cancel()
	return s.Close(ctx)
}

// Close closes s and fails the test if that fails.
func Close[W any](t *testing.T, s sinks.Session[W]) {
	t.Helper()
	require.NoError(t, closeSession(s), "closing a session")
}

// Poll polls until it has exactly n records, and returns them as batches,
// one per partition in the order polled. It fails the test after
// PollTimeout.
func Poll[W any](t *testing.T, s sinks.Session[W], n int) []*sinks.Batch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), PollTimeout)
	defer cancel()
	var (
		batches []*sinks.Batch
		index   = map[string]int{}
		got     int
	)
	for got < n {
		fs, err := s.Poll(ctx, n-got)
		require.NoError(t, err, "polling")
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				return
			}
			k := p.Topic + "/" + strconv.Itoa(int(p.Partition))
			i, ok := index[k]
			if !ok {
				i = len(batches)
				index[k] = i
				batches = append(batches, &sinks.Batch{Topic: p.Topic, Partition: p.Partition})
			}
			batches[i].Records = append(batches[i].Records, p.Records...)
			got += len(p.Records)
		})
		for _, fe := range fs.Errors() {
			if !errors.Is(fe.Err, context.DeadlineExceeded) && !errors.Is(fe.Err, context.Canceled) {
				t.Logf("fetch error (retried by the client): %s[%d]: %v", fe.Topic, fe.Partition, fe.Err)
			}
		}
		if got < n && ctx.Err() != nil {
			t.Fatalf("timed out after %v polling %d records: got %d", PollTimeout, n, got)
		}
	}
	return batches
}

// IDs are the IDs of the batches' records, in order.
func IDs(batches []*sinks.Batch) []string {
	var ids []string
	for _, b := range batches {
		for _, r := range b.Records {
			ids = append(ids, RecordID(r))
		}
	}
	return ids
}

// Range is the IDs of offsets [from, to) of a topic's partition.
func Range(topic string, partition int32, from, to int64) []string {
	var ids []string
	for o := from; o < to; o++ {
		ids = append(ids, ID(topic, partition, o))
	}
	return ids
}

// Begin begins a transaction over batches and writes every record's
// effect through the batch's writer. Like the pipeline's, the context of
// Begin lives until the transaction ends (the test's context): the Kafka
// sink produces under it.
func Begin[W any](t *testing.T, h Harness[W], env Env, s sinks.Session[W], batches []*sinks.Batch) sinks.Txn[W] {
	t.Helper()
	ctx := t.Context()
	tx, err := s.Begin(ctx, batches)
	require.NoError(t, err, "begin")
	for _, b := range batches {
		w := tx.Writer(b)
		for _, r := range b.Records {
			require.NoError(t, h.Write(ctx, env, w, r), "writing the effect of %s", RecordID(r))
		}
	}
	return tx
}

// Commit commits tx, bounded by PollTimeout, and returns its error.
func Commit[W any](tx sinks.Txn[W]) error {
	ctx, cancel := context.WithTimeout(context.Background(), PollTimeout)
	defer cancel()
	return tx.Commit(ctx)
}

// Rollback rolls tx back, bounded by PollTimeout, and returns its error.
func Rollback[W any](tx sinks.Txn[W]) error {
	ctx, cancel := context.WithTimeout(context.Background(), PollTimeout)
	defer cancel()
	return tx.Rollback(ctx)
}

// RequireEffects fails the test unless the visible effects are exactly
// want, each once (order aside).
func RequireEffects[W any](t *testing.T, h Harness[W], env Env, want []string) {
	t.Helper()
	got := h.Effects(t, env)
	counts := map[string]int{}
	for _, id := range got {
		counts[id]++
	}
	var dups []string
	for id, n := range counts {
		if n > 1 {
			dups = append(dups, fmt.Sprintf("%s x%d", id, n))
		}
	}
	sort.Strings(dups)
	require.Empty(t, dups, "duplicate effects")
	require.ElementsMatch(t, want, got, "visible effects")
}

// Pause turns the group's only member, instance, into a zombie, as if it
// had been stopped (SIGSTOP, a long GC, a partition) past its session
// timeout: the group expires it and gives its partitions to the next member
// while it believes it still owns them. Call the returned resume to wake it
// up, before using its session again. On kfake it is PauseMember (resume
// does nothing); on a real cluster (KafkaEnv) the member's network is frozen
// until resume.
func Pause(t *testing.T, env Env, instance string) (resume func()) {
	t.Helper()
	if env.freezers == nil {
		PauseMember(t, env)
		return func() {}
	}
	member := waitOneMember(t, env)
	fz := env.freezers.get(instance)
	fz.Freeze()
	// Wait for the expiry before the next member joins: a member joining
	// while the frozen one is still in the group would start a rebalance
	// that waits up to the frozen member's rebalance timeout.
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	testkit.WaitFor(t, env.sessionTimeout()+PollTimeout, "the group to expire the frozen member", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		gs, err := adm.DescribeGroups(ctx, env.Group)
		if err != nil {
			return false
		}
		g, ok := gs[env.Group]
		if !ok || g.Err != nil {
			return false
		}
		for _, m := range g.Members {
			if m.MemberID == member {
				return false
			}
		}
		return true
	})
	return fz.Thaw
}

// waitOneMember waits until the group is stable with one member and returns
// its member id.
func waitOneMember(t *testing.T, env Env) string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var member string
	testkit.WaitFor(t, PollTimeout, "a stable group with one member", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		gs, err := adm.DescribeGroups(ctx, env.Group)
		if err != nil {
			return false
		}
		g, ok := gs[env.Group]
		if !ok || g.Err != nil || g.State != "Stable" || len(g.Members) != 1 {
			return false
		}
		member = g.Members[0].MemberID
		return true
	})
	return member
}

// PauseMember turns the group's only member into a zombie: from now on the
// cluster answers its heartbeats with success without recording them, so
// the group expires it after its session timeout and gives its partitions
// to the next member, while the paused member believes it still owns them
// — as if it had been stopped (SIGSTOP, a long GC, a partition) past its
// session timeout and woke up. It waits until the group is stable with one
// member and returns that member's id.
func PauseMember(t *testing.T, env Env) string {
	t.Helper()
	require.NotNil(t, env.Cluster, "PauseMember needs a kfake cluster; use Pause")
	member := waitOneMember(t, env)
	c := env.Cluster
	c.ControlKey(int16(kmsg.Heartbeat), func(req kmsg.Request) (kmsg.Response, error, bool) {
		hb, ok := req.(*kmsg.HeartbeatRequest)
		if !ok || hb.MemberID != member {
			return nil, nil, false
		}
		c.KeepControl()
		return hb.ResponseKind(), nil, true
	})
	return member
}
