package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"
)

// TestCheckOnKfake runs Check against an in-process cluster with topics of
// chosen replication and configs: everything kfake can express.
func TestCheckOnKfake(t *testing.T) {
	_, adm, _ := fake(t, 3, kfake.BrokerConfigs(map[string]string{"transaction.max.timeout.ms": "5000"}))
	create(t, adm, "in-weak", 2, 1)
	create(t, adm, "in-strong", 2, 3, "min.insync.replicas=2")
	create(t, adm, "in-short", 1, 3, "min.insync.replicas=2", "retention.ms=3600000")
	create(t, adm, "out-all", 1, 3, "min.insync.replicas=3")

	rep, err := Check(ctxT(t), kcl(t, adm), Request{
		Inputs:  []string{"in-weak", "in-strong", "in-short"},
		Outputs: []string{"out-all", "out-missing"},
		Group:   "g",
	})
	require.NoError(t, err)
	t.Logf("\n%s", rep)
	require.True(t, rep.HasRisk())
	require.Equal(t, []int32{0, 1, 2}, rep.Brokers)

	sev := func(check, res string) Severity {
		t.Helper()
		return findOne(t, rep.Findings, check, res).Severity
	}
	require.Equal(t, Risk, sev(CheckReplicationFactor, "topic in-weak"))
	require.Equal(t, Risk, sev(CheckMinInsyncReplicas, "topic in-weak"))
	require.Equal(t, OK, sev(CheckReplicationFactor, "topic in-strong"))
	require.Equal(t, OK, sev(CheckMinInsyncReplicas, "topic in-strong"))
	require.Equal(t, Risk, sev(CheckRetention, "topic in-short"))
	require.Equal(t, Risk, sev(CheckMinInsyncReplicas, "topic out-all"), "min ISR = RF stalls on one replica down")
	require.Equal(t, Risk, sev(CheckTopicExists, "topic out-missing"))
	require.Equal(t, Risk, sev(CheckTxnTimeoutMax, "brokers 0,1,2"), "10s > the brokers' 5s max")
	require.Equal(t, OK, sev(CheckKIP447, "brokers 0,1,2"))
	require.Equal(t, OK, sev(CheckTransactionsV2, "brokers 0,1,2"))
	require.Equal(t, OK, sev(CheckTxnVsSession, "pipeline (group g)"))

	// The JSON form carries severities by name and round-trips.
	b, err := rep.JSON()
	require.NoError(t, err)
	require.Contains(t, string(b), `"severity": "risk"`)
	var back Report
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, rep, back)
}

// TestCheckOldBroker emulates a Kafka 2.4 broker: no KIP-447, no
// transactions v2.
func TestCheckOldBroker(t *testing.T) {
	_, adm, _ := fake(t, 1, kfake.MaxVersions(kversion.V2_4_0()))
	create(t, adm, "in", 1, 1)
	rep, err := Check(ctxT(t), kcl(t, adm), Request{Inputs: []string{"in"}})
	require.NoError(t, err)
	f := findOne(t, rep.Findings, CheckKIP447, "broker 0")
	require.Equal(t, Risk, f.Severity, "%+v", f)
	require.Equal(t, "TxnOffsetCommit up to v2", f.Current)
	require.Equal(t, Warn, findOne(t, rep.Findings, CheckTransactionsV2, "broker 0").Severity)
}

// TestCheckTimeouts: the pipeline's own timeouts against each other and
// against the brokers' limits.
func TestCheckTimeouts(t *testing.T) {
	_, adm, _ := fake(t, 1)
	create(t, adm, "in", 1, 1)
	rep, err := Check(ctxT(t), kcl(t, adm), Request{Inputs: []string{"in"}, TransactionTimeout: time.Minute, SessionTimeout: 30 * time.Second})
	require.NoError(t, err)
	require.Equal(t, Risk, findOne(t, rep.Findings, CheckTxnVsSession, "pipeline").Severity)
	require.Equal(t, OK, findOne(t, rep.Findings, CheckTxnTimeoutMax, "broker 0").Severity, "kfake's max is 15 minutes")
}

// TestCheckCommittedBelowLogStart: on kfake, records deleted before the
// group processed them are reported as already lost.
func TestCheckCommittedBelowLogStart(t *testing.T) {
	_, adm, seeds := fake(t, 1)
	create(t, adm, "in-del", 1, 1)
	produce(t, seeds, "in-del", 0, 10)
	_, err := adm.CommitOffsets(ctxT(t), "g", kadm.OffsetsFromRecords(kgo.Record{Topic: "in-del", Partition: 0, Offset: 1}))
	require.NoError(t, err)
	rep, err := Check(ctxT(t), kcl(t, adm), Request{Inputs: []string{"in-del"}, Group: "g"})
	require.NoError(t, err)
	require.Equal(t, OK, findOne(t, rep.Findings, CheckCommittedVsStart, "topic in-del").Severity)

	del, err := adm.DeleteRecords(ctxT(t), kadm.OffsetsFromRecords(kgo.Record{Topic: "in-del", Partition: 0, Offset: 5}))
	require.NoError(t, err)
	require.NoError(t, del.Error())
	rep, err = Check(ctxT(t), kcl(t, adm), Request{Inputs: []string{"in-del"}, Group: "g"})
	require.NoError(t, err)
	f := findOne(t, rep.Findings, CheckCommittedVsStart, "topic in-del")
	require.Equal(t, Risk, f.Severity)
	require.Equal(t, "partition 0 committed 2 < log start 6", f.Current)

	rep, err = Check(ctxT(t), kcl(t, adm), Request{Inputs: []string{"in-del"}, Group: "nobody"})
	require.NoError(t, err)
	require.Equal(t, Info, findOne(t, rep.Findings, CheckCommittedVsStart, "topic in-del").Severity)
}

// TestCheckBadRequest: a bad Request or a nil client is an error, not a panic.
func TestCheckBadRequest(t *testing.T) {
	_, adm, _ := fake(t, 1)
	_, err := Check(ctxT(t), kcl(t, adm), Request{})
	require.ErrorContains(t, err, "Inputs is empty")
	_, err = Check(ctxT(t), nil, Request{Inputs: []string{"a"}})
	require.ErrorIs(t, err, errNoClient)
	_, err = Lag(ctxT(t), nil, nil, "a")
	require.ErrorIs(t, err, errNoAdmin)
	_, err = KafkaCommitted(ctxT(t), nil, "g")
	require.ErrorIs(t, err, errNoAdmin)
}

// TestDialFailsFast: an unreachable broker fails within the context's
// deadline with an error naming the broker and the cause.
func TestDialFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	cl, err := Dial(ctx, []string{addr})
	require.Nil(t, cl)
	require.Error(t, err)
	require.Less(t, time.Since(start), 5*time.Second)
	require.Contains(t, err.Error(), addr)
	require.Contains(t, err.Error(), "connection refused")

	_, err = Dial(ctx, []string{" ", ""})
	require.ErrorContains(t, err, "no brokers")
}

// TestDialTimeout: a broker that accepts connections but never answers is
// bounded by the context.
func TestDialTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err = Dial(ctx, []string{ln.Addr().String()})
	require.ErrorContains(t, err, ln.Addr().String())
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, ln.Close())
	for c := range accepted {
		c.Close()
	}
}

// TestReportText: the table is worst first, explains every non-OK finding
// and ends with a summary; severities reject unknown names.
func TestReportText(t *testing.T) {
	rep := Report{Findings: sortFindings([]Finding{
		{Check: "a", Resource: "topic x", Severity: OK, Current: "3", Risk: "fine"},
		{Check: "b", Resource: "topic x", Severity: Risk, Current: "1", Risk: "loses records", Fix: "set it to 3"},
	})}
	s := rep.String()
	require.True(t, strings.HasPrefix(s, "SEVERITY"))
	require.Less(t, strings.Index(s, "RISK"), strings.Index(s, "OK"), "worst first")
	require.Contains(t, s, "risk: loses records")
	require.Contains(t, s, "fix:  set it to 3")
	require.Contains(t, s, "1 risk, 0 warn, 0 info, 1 ok")
	require.NotContains(t, s, "risk: fine", "OK findings get no explanation block")
	require.Equal(t, Risk, rep.Worst())
	require.Len(t, rep.Find("b"), 1)

	var s2 Severity
	require.Error(t, s2.UnmarshalText([]byte("fatal")))
	_, err := Severity(9).MarshalText()
	require.Error(t, err)
}

// A topic one broker's metadata lacks for a moment (it has not applied the
// topic's creation yet) is not reported missing, and nothing else about it
// is off (CI: the preflight of a worker started right after its topics were
// created warned that both did not exist). The client knows only the
// lagging broker, so the first answer comes from it, and kgo's metadata
// cache holds that answer for the requests that follow.
func TestCheckWaitsForABrokerThatLags(t *testing.T) {
	c, adm, brokers := fake(t, 3)
	create(t, adm, "in", 2, 3, "min.insync.replicas=2")
	var (
		laggard atomic.Int32
		first   atomic.Int64 // the laggard's first lagging answer, in Unix nanoseconds
	)
	laggard.Store(-1)
	bs := testkit.LagMetadata(t, c, "in", func(node int32) bool {
		if node != laggard.Load() {
			return false
		}
		now := time.Now().UnixNano()
		first.CompareAndSwap(0, now)
		return time.Duration(now-first.Load()) < time.Second
	})
	laggard.Store(testkit.NodeAt(t, bs, brokers[0]))
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers[0]))
	require.NoError(t, err)
	defer cl.Close()
	rep, err := Check(ctxT(t), cl, Request{Inputs: []string{"in", "in-missing"}, Group: "g"})
	require.NoError(t, err)
	t.Logf("\n%s", rep)
	require.NotZero(t, first.Load(), "the laggard answered first")
	for _, f := range rep.Findings {
		if f.Resource == "topic in" {
			require.Contains(t, []Severity{OK, Info}, f.Severity, "%s", f)
		}
		require.NotEqual(t, CheckMetadataLag, f.Check, "the lag was over within the wait")
	}
	require.Equal(t, OK, findOne(t, rep.Findings, CheckTopicExists, "topic in").Severity)
	require.Equal(t, Risk, findOne(t, rep.Findings, CheckTopicExists, "topic in-missing").Severity)
}

// A broker whose metadata still lacks a topic after the wait is named in a
// metadata-lag warning; the topic is reported from the brokers that know it.
// (Check looks for lagging brokers only when the first answer lacks a topic:
// here it comes from the laggard.)
func TestCheckNamesABrokerThatKeepsLagging(t *testing.T) {
	defer func(d time.Duration) { settleTimeout = d }(settleTimeout)
	settleTimeout = 300 * time.Millisecond
	c, adm, brokers := fake(t, 3)
	create(t, adm, "in", 2, 3, "min.insync.replicas=2")
	var laggard atomic.Int32
	laggard.Store(-1)
	bs := testkit.LagMetadata(t, c, "in", func(node int32) bool { return node == laggard.Load() })
	laggard.Store(testkit.NodeAt(t, bs, brokers[0]))
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers[0]))
	require.NoError(t, err)
	defer cl.Close()
	rep, err := Check(ctxT(t), cl, Request{Inputs: []string{"in"}, Group: "g"})
	require.NoError(t, err)
	t.Logf("\n%s", rep)
	lag := findOne(t, rep.Findings, CheckMetadataLag, fmt.Sprintf("broker %d", laggard.Load()))
	require.Equal(t, Warn, lag.Severity)
	require.Contains(t, lag.Current, "lacks in")
	// The requests after the wait (the group's log-start offsets read kgo's
	// metadata cache) see the topic too.
	for _, f := range rep.Findings {
		if f.Resource == "topic in" {
			require.Contains(t, []Severity{OK, Info}, f.Severity, "%s", f)
		}
	}
	require.Equal(t, OK, findOne(t, rep.Findings, CheckTopicExists, "topic in").Severity)
}
