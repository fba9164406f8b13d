package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseLine(t *testing.T) {
	ev, ok, err := ParseLine("COMMIT 2000000000 7 1000000000 900000000 300000000 500000000 1:42,4:7")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "COMMIT", ev.Kind)
	require.Equal(t, time.Unix(2, 0), ev.At)
	require.Equal(t, 7, ev.Records)
	require.Equal(t, time.Unix(1, 0), ev.Start)
	require.Equal(t, 900*time.Millisecond, ev.Took)
	require.Equal(t, 300*time.Millisecond, ev.Stage)
	require.Equal(t, 500*time.Millisecond, ev.Commit)
	require.Equal(t, []int32{1, 4}, ev.Parts)
	require.Equal(t, map[int32]int64{1: 42, 4: 7}, ev.Next)

	ev, ok, err = ParseLine("COMMIT 5 0 5 0 0 0 -")
	require.NoError(t, err)
	require.True(t, ok)
	require.Empty(t, ev.Parts)

	ev, ok, err = ParseLine("ABORT 10 unknown_outcome 49 5054000000")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "unknown_outcome", ev.Reason)
	require.Equal(t, 49, ev.Records)
	require.Equal(t, 5054*time.Millisecond, ev.Took)

	ev, ok, err = ParseLine("ABORT 10 rebalance 3") // an older worker: no took
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, 3, ev.Records)
	require.Zero(t, ev.Took)

	ev, ok, err = ParseLine("POLL 10 500 20000000")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, 500, ev.Records)
	require.Equal(t, 20*time.Millisecond, ev.Took)

	ev, ok, err = ParseLine("WARN 10 transaction outcome unknown; re-creating the producer and consumer err=context deadline exceeded")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "transaction outcome unknown; re-creating the producer and consumer err=context deadline exceeded", ev.Msg)

	_, ok, err = ParseLine("EXIT 0 <nil>")
	require.NoError(t, err)
	require.False(t, ok)
	_, ok, err = ParseLine("")
	require.NoError(t, err)
	require.False(t, ok)

	for _, bad := range []string{
		"COMMIT 1 2 3",                 // the old 4-field line: the tool needs this tree's worker
		"COMMIT x 1 1 1 1 1 -",         // time
		"COMMIT 1 1 1 1 1 1 3",         // partition without offset
		"COMMIT 1 1 1 1 zz 1 0:1",      // duration
		"POLL 1 2",                     // short
		"ABORT 1 rebalance notanumber", // records
		"COMMIT 1 1 1 1 1 1 0:1 extra", // long
	} {
		_, ok, err := ParseLine(bad)
		require.Error(t, err, bad)
		require.Contains(t, err.Error(), bad, "the error quotes the line")
		require.False(t, ok)
	}
}

var t0 = time.Unix(1000, 0)

func at(msec int) time.Time { return t0.Add(time.Duration(msec) * time.Millisecond) }

func commit(msec, startMsec int, parts ...int32) Event {
	return Event{Kind: "COMMIT", At: at(msec), Start: at(startMsec), Took: at(msec).Sub(at(startMsec)), Parts: parts}
}

func TestTxnsBeginAtPoll(t *testing.T) {
	pl := ProcLog{Name: "w1.1", Events: []Event{
		{Kind: "POLL", At: at(100)},
		commit(300, 0, 0),
		{Kind: "WARN", At: at(450), Msg: "fetching failed"},
		{Kind: "ABORT", At: at(460), Reason: "rebalance"},
		{Kind: "POLL", At: at(500)},
		commit(5500, 400, 1),
		{Kind: "WARN", At: at(5700), Msg: "after that commit: the next one's context"},
		commit(6000, 5600, 2), // no POLL line: begins at the first poll
	}}
	ts := Txns(pl)
	require.Len(t, ts, 3)
	require.Equal(t, 200*time.Millisecond, ts[0].Dur)
	require.Equal(t, 300*time.Millisecond, ts[0].Took)
	require.Empty(t, ts[0].Context)
	require.Equal(t, 5000*time.Millisecond, ts[1].Dur)
	require.Equal(t, 5100*time.Millisecond, ts[1].Took)
	require.Len(t, ts[1].Context, 2, "the WARN and ABORT between its first poll and its commit")
	require.Equal(t, 400*time.Millisecond, ts[2].Dur)
	require.Len(t, ts[2].Context, 1)
	require.Equal(t, at(300), FirstCommit(pl))
}

func TestOwnersFromCommits(t *testing.T) {
	pls := []ProcLog{
		{Name: "w1.1", Ended: at(2000), Events: []Event{commit(100, 0, 0, 1), commit(1000, 900, 1)}},
		{Name: "w2.1", Events: []Event{commit(500, 400, 2), commit(1500, 1400, 0)}},
	}
	require.Equal(t, map[int32]string{0: "w1.1", 1: "w1.1", 2: "w2.1"}, Owners(pls, at(600)))
	require.Equal(t, map[int32]string{0: "w2.1", 1: "w1.1", 2: "w2.1"}, Owners(pls, at(1600)))
	require.Equal(t, map[int32]string{0: "w2.1", 2: "w2.1"}, Owners(pls, at(2000)), "a stopped process owns nothing")
	require.Equal(t, []int32{0, 2}, OwnedBy(Owners(pls, at(1600)), "w2.1"))
}

func TestStayPut(t *testing.T) {
	// Partition 0 stays with w1; 1 moves from w1 to w2; 2 stays with w2
	// but w1 committed it once in the window (a handoff back and forth):
	// it did not stay put.
	pls := []ProcLog{
		{Name: "w1.1", Events: []Event{
			commit(100, 50, 0, 1), commit(900, 850, 0, 1),
			commit(1500, 1100, 0), // 400 ms, 600 ms after 0's previous commit
			commit(1600, 1550, 2),
			commit(2600, 1800, 0), // 800 ms
		}},
		{Name: "w2.1", Events: []Event{commit(800, 700, 2), commit(2000, 1900, 1, 2), commit(2800, 2700, 2)}},
	}
	stay, moved, txns, gap, gapPart := StayPut(pls, at(1000), at(3000))
	require.Equal(t, []int32{0}, stay)
	require.Equal(t, []int32{1, 2}, moved)
	require.Len(t, txns, 2)
	require.Equal(t, 400*time.Millisecond, txns[0].Dur)
	require.Equal(t, 800*time.Millisecond, txns[1].Dur)
	require.Equal(t, 1100*time.Millisecond, gap, "partition 0: 1500 -> 2600")
	require.Equal(t, int32(0), gapPart)
}

func TestResumeAndGroupGap(t *testing.T) {
	kill := at(1000)
	pls := []ProcLog{
		{Name: "w1.1", Events: []Event{commit(900, 800, 0), commit(1200, 950, 0), commit(4000, 3000, 0)}},
		{Name: "w2.1", Events: []Event{commit(990, 900, 1), commit(9000, 8500, 1)}},
		{Name: "w3.1", Events: []Event{commit(800, 700, 2)}},
	}
	res := Resume(pls, kill)
	require.Equal(t, map[string]time.Duration{"w1.1": 3 * time.Second, "w2.1": 8 * time.Second}, res,
		"w1's commit at +200ms began before the kill; w3 never resumed")
	require.Equal(t, 5*time.Second, GroupGap(pls, kill, at(9000)), "4000 -> 9000")
}
