package eostest

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
)

// Zombie freezes instance A, alone on a one-partition input, in the middle
// of a transaction whose output is already in the log, until the group has
// expired it; then B joins, must resume at A's committed offset and commits
// everything; then A wakes up. A's transaction must not commit — Run
// returns an error for which sinks.IsFatal holds, or the transaction
// aborts — and the output must stay exact although the log holds A's copies
// of its batch. Two ways to freeze:
//
//   - FrozenAtEndTxn: A's network freezes (a Freezer) at the moment it sends
//     EndTxn(commit), after its offsets joined the transaction and its
//     pre-commit heartbeat succeeded. That EndTxn reaches the broker only
//     after B committed the same records — the zombie write that epoch and
//     generation fencing exist for. The test also replays it itself to read
//     the broker's verdict, which must be an error.
//
//   - StalledStage: A's Stage blocks after writing its batch and A's
//     network freezes; both are released after B committed.
//
//   - GenerationOnly: A's transaction timeout is longer than its session
//     timeout, so the broker cannot time its transaction out first; A
//     freezes at its TxnOffsetCommit and only the group generation
//     (KIP-447) fences it (see zombieGenerationOnly).
//
// Blocking only the Stage would not make a zombie: franz-go heartbeats from
// its own goroutine, so the group would never expire A.
func Zombie(t *testing.T, env Env) {
	t.Run("FrozenAtEndTxn", func(t *testing.T) { zombieFrozenAtEndTxn(t, env) })
	t.Run("StalledStage", func(t *testing.T) { zombieStalledStage(t, env) })
	t.Run("GenerationOnly", func(t *testing.T) { zombieGenerationOnly(t, env) })
}

type span struct{ first, last int64 }

// zombieRig is what the zombie cases share: the scenario, instance A with a
// Freezer on its network, and counters of A's records.
type zombieRig struct {
	s       *Rig
	n       int
	freezer *testkit.Freezer
	a       *Instance

	commits atomic.Int64         // A's committed transactions
	last    atomic.Pointer[span] // A's latest batch
	records recordCounter        // A's records
}

func newZombieRig(t *testing.T, env Env) *zombieRig {
	s := NewRig(t, env, 1)
	z := &zombieRig{s: s, n: max(s.env.Records/4, 400), freezer: testkit.NewFreezer()}
	s.Produce(z.n)
	return z
}

// copy is A's Stage body: copy the batch, count, remember the batch.
func (z *zombieRig) copy(b *sinks.Batch, w kw) {
	z.records.copyBatch(z.s, b, w)
	z.last.Store(&span{b.FirstOffset(), b.LastOffset()})
}

func (z *zombieRig) startA(stage pipeline.Stage[kw]) {
	z.a = z.s.Start("a", stage, z.s.Opts("a", 50,
		pipeline.OnCommit(func(pipeline.CommitInfo) { z.commits.Add(1) }),
		pipeline.ClientOpts(kgo.Dialer(z.freezer.Dial), kgo.WithHooks(&z.records)),
	)...)
	// Cleanups run last-in first-out: this one runs before a's, since a
	// frozen client cannot stop.
	z.s.t.Cleanup(z.freezer.Thaw)
}

// replace waits until the group expired frozen A, then runs B until the
// group committed everything. B must resume at A's committed offset.
func (z *zombieRig) replace(frozen time.Time, atFreeze pipeline.Stats, zs span) *Instance {
	s, t := z.s, z.s.t
	t.Helper()
	testkit.WaitFor(t, s.env.Timeouts.Session+s.env.Timeouts.Progress, "the group to expire the frozen instance A", func() bool {
		return s.MemberGone("a")
	})
	t.Logf("A frozen in its transaction over offsets %d-%d (%d records committed before); the group expired it after %v (session timeout %v)",
		zs.first, zs.last, atFreeze.CommittedRecords, time.Since(frozen).Round(time.Millisecond), s.env.Timeouts.Session)

	start := time.Now()
	b := s.Start("b", s.CopyStage(), s.Opts("b", 50)...)
	s.WaitDrained(b)
	// The group's offsets move when the broker commits; B counts a
	// commit only once its EndTxn has returned, a moment later (CI: the
	// last batch of 50 was not counted yet). B keeps running, so wait for
	// its count rather than stop it.
	want := int64(z.n) - atFreeze.CommittedRecords
	testkit.WaitFor(t, s.env.Timeouts.Progress, "B's Stats to count its last commit", func() bool {
		return b.P.Stats().CommittedRecords >= want
	})
	t.Logf("B committed everything %v after it started: %+v", time.Since(start).Round(time.Millisecond), b.P.Stats())
	require.Equal(t, want, b.P.Stats().CommittedRecords,
		"B must resume at A's committed offset, before the zombie batch")
	require.Equal(t, atFreeze.CommittedTxns, z.a.P.Stats().CommittedTxns, "A committed while frozen")
	return b
}

// finish waits for the zombie's transaction to end after the thaw, checks
// that it did not commit, stops both instances, and verifies the output.
func (z *zombieRig) finish(b *Instance, atFreeze pipeline.Stats, zs span) {
	s, t, a := z.s, z.s.t, z.a
	t.Helper()
	testkit.WaitFor(t, s.env.Timeouts.Progress, "the zombie's transaction to end", func() bool {
		select {
		case <-a.done:
			return true
		default:
		}
		st := a.P.Stats()
		return st.AbortedTxns > atFreeze.AbortedTxns || st.CommittedTxns > atFreeze.CommittedTxns
	})
	select {
	case <-a.done:
		require.True(t, sinks.IsFatal(a.err), "the zombie's Run returned an error that is not fatal: %v", a.err)
		t.Logf("the zombie was fenced: Run returned %v", a.err)
	default:
		t.Logf("the zombie's transaction aborted and it went on: %+v", a.P.Stats())
	}
	require.Equal(t, atFreeze.CommittedTxns, a.P.Stats().CommittedTxns, "the zombie's transaction was reported committed")

	require.NoError(t, s.Stop(b))
	if err := s.Stop(a); err != nil {
		require.True(t, sinks.IsFatal(err), "the zombie's Run returned an error that is not fatal: %v", err)
	}
	require.Equal(t, atFreeze.CommittedTxns, a.P.Stats().CommittedTxns, "the zombie's transaction was reported committed")

	// The zombie's writes are in the log; read_committed must hide them.
	var copies int64
	for _, r := range s.ReadRaw(s.Out) {
		src, err := verify.SourceFromHeaders(r)
		require.NoError(t, err)
		if src.Offset >= zs.first && src.Offset <= zs.last {
			copies++
		}
	}
	require.GreaterOrEqual(t, copies, 2*(zs.last-zs.first+1), "the log must hold the zombie's copies of its batch besides B's")
	s.VerifyExact(z.n)
}

func zombieFrozenAtEndTxn(t *testing.T, env Env) {
	z := newZombieRig(t, env)
	// Armed before A starts: on kfake, A would be done before a test
	// could arm it after A's first commit.
	var zs atomic.Pointer[span]
	fired := z.freezer.FreezeAt(func(req kmsg.Request) bool {
		et, ok := req.(*kmsg.EndTxnRequest)
		if !ok || !et.Commit || z.commits.Load() == 0 {
			return false
		}
		// A's Stage calls and its EndTxn are sequential: the latest
		// batch is the one this EndTxn would commit.
		zs.Store(z.last.Load())
		return true
	})
	z.startA(pipeline.StageFunc[kw](func(_ context.Context, b *sinks.Batch, w kw) error {
		z.copy(b, w)
		return nil
	}))
	select {
	case <-fired:
	case <-z.a.done:
		t.Fatalf("A stopped before its zombie commit: %v", z.a.err)
	case <-time.After(z.s.env.Timeouts.Progress):
		t.Fatalf("A sent no EndTxn(commit) within %v", z.s.env.Timeouts.Progress)
	}
	frozen := time.Now()
	atFreeze := z.a.P.Stats()
	sp := *zs.Load()
	held, ok := z.freezer.Held().(*kmsg.EndTxnRequest)
	require.True(t, ok)
	require.Equal(t, sp.first, atFreeze.CommittedRecords, "the zombie batch must start at A's committed offset")
	require.Equal(t, z.records.produced.Load(), z.records.acked.Load(), "A's records must all be in the log before its EndTxn")

	b := z.replace(frozen, atFreeze, sp)

	// The zombie's EndTxn(commit) arrives now, after B committed the
	// same records: the broker must refuse it.
	err := z.replayEndTxn(held)
	require.Error(t, err, "the broker accepted the zombie's EndTxn(commit) (producer id %d, epoch %d) after B took over",
		held.ProducerID, held.ProducerEpoch)
	t.Logf("the broker refused the zombie's EndTxn(commit) (producer id %d, epoch %d): %v", held.ProducerID, held.ProducerEpoch, err)

	z.freezer.Thaw() // and A's own copy of it goes out too
	z.finish(b, atFreeze, sp)
}

// replayEndTxn sends req as it is, from a fresh client.
func (z *zombieRig) replayEndTxn(req *kmsg.EndTxnRequest) error {
	cl, err := kgo.NewClient(z.s.env.Conn()...)
	require.NoError(z.s.t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), z.s.env.Timeouts.Progress)
	defer cancel()
	r := *req
	resp, err := r.RequestWith(ctx, cl)
	require.NoError(z.s.t, err, "replaying EndTxn")
	return kerr.ErrorForCode(resp.ErrorCode)
}

func zombieStalledStage(t *testing.T, env Env) {
	z := newZombieRig(t, env)
	var (
		stalled atomic.Bool
		paused  = make(chan struct{})
		release = make(chan struct{})
	)
	z.startA(pipeline.StageFunc[kw](func(ctx context.Context, b *sinks.Batch, w kw) error {
		z.copy(b, w)
		if z.commits.Load() == 0 || !stalled.CompareAndSwap(false, true) {
			return nil
		}
		// Stall once the broker has every record: the zombie's output
		// is then in the log, in its open transaction.
		if err := z.records.waitAcks(ctx); err != nil {
			return err
		}
		close(paused)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}))
	var released bool
	t.Cleanup(func() {
		if !released {
			close(release)
		}
	})

	select {
	case <-paused:
	case <-z.a.done:
		t.Fatalf("A stopped before its zombie batch: %v", z.a.err)
	case <-time.After(z.s.env.Timeouts.Progress):
		t.Fatalf("A did not reach its zombie batch within %v", z.s.env.Timeouts.Progress)
	}
	z.freezer.Freeze()
	frozen := time.Now()
	atFreeze := z.a.P.Stats()
	sp := *z.last.Load()
	require.Equal(t, sp.first, atFreeze.CommittedRecords, "the zombie batch must start at A's committed offset")
	require.Equal(t, z.records.produced.Load(), z.records.acked.Load(), "some of A's records were refused")

	b := z.replace(frozen, atFreeze, sp)

	close(release)
	released = true
	z.freezer.Thaw()
	z.finish(b, atFreeze, sp)
}
