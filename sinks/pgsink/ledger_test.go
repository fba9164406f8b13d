package pgsink

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/sinks"
)

// The ledger is pure state: these tests drive it the way kgo's callbacks and
// the pipeline do, without a database or a broker.

const topic = "in"

func recs(first int64, n int) []*kgo.Record {
	out := make([]*kgo.Record, n)
	for i := range out {
		out[i] = &kgo.Record{Topic: topic, Partition: 0, Offset: first + int64(i), LeaderEpoch: 3}
	}
	return out
}

func fetches(p int32, rs []*kgo.Record) kgo.Fetches {
	return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: topic, Partitions: []kgo.FetchPartition{{Partition: p, Records: rs}}}}}}
}

func part(rs []*kgo.Record) *pgPart {
	b := &sinks.Batch{Topic: topic, Partition: rs[0].Partition, Records: rs}
	return &pgPart{b: b, k: topicPart{b.Topic, b.Partition}, first: b.FirstOffset(), last: b.LastOffset()}
}

// assigned returns a ledger owning partition 0, with a stored row at next if
// hasRow, and the start position kgo was told.
func assigned(t *testing.T, hasRow bool, next int64) (*ledger, kgo.Offset) {
	t.Helper()
	l := newLedger()
	offsets := map[string]map[int32]kgo.Offset{topic: {0: {}}}
	stored := map[topicPart]int64{}
	if hasRow {
		stored[topicPart{topic, 0}] = next
	}
	l.assign(offsets, stored, kgo.NewOffset().AtStart())
	return l, offsets[topic][0]
}

func poll(l *ledger, rs []*kgo.Record) {
	snap := l.snapshot()
	l.polled(fetches(0, rs), snap)
}

func TestLedgerAssignStartsAtTheStoredOffsetOrTheConfiguredStart(t *testing.T) {
	_, at := assigned(t, true, 42)
	require.Equal(t, kgo.NewOffset().At(42), at)
	_, at = assigned(t, false, 0)
	require.Equal(t, kgo.NewOffset().AtStart(), at)
}

func TestLedgerBatchThatContinuesTheStoredOffsetCommits(t *testing.T) {
	l, _ := assigned(t, true, 10)
	rs := recs(10, 5)
	poll(l, rs)
	pp := part(rs)
	seeks, reload, behind := l.begin([]*pgPart{pp})
	require.True(t, pp.valid, "skip: %v", pp.skip)
	require.Empty(t, seeks)
	require.Empty(t, reload)
	require.Empty(t, behind)
	require.True(t, pp.expectRow)
	require.EqualValues(t, 10, pp.expect)

	errs, seeks, mirrored, _ := l.settle([]*pgPart{pp}, []pgResult{{committed: true}}, true)
	require.Empty(t, errs)
	require.Empty(t, seeks)
	require.Equal(t, kgo.EpochOffset{Epoch: 3, Offset: 15}, mirrored[topic][0], "the mirror carries the next offset and the last record's leader epoch")

	// The next batch is compared against the row this commit wrote.
	rs = recs(15, 2)
	poll(l, rs)
	pp = part(rs)
	l.begin([]*pgPart{pp})
	require.True(t, pp.valid)
	require.EqualValues(t, 15, pp.expect)
}

func TestLedgerBatchMissingPolledRecordsNeverCommits(t *testing.T) {
	for name, batch := range map[string][]*kgo.Record{
		"head dropped": recs(11, 4),
		"tail dropped": recs(10, 3),
	} {
		t.Run(name, func(t *testing.T) {
			l, _ := assigned(t, true, 10)
			poll(l, recs(10, 5))
			pp := part(batch)
			seeks, _, _ := l.begin([]*pgPart{pp})
			require.False(t, pp.valid)
			require.ErrorIs(t, pp.skip, errStale)
			require.Equal(t, int64(10), seeks[topic][0].Offset, "rewound to the stored offset")
		})
	}
}

func TestLedgerRevokeBetweenPollAndBeginDropsTheBatch(t *testing.T) {
	l, _ := assigned(t, true, 10)
	rs := recs(10, 5)
	poll(l, rs)
	require.Equal(t, 1, l.disown(map[string][]int32{topic: {0}}))
	pp := part(rs)
	seeks, _, _ := l.begin([]*pgPart{pp})
	require.ErrorIs(t, pp.skip, errNotOwned)
	require.Empty(t, seeks, "a partition no longer owned is not sought")
}

func TestLedgerRevokeDuringCommitKeepsTheNewOwnersPosition(t *testing.T) {
	l, _ := assigned(t, true, 10)
	rs := recs(10, 5)
	poll(l, rs)
	pp := part(rs)
	l.begin([]*pgPart{pp})
	require.True(t, pp.valid)
	require.False(t, l.ownsSince(pp.k, pp.epoch+1))
	l.disown(map[string][]int32{topic: {0}})
	require.False(t, l.ownsSince(pp.k, pp.epoch), "commitPart checks this before its compare-and-set")
	errs, seeks, _, _ := l.settle([]*pgPart{pp}, []pgResult{{err: sinks.ErrAborted}}, false)
	require.Len(t, errs, 1)
	require.Empty(t, seeks)
	require.Empty(t, l.rewind([]*pgPart{pp}))
}

func TestLedgerRecordsOfAnOldCursorNeverBecomePending(t *testing.T) {
	l, _ := assigned(t, true, 10)
	snap := l.snapshot()
	// Revoked and re-assigned while the poll ran: what it returns may be
	// the old cursor's.
	l.disown(map[string][]int32{topic: {0}})
	l.assign(map[string]map[int32]kgo.Offset{topic: {0: {}}}, map[topicPart]int64{{topic, 0}: 10}, kgo.NewOffset().AtStart())
	rs := recs(10, 5)
	l.polled(fetches(0, rs), snap)
	pp := part(rs)
	l.begin([]*pgPart{pp})
	require.ErrorIs(t, pp.skip, errStale)
}

func TestLedgerFailedCompareAndSetRewindsToTheRowAsReRead(t *testing.T) {
	l, _ := assigned(t, true, 10)
	rs := recs(10, 5)
	poll(l, rs)
	pp := part(rs)
	l.begin([]*pgPart{pp})
	res := pgResult{err: errors.Join(sinks.ErrRevoked, errFencedByOwner), known: true, hasRow: true, next: 15}
	errs, seeks, _, _ := l.settle([]*pgPart{pp}, []pgResult{res}, false)
	require.Len(t, errs, 1)
	var pe *sinks.PartitionError
	require.ErrorAs(t, errs[0], &pe)
	require.Equal(t, sinks.PartitionError{Topic: topic, Partition: 0, FirstOffset: 10, LastOffset: 14, Err: res.err}, *pe)
	require.EqualValues(t, 15, seeks[topic][0].Offset, "the other owner's offset")
}

func TestLedgerUnknownOutcomeReReadsTheRowBeforeTheNextCommit(t *testing.T) {
	l, _ := assigned(t, true, 10)
	rs := recs(10, 5)
	poll(l, rs)
	pp := part(rs)
	l.begin([]*pgPart{pp})
	_, seeks, _, _ := l.settle([]*pgPart{pp}, []pgResult{{unknown: true, err: sinks.ErrOutcomeUnknown}}, false)
	require.Empty(t, seeks, "the position waits for the row")

	rs = recs(15, 1)
	poll(l, rs)
	pp = part(rs)
	_, reload, _ := l.begin([]*pgPart{pp})
	require.ErrorIs(t, pp.skip, errUnknownOutcome)
	require.Equal(t, []topicPart{{topic, 0}}, reload)

	// The row says the commit landed: resume after it.
	seeks = l.reloaded(reload, map[topicPart]int64{{topic, 0}: 15})
	require.EqualValues(t, 15, seeks[topic][0].Offset)
}

func TestLedgerFirstBatchWithoutARowRewindsToItsStart(t *testing.T) {
	l, _ := assigned(t, false, 0)
	rs := recs(0, 3)
	poll(l, rs)
	pp := part(rs)
	l.begin([]*pgPart{pp})
	require.True(t, pp.valid)
	require.False(t, pp.expectRow, "the compare-and-set is an insert that must insert")
	seeks := l.rewind([]*pgPart{pp})
	require.EqualValues(t, 0, seeks[topic][0].Offset)
}

func TestLedgerRecordsBeforeTheStoredOffsetAreReported(t *testing.T) {
	l, _ := assigned(t, true, 10)
	rs := recs(5, 3) // a re-created topic starts over below the row
	poll(l, rs)
	pp := part(rs)
	_, _, behind := l.begin([]*pgPart{pp})
	require.ErrorIs(t, pp.skip, errStale)
	require.Equal(t, []*pgPart{pp}, behind)
}

func TestLedgerKeepOwnedFiltersTheMirror(t *testing.T) {
	l, _ := assigned(t, true, 10)
	offs := seekSet{}
	offs.add(topicPart{topic, 0}, 11)
	offs.add(topicPart{topic, 1}, 7)
	require.Equal(t, 1, l.keepOwned(offs))
	require.Contains(t, offs[topic], int32(0))
	require.NotContains(t, offs[topic], int32(1))
}
