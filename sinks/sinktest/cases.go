package sinktest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/sinks"
)

// The conformance cases; Run and RunOn run each on both sinks.

func testCommitVisible[W any](t *testing.T, h Harness[W], newEnv NewEnvFunc, static bool) {
	env := newEnv(t, 3, 90)
	env.Static = static
	sink := h.Sink(t, env)
	s := Open(t, sink, SessionConfig(env, "a"))
	batches := Poll(t, s, 90)
	tx := Begin(t, h, env, s, batches)
	require.NoError(t, Commit(tx), "commit")
	RequireEffects(t, h, env, IDs(batches))
	Close(t, s)
}

func testRollbackInvisible[W any](t *testing.T, h Harness[W], newEnv NewEnvFunc, static bool) {
	env := newEnv(t, 2, 40)
	env.Static = static
	sink := h.Sink(t, env)
	s := Open(t, sink, SessionConfig(env, "a"))
	first := Poll(t, s, 40)
	tx := Begin(t, h, env, s, first)
	require.NoError(t, Rollback(tx), "rollback")
	RequireEffects(t, h, env, nil)

	// The positions are rewound: the same records come again.
	again := Poll(t, s, 40)
	require.ElementsMatch(t, IDs(first), IDs(again), "records polled after the rollback")
	tx = Begin(t, h, env, s, again)
	require.NoError(t, Commit(tx), "commit after rollback")
	RequireEffects(t, h, env, IDs(first))
	Close(t, s)
}

func testOffsetsAtomic[W any](t *testing.T, h Harness[W], newEnv NewEnvFunc, static bool) {
	env := newEnv(t, 1, 100)
	env.Static = static
	sink := h.Sink(t, env)

	// Commit 0..39, then close.
	a := Open(t, sink, SessionConfig(env, "a"))
	bs := Poll(t, a, 40)
	require.Equal(t, Range(env.Input, 0, 0, 40), IDs(bs))
	require.NoError(t, Commit(Begin(t, h, env, a, bs)))
	Close(t, a)

	// A new session resumes right after the committed batch; roll back.
	b := Open(t, sink, SessionConfig(env, "b"))
	bs = Poll(t, b, 30)
	require.Equal(t, Range(env.Input, 0, 40, 70), IDs(bs), "a new session resumes right after the committed batch")
	require.NoError(t, Rollback(Begin(t, h, env, b, bs)))
	Close(t, b)

	// After a rollback it resumes at the batch; close with it open.
	c := Open(t, sink, SessionConfig(env, "c"))
	bs = Poll(t, c, 30)
	require.Equal(t, Range(env.Input, 0, 40, 70), IDs(bs), "after a rollback a new session resumes at the batch")
	_ = Begin(t, h, env, c, bs)
	Close(t, c)
	RequireEffects(t, h, env, Range(env.Input, 0, 0, 40))

	// After a session closed without committing it resumes at the batch.
	d := Open(t, sink, SessionConfig(env, "d"))
	bs = Poll(t, d, 60)
	require.Equal(t, Range(env.Input, 0, 40, 100), IDs(bs), "after a session closed without commit a new session resumes at the batch")
	require.NoError(t, Commit(Begin(t, h, env, d, bs)))
	Close(t, d)
	RequireEffects(t, h, env, Range(env.Input, 0, 0, 100))
}

func testResume[W any](t *testing.T, h Harness[W], newEnv NewEnvFunc, static bool) {
	const n, per = 200, 70
	env := newEnv(t, 2, n)
	env.Static = static
	sink := h.Sink(t, env)
	var all []string
	for i := 0; len(all) < n; i++ {
		s := Open(t, sink, SessionConfig(env, "a"))
		bs := Poll(t, s, min(per, n-len(all)))
		ids := IDs(bs)
		for _, id := range ids {
			require.NotContains(t, all, id, "session %d polled a record already committed", i)
		}
		require.NoError(t, Commit(Begin(t, h, env, s, bs)))
		all = append(all, ids...)
		Close(t, s)
	}
	RequireEffects(t, h, env, all)

	// New records after everything committed: the next session polls
	// exactly those.
	testkit.Produce(t, env.Brokers, env.Input, 10)
	s := Open(t, sink, SessionConfig(env, "a"))
	bs := Poll(t, s, 10)
	for _, id := range IDs(bs) {
		require.NotContains(t, all, id, "a record committed before was polled again")
	}
	require.NoError(t, Commit(Begin(t, h, env, s, bs)))
	RequireEffects(t, h, env, append(all, IDs(bs)...))
	Close(t, s)
}

func testRollbackSafe[W any](t *testing.T, h Harness[W], newEnv NewEnvFunc, static bool) {
	env := newEnv(t, 1, 20)
	env.Static = static
	sink := h.Sink(t, env)
	s := Open(t, sink, SessionConfig(env, "a"))

	bs := Poll(t, s, 10)
	tx := Begin(t, h, env, s, bs)
	require.NoError(t, Commit(tx))
	require.NoError(t, Rollback(tx), "rollback after commit")
	require.NoError(t, Rollback(tx), "second rollback after commit")
	RequireEffects(t, h, env, Range(env.Input, 0, 0, 10))

	bs = Poll(t, s, 10)
	require.Equal(t, Range(env.Input, 0, 10, 20), IDs(bs), "a rollback after commit must not rewind")
	tx = Begin(t, h, env, s, bs)
	require.NoError(t, Rollback(tx))
	require.NoError(t, Rollback(tx), "second rollback")
	RequireEffects(t, h, env, Range(env.Input, 0, 0, 10))

	bs = Poll(t, s, 10)
	require.Equal(t, Range(env.Input, 0, 10, 20), IDs(bs), "two rollbacks rewind once, to the committed offset")
	require.NoError(t, Commit(Begin(t, h, env, s, bs)))
	RequireEffects(t, h, env, Range(env.Input, 0, 0, 20))
	Close(t, s)
}

// testZombie: A polls and writes a batch, is paused past its session
// timeout, B takes the partition over and commits the same records, then A
// wakes up and commits. With precommit, A committed a batch first (the
// partition has committed offsets); without, A's batch is the partition's
// first. With longTxn, A's Kafka transaction timeout is
// LongTransactionTimeout, longer than its session timeout.
func testZombie[W any](t *testing.T, h Harness[W], newEnv NewEnvFunc, static, precommit, longTxn bool) {
	const n = 60
	env := newEnv(t, 1, n)
	env.Static = static
	sink := h.Sink(t, env)
	var extra []kgo.Opt
	if longTxn {
		// A Kafka transaction timeout far beyond the session timeout
		// and the case: the broker cannot time the zombie's transaction
		// out first, so only the group generation that travels with its
		// offsets (KIP-447) — or the sink's own fence — can stop it.
		extra = append(extra, kgo.TransactionTimeout(LongTransactionTimeout))
	}
	a := Open(t, sink, SessionConfig(env, "a", extra...))
	from := int64(0)
	if precommit {
		bs := Poll(t, a, 20)
		require.NoError(t, Commit(Begin(t, h, env, a, bs)))
		from = 20
	}
	zbs := Poll(t, a, 20)
	require.Equal(t, Range(env.Input, 0, from, from+20), IDs(zbs))
	ztx := Begin(t, h, env, a, zbs)

	resume := Pause(t, env, "a")
	b := Open(t, sink, SessionConfig(env, "b"))
	bs := Poll(t, b, int(n-from))
	require.Equal(t, Range(env.Input, 0, from, n), IDs(bs), "the new owner resumes at the committed offset")
	require.NoError(t, Commit(Begin(t, h, env, b, bs)), "the new owner's commit")
	resume()

	err := Commit(ztx)
	require.Error(t, err, "the zombie's commit must fail")
	t.Logf("the zombie's commit failed as it must: %v", err)
	require.True(t, sinks.IsRetryable(err) || sinks.IsFatal(err), "the zombie's commit error must be retryable or fatal: %v", err)
	require.NoError(t, Rollback(ztx), "rollback after a failed commit")
	RequireEffects(t, h, env, Range(env.Input, 0, 0, n))
	Close(t, b)
	_ = closeSession(a) // a zombie's close may report its fencing
}

// testCloseDuringJoin: static member "gone" was assigned and went away
// without leaving the group (a static member's client does not leave on
// Close). A session that joins next waits in the rebalance for "gone" to
// rejoin until the coordinator drops it (16 s on kfake; on Kafka its
// rebalance timeout, 45 s here), and franz-go's Close waits for that join's
// answer. Close must not: the sessions interrupt their client
// (txn.CloseClient) and return.
func testCloseDuringJoin[W any](t *testing.T, h Harness[W], newEnv NewEnvFunc, static bool) {
	env := newEnv(t, 2, 0)
	env.Static = static
	sink := h.Sink(t, env)
	testkit.GoneMember(t, env.Brokers, env.Group, env.Input, "gone", 45*time.Second)
	s := Open(t, sink, SessionConfig(env, "a"))
	testkit.AwaitRebalancing(t, env.Brokers, env.Group, PollTimeout) // a's join waits for "gone"
	start := time.Now()
	Close(t, s)
	took := time.Since(start)
	t.Logf("Close took %v with the join waiting", took)
	require.Less(t, took, 10*time.Second, "Close waited for the coordinator to drop the member that went away (about 16 s on kfake before the fix)")
	if static {
		return // its first join unanswered, a static member has no member id to leave with (by instance id alone it could remove a successor)
	}
	// A dynamic member got its member id with its first join's answer
	// (KIP-394, MEMBER_ID_REQUIRED); its client could not leave, so the
	// session did.
	members, _ := testkit.GroupMembers(t, env.Brokers, env.Group)
	require.Equal(t, []string{"gone"}, members, "the closed session is still a member of the group")
}
