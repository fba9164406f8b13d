package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func msd(ns ...int) []time.Duration {
	out := make([]time.Duration, len(ns))
	for i, n := range ns {
		out[i] = time.Duration(n) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	require.Zero(t, Percentile(nil, 50))
	require.Equal(t, 7*time.Millisecond, Percentile(msd(7), 99))
	ten := msd(10, 1, 9, 2, 8, 3, 7, 4, 6, 5) // unsorted on purpose
	require.Equal(t, 5*time.Millisecond, Percentile(ten, 50), "nearest rank: the 5th of 10")
	require.Equal(t, 9*time.Millisecond, Percentile(ten, 90))
	require.Equal(t, 10*time.Millisecond, Percentile(ten, 99))
	require.Equal(t, 10*time.Millisecond, Percentile(ten, 100))
	require.Equal(t, 1*time.Millisecond, Percentile(ten, 1))
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	hundred[99] = 5 * time.Second // one outlier in 100 is above the p99
	require.Equal(t, 99*time.Millisecond, Percentile(hundred, 99))
	require.Equal(t, 50*time.Millisecond, Percentile(hundred, 50))
	require.Equal(t, 10*time.Millisecond, ten[0], "the input is not sorted in place")
	require.Equal(t, 5*time.Second, Max(hundred))
}

func TestSummaryLine(t *testing.T) {
	s := Summary{StartMaxCommit: 1890, RestartP50: 340, RestartMax: 599, RebalanceP99Txn: 3631, FailoverResume: 18036}
	require.Equal(t, "availability: start_max_commit_ms=1890 restart_p50_ms=340 restart_max_ms=599 rebalance_p99_txn_ms=3631 failover_resume_ms=18036", s.Line())
	require.Equal(t, "availability: start_max_commit_ms=-1 restart_p50_ms=-1 restart_max_ms=-1 rebalance_p99_txn_ms=-1 failover_resume_ms=-1", NewSummary().Line())
}

func verdict(t *testing.T, vs []Verdict, name string) Verdict {
	for _, v := range vs {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no verdict %q", name)
	return Verdict{}
}

func TestVerdicts(t *testing.T) {
	good := Summary{StartMaxCommit: 2000, RestartP50: 500, RestartMax: 1000, RebalanceP99Txn: 1000, FailoverResume: 8000,
		DetectionMs: 6000, FenceMax: Unmeasured, FailoverAfterFence: Unmeasured, MaxRecreations: 1, RestartKills: 10, FailoverMeasured: 3}
	table, ok := VerdictTable(good.Verdicts())
	require.True(t, ok, table)
	require.NotContains(t, table, "FAIL")

	bad := good
	bad.RestartMax, bad.FailoverResume, bad.MaxRecreations = 1001, 8001, 2
	vs := bad.Verdicts()
	require.False(t, verdict(t, vs, "restart_max_ms").Pass)
	require.True(t, verdict(t, vs, "restart_p50_ms").Pass)
	fo := verdict(t, vs, "failover_resume_ms")
	require.False(t, fo.Pass)
	require.Contains(t, fo.Target, "8000")
	require.False(t, verdict(t, vs, "session re-creations per worker per broker fault").Pass)
	table, ok = VerdictTable(vs)
	require.False(t, ok)
	require.Equal(t, 3, strings.Count(table, "FAIL"), table)

	// With the fence observed, the target counts from it.
	fenced := good
	fenced.FailoverResume, fenced.FenceMax, fenced.FailoverAfterFence = 11000, 9200, 1900
	require.True(t, verdict(t, fenced.Verdicts(), "failover_resume_ms").Pass)
	fenced.FailoverAfterFence = 2100
	fo = verdict(t, fenced.Verdicts(), "failover_resume_ms")
	require.False(t, fo.Pass)
	require.Contains(t, fo.Target, "9200")

	table, ok = VerdictTable(NewSummary().Verdicts())
	require.False(t, ok, "nothing measured is a failure")
	require.NotContains(t, table, "PASS")
}

func TestParseProp(t *testing.T) {
	const key = "broker.session.timeout.ms"
	d, err := parseProp(strings.NewReader("node.id=1\n# comment\nbroker.session.timeout.ms=6000\nbroker.heartbeat.interval.ms=1000\n"), "x", key, 9000)
	require.NoError(t, err)
	require.Equal(t, int64(6000), d)
	d, err = parseProp(strings.NewReader("node.id=1\n"), "x", key, 9000)
	require.NoError(t, err)
	require.Equal(t, int64(9000), d, "Kafka's default")
	_, err = parseProp(strings.NewReader("broker.session.timeout.ms=six\n"), "/state/node1/server.properties", key, 9000)
	require.ErrorContains(t, err, "/state/node1/server.properties")
}

func TestHistogram(t *testing.T) {
	require.Equal(t, "<100ms:1 <250ms:1 <500ms:0 <1s:1 <2s:0 <5s:0 >=5s:2", Histogram(msd(99, 100, 999, 5000, 9000)))
}
