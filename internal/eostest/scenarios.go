package eostest

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
)

// Baseline copies the input through one instance with no faults. Every
// record must come out once, the pipeline's counters must match, and no
// transaction may abort.
func Baseline(t *testing.T, env Env) {
	s := NewRig(t, env, 4)
	n := s.env.Records
	s.Produce(n)

	a := s.Start("a", s.CopyStage(), s.Opts("a", 500)...)
	s.WaitDrained(a)
	require.NoError(t, s.Stop(a), "a cancelled Run returns nil")

	st := a.P.Stats()
	t.Logf("stats: %+v", st)
	require.Equal(t, int64(n), st.CommittedRecords, "Stats().CommittedRecords")
	require.Positive(t, st.CommittedTxns)
	require.Zero(t, st.AbortedTxns, "transactions aborted without any fault")
	require.Zero(t, st.StageErrors)
	s.VerifyExact(n)
}

// RandomAborts makes the Stage fail about a third of the batches the first
// time it sees them (chosen by a hash of partition and first offset, so the
// choice does not depend on timing), after writing their output. The
// failed transactions must abort, with none of their writes visible; the
// retried batch must start at the same offset (positions rewound to the
// committed offset, nothing skipped) and then commit once.
func RandomAborts(t *testing.T, env Env) {
	s := NewRig(t, env, 4)
	n := s.env.Records
	s.Produce(n)

	type key struct {
		p     int32
		first int64
	}
	var (
		mu         sync.Mutex
		seen       = map[key]bool{}
		retryAt    = map[int32]int64{} // partition -> first offset of its failed batch
		calls      int
		injected   int64
		violations []string
	)
	stage := pipeline.StageFunc[kw](func(_ context.Context, b *sinks.Batch, w kw) error {
		s.CopyBatch(b, w) // written first: an aborted transaction must hide it
		k := key{b.Partition, b.FirstOffset()}
		mu.Lock()
		defer mu.Unlock()
		calls++
		if want, ok := retryAt[b.Partition]; ok {
			delete(retryAt, b.Partition)
			if b.FirstOffset() != want {
				violations = append(violations, fmt.Sprintf("partition %d: batch after the abort starts at %d, want %d (the committed offset)",
					b.Partition, b.FirstOffset(), want))
			}
		}
		if seen[k] {
			return nil
		}
		seen[k] = true
		if !failFirstTime(b) {
			return nil
		}
		injected++
		retryAt[b.Partition] = b.FirstOffset()
		return fmt.Errorf("eostest: injected failure of %s[%d] offsets %d-%d", b.Topic, b.Partition, b.FirstOffset(), b.LastOffset())
	})

	a := s.Start("a", stage, s.Opts("a", 200, pipeline.StageRetries(1000))...)
	s.WaitDrained(a)
	require.NoError(t, s.Stop(a), "a cancelled Run returns nil")

	st := a.P.Stats()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("stats: %+v; %d stage calls, %d failures injected on %d distinct batches", st, calls, injected, len(seen))
	require.Positive(t, injected, "no failure was injected")
	require.Positive(t, st.AbortedTxns, "no transaction aborted although the stage failed")
	require.Equal(t, injected, st.StageErrors, "Stats().StageErrors must count every failed Process call")
	require.Empty(t, violations, "positions were not rewound to the committed offsets after an abort")
	require.Equal(t, int64(n), st.CommittedRecords, "Stats().CommittedRecords")
	s.VerifyExact(n)
}

// failFirstTime picks about a third of the batches, by partition and first
// offset.
func failFirstTime(b *sinks.Batch) bool {
	h := fnv.New32a()
	fmt.Fprintf(h, "%d/%d", b.Partition, b.FirstOffset())
	return h.Sum32()%3 == 0
}

// RestartFromCommitted cancels Run while a transaction is open (its Stage
// wrote its output and is blocked) after some transactions committed. The
// open transaction must abort: the output is exactly the committed input
// prefix. A new pipeline with the same instance id must resume exactly at
// the committed offsets and finish.
func RestartFromCommitted(t *testing.T, env Env) {
	s := NewRig(t, env, 4)
	n := s.env.Records
	s.Produce(n)

	var (
		committed atomic.Int64
		records   recordCounter
		held      = make(chan struct{})
		once      sync.Once
	)
	stage := pipeline.StageFunc[kw](func(ctx context.Context, b *sinks.Batch, w kw) error {
		records.copyBatch(s, b, w)
		if committed.Load() < int64(n/4) {
			return nil
		}
		// Hold this transaction open, its output in the log, until Run
		// is cancelled.
		if err := records.waitAcks(ctx); err != nil {
			return err
		}
		once.Do(func() { close(held) })
		<-ctx.Done()
		return ctx.Err()
	})
	a := s.Start("a", stage, s.Opts("a", 100,
		pipeline.OnCommit(func(ci pipeline.CommitInfo) { committed.Add(int64(ci.Records)) }),
		pipeline.ClientOpts(kgo.WithHooks(&records)),
	)...)
	select {
	case <-held:
	case <-a.done:
		t.Fatalf("Run returned before the stage held a transaction open: %v", a.err)
	case <-time.After(s.env.Timeouts.Progress):
		t.Fatalf("the stage did not reach %d committed records within %v", n/4, s.env.Timeouts.Progress)
	}
	require.NoError(t, s.Stop(a), "a cancelled Run returns nil")

	st := a.P.Stats()
	t.Logf("first run stopped mid-stream: %+v", st)
	require.Equal(t, committed.Load(), st.CommittedRecords, "OnCommit and Stats disagree")
	require.GreaterOrEqual(t, st.CommittedRecords, int64(n/4))
	require.Less(t, st.CommittedRecords, int64(n), "the first run must stop before the end")
	require.Positive(t, st.AbortedTxns, "the transaction open at cancel must be counted as aborted")
	offs := s.RequireCommittedPrefix()
	var sumOffs int64
	for _, o := range offs {
		sumOffs += o
	}
	require.Equal(t, st.CommittedRecords, sumOffs, "committed offsets %v do not add up to the records Stats says committed", offs)

	b := s.Start("a", s.CopyStage(), s.Opts("a", 100)...)
	s.WaitDrained(b)
	require.NoError(t, s.Stop(b))
	require.Equal(t, int64(n)-st.CommittedRecords, b.P.Stats().CommittedRecords,
		"the restarted pipeline must process exactly the records not committed before")
	require.Greater(t, len(s.ReadRaw(s.Out)), n, "the log must hold the aborted transaction's output besides the committed copies")
	s.VerifyExact(n)
}

// RebalanceChurn runs three instances and, several times while records
// flow, stops the oldest and starts a new one with a new instance id. After
// each change the group must settle with the new member owning partitions,
// and the new member must commit some of the records produced after it
// joined. The output must stay exact through every rebalance. The group
// uses franz-go's default balancer, cooperative-sticky (incremental
// rebalances: partitions that stay keep committing).
func RebalanceChurn(t *testing.T, env Env) {
	rebalanceChurn(t, env, "cooperative-sticky")
}

// RebalanceChurnEager is RebalanceChurn with an eager balancer (range, then
// round-robin, passed through pipeline.ClientOpts): every rebalance revokes
// every partition of every member, so every open transaction aborts.
func RebalanceChurnEager(t *testing.T, env Env) {
	for _, bal := range []struct {
		name string
		b    kgo.GroupBalancer
	}{
		{"range", kgo.RangeBalancer()},
		{"roundrobin", kgo.RoundRobinBalancer()},
	} {
		t.Run(bal.name, func(t *testing.T) {
			rebalanceChurn(t, env, bal.name, pipeline.ClientOpts(kgo.Balancers(bal.b)))
		})
	}
}

// rebalanceChurn is RebalanceChurn with extra pipeline options; the group
// must agree on the balancer protocol named protocol.
func rebalanceChurn(t *testing.T, env Env, protocol string, extra ...pipeline.Opt) {
	const (
		parts  = 6
		rounds = 3
	)
	s := NewRig(t, env, parts)
	chunk := max(s.env.Records/8, 6*parts)
	opts := func(id string) []pipeline.Opt {
		return s.Opts(id, 50, append([]pipeline.Opt{pipeline.StageRetries(1000), pipeline.Backoff(time.Millisecond, 20*time.Millisecond)}, extra...)...)
	}
	ids := func(ins []*Instance) []string {
		var out []string
		for _, in := range ins {
			out = append(out, in.ID)
		}
		return out
	}
	waitSettled := func(live []*Instance) {
		t.Helper()
		testkit.WaitFor(t, s.env.Timeouts.Progress, fmt.Sprintf("the group to settle with members %v", ids(live)), func() bool {
			s.RequireRunning(live...)
			return s.Settled(ids(live)...)
		})
	}

	n := 0
	s.Produce(chunk)
	n += chunk
	var all, live []*Instance
	for i := range 3 {
		in := s.Start(fmt.Sprintf("i%d", i), s.CopyStage(), opts(fmt.Sprintf("i%d", i))...)
		all, live = append(all, in), append(live, in)
	}
	waitSettled(live)
	require.Equal(t, protocol, s.Protocol(), "the group's balancer")

	for r := range rounds {
		start := time.Now()
		// These records are processed while the group changes.
		s.Produce(chunk)
		n += chunk
		gone := live[0]
		live = live[1:]
		lag, _ := s.Lag()
		require.NoError(t, s.Stop(gone), "round %d: instance %s must stop cleanly", r, gone.ID)
		joiner := s.Start(fmt.Sprintf("i%d", 3+r), s.CopyStage(), opts(fmt.Sprintf("i%d", 3+r))...)
		all, live = append(all, joiner), append(live, joiner)
		waitSettled(live)

		// These land on every partition, some owned by the joiner.
		s.Produce(chunk)
		n += chunk
		s.WaitDrained(live...)
		require.Positive(t, joiner.P.Stats().CommittedRecords, "round %d: the new instance %s committed nothing", r, joiner.ID)
		t.Logf("round %d: %s left with %d records uncommitted, %s joined; settled and drained in %v",
			r, gone.ID, lag, joiner.ID, time.Since(start).Round(time.Millisecond))
	}
	for _, in := range live {
		require.NoError(t, s.Stop(in), "instance %s must stop cleanly", in.ID)
	}
	t.Logf("%d instances over the run, %d transactions aborted by rebalances", len(all), sum(all, abortedTxns))
	require.Equal(t, int64(n), sum(all, committedRecords), "committed records over all instances")
	s.VerifyExact(n)
}

// Panic makes the Stage panic on a batch of partition 0 after an earlier
// batch of that partition committed. Run must return a *pipeline.StageError
// that names the batch and carries the panic; the output must be exactly
// the committed prefix (nothing of the panicked transaction visible); a
// restart must resume at the batch and finish.
func Panic(t *testing.T, env Env) {
	s := NewRig(t, env, 3)
	n := s.env.Records
	s.Produce(n)

	type span struct{ first, last int64 }
	var target atomic.Pointer[span]
	stage := pipeline.StageFunc[kw](func(_ context.Context, b *sinks.Batch, w kw) error {
		s.CopyBatch(b, w)
		// A batch of partition 0 starting past 0 follows a committed
		// one: batches start at the committed offset.
		if b.Partition == 0 && b.FirstOffset() > 0 && target.CompareAndSwap(nil, &span{b.FirstOffset(), b.LastOffset()}) {
			panic(fmt.Sprintf("eostest: injected panic on %s[%d] offsets %d-%d", b.Topic, b.Partition, b.FirstOffset(), b.LastOffset()))
		}
		return nil
	})
	a := s.Start("a", stage, s.Opts("a", 100)...)
	select {
	case <-a.done:
	case <-time.After(s.env.Timeouts.Progress):
		t.Fatalf("Run did not return within %v of the panic", s.env.Timeouts.Progress)
	}
	sp := target.Load()
	require.NotNil(t, sp, "Run returned before the stage panicked: %v", a.err)
	var se *pipeline.StageError
	require.ErrorAs(t, a.err, &se, "Run must return a *pipeline.StageError after a panic")
	t.Logf("Run returned: %v", se)
	require.NotNil(t, se.Panic, "StageError.Panic")
	require.Contains(t, fmt.Sprint(se.Panic), "injected panic")
	require.NotEmpty(t, se.Stack, "StageError.Stack")
	require.Equal(t, s.In, se.Topic)
	require.Equal(t, int32(0), se.Partition)
	require.Equal(t, sp.first, se.FirstOffset)
	require.Equal(t, sp.last, se.LastOffset)

	offs := s.RequireCommittedPrefix()
	require.Equal(t, sp.first, offs[0], "partition 0 must stay committed right before the panicked batch")
	st := a.P.Stats()
	var sumOffs int64
	for _, o := range offs {
		sumOffs += o
	}
	require.Equal(t, st.CommittedRecords, sumOffs, "committed offsets %v do not add up to Stats().CommittedRecords", offs)

	b := s.Start("a", s.CopyStage(), s.Opts("a", 100)...)
	s.WaitDrained(b)
	require.NoError(t, s.Stop(b))
	require.Equal(t, int64(n)-st.CommittedRecords, b.P.Stats().CommittedRecords,
		"the restart must resume at the panicked batch")
	s.VerifyExact(n)
}
