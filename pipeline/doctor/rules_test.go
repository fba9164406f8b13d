package doctor

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// These tests construct the snapshot Check would gather, so every rule is
// covered, including cases a kfake cluster cannot express (unclean leader
// election, flush settings, offline partitions, old brokers' features).

// sp returns a pointer to s.
func sp(s string) *string { return &s }

// topic returns an existing topic with rf replicas and the given configs on
// top of Kafka's defaults.
func topic(name, role string, rf int, kv ...string) topicState {
	cfgs := map[string]*string{
		"min.insync.replicas":            sp("2"),
		"unclean.leader.election.enable": sp("false"),
		"retention.ms":                   sp("604800000"),
		"retention.bytes":                sp("-1"),
		"cleanup.policy":                 sp("delete"),
		"flush.messages":                 sp("9223372036854775807"),
		"flush.ms":                       sp("9223372036854775807"),
	}
	for i := 0; i+1 < len(kv); i += 2 {
		cfgs[kv[i]] = sp(kv[i+1])
	}
	return topicState{name: name, role: role, exists: true, rf: rf, parts: 3, configs: cfgs}
}

// broker returns a healthy Kafka 4.1 broker with the given configs on top.
func broker(id int32, kv ...string) brokerState {
	cfgs := map[string]*string{
		"transaction.max.timeout.ms":                sp("900000"),
		"group.min.session.timeout.ms":              sp("6000"),
		"group.max.session.timeout.ms":              sp("1800000"),
		"offsets.retention.minutes":                 sp("10080"),
		"transaction.partition.verification.enable": sp("true"),
		"transaction.state.log.replication.factor":  sp("3"),
		"transaction.state.log.min.isr":             sp("2"),
		"offsets.topic.replication.factor":          sp("3"),
		"min.insync.replicas":                       sp("2"),
		"default.replication.factor":                sp("3"),
		"auto.create.topics.enable":                 sp("false"),
	}
	for i := 0; i+1 < len(kv); i += 2 {
		cfgs[kv[i]] = sp(kv[i+1])
	}
	return brokerState{id: id, configs: cfgs, versionsListed: true, hasTxnCommit: true, txnCommitMax: 5, txnVersion: 2, txnVersionMax: 2}
}

// req is a Request with one input and one output and the defaults.
func req() Request {
	r, err := Request{Inputs: []string{"in"}, Outputs: []string{"out"}}.withDefaults()
	if err != nil {
		panic(err)
	}
	return r
}

// findOne returns the single finding of check on resource.
func findOne(t *testing.T, fs []Finding, check, resource string) Finding {
	t.Helper()
	var out []Finding
	for _, f := range fs {
		if f.Check == check && f.Resource == resource {
			out = append(out, f)
		}
	}
	require.Len(t, out, 1, "findings of %s on %s in %v", check, resource, fs)
	return out[0]
}

// evalTopic evaluates t on a healthy broker.
func evalTopic(t topicState) []Finding {
	return evaluate(snapshot{topics: []topicState{t}, brokers: []brokerState{broker(1)}}, req())
}

// TestReplicationFactor: RF 1 is a risk, 2 a warning, 3 or more OK.
func TestReplicationFactor(t *testing.T) {
	for _, c := range []struct {
		rf   int
		want Severity
	}{{1, Risk}, {2, Warn}, {3, OK}, {5, OK}} {
		f := findOne(t, evalTopic(topic("in", "input", c.rf, "min.insync.replicas", "1")), CheckReplicationFactor, "topic in")
		require.Equal(t, c.want, f.Severity, "rf %d", c.rf)
		if c.want != OK {
			require.Contains(t, f.Fix, "replication")
			require.NotEmpty(t, f.Risk)
		}
	}
	// The transaction state log's loss is a torn transaction.
	f := findOne(t, evalTopic(topic(TransactionStateTopic, "transaction state log", 1)), CheckReplicationFactor, "topic "+TransactionStateTopic)
	require.Equal(t, Risk, f.Severity)
	require.Contains(t, f.Risk, "torn transaction")
	require.Contains(t, f.Fix, "transaction.state.log.replication.factor=3")
}

// TestMinInsyncReplicas: 1, = RF and > RF are risks; 2 <= min ISR < RF is OK.
func TestMinInsyncReplicas(t *testing.T) {
	for _, c := range []struct {
		rf     int
		mi     string
		want   Severity
		inRisk string
	}{
		{1, "1", Risk, "leader alone"},
		{3, "1", Risk, "loss"},
		{3, "2", OK, ""},
		{3, "3", Risk, "one replica is down"},
		{3, "4", Risk, "cannot commit"},
		{2, "2", Risk, "one replica is down"},
		{5, "3", OK, ""},
	} {
		f := findOne(t, evalTopic(topic("in", "input", c.rf, "min.insync.replicas", c.mi)), CheckMinInsyncReplicas, "topic in")
		require.Equal(t, c.want, f.Severity, "rf %d min isr %s", c.rf, c.mi)
		require.Contains(t, f.Current, "min.insync.replicas="+c.mi)
		if c.want == Risk {
			require.Contains(t, f.Risk, c.inRisk)
			require.Contains(t, f.Fix, "min.insync.replicas=")
		}
	}
	missing := topic("in", "input", 3)
	delete(missing.configs, "min.insync.replicas")
	require.Equal(t, Warn, findOne(t, evalTopic(missing), CheckMinInsyncReplicas, "topic in").Severity)
}

// TestPartitionHealth: offline partitions are a risk, under-replicated a warning.
func TestPartitionHealth(t *testing.T) {
	ok := topic("in", "input", 3)
	require.Equal(t, OK, findOne(t, evalTopic(ok), CheckPartitionHealth, "topic in").Severity)
	under := topic("in", "input", 3)
	under.underRe = []int32{1}
	require.Equal(t, Warn, findOne(t, evalTopic(under), CheckPartitionHealth, "topic in").Severity)
	off := topic("in", "input", 3)
	off.offline = []int32{0, 2}
	f := findOne(t, evalTopic(off), CheckPartitionHealth, "topic in")
	require.Equal(t, Risk, f.Severity)
	require.Contains(t, f.Current, "[0 2]")
}

// TestUncleanLeaderElection: enabled is a risk (loss; duplicates on offsets).
func TestUncleanLeaderElection(t *testing.T) {
	f := findOne(t, evalTopic(topic("in", "input", 3, "unclean.leader.election.enable", "true")), CheckUncleanElection, "topic in")
	require.Equal(t, Risk, f.Severity)
	require.Contains(t, f.Risk, "loss")
	require.Contains(t, f.Fix, "unclean.leader.election.enable=false")
	f = findOne(t, evalTopic(topic(ConsumerOffsetsTopic, "consumer offsets topic", 3, "unclean.leader.election.enable", "true")), CheckUncleanElection, "topic "+ConsumerOffsetsTopic)
	require.Contains(t, f.Risk, "duplicates")
	require.Equal(t, OK, findOne(t, evalTopic(topic("in", "input", 3)), CheckUncleanElection, "topic in").Severity)
	missing := topic("in", "input", 3)
	delete(missing.configs, "unclean.leader.election.enable")
	require.Equal(t, Info, findOne(t, evalTopic(missing), CheckUncleanElection, "topic in").Severity)
}

// TestRetention: retention shorter than the planned downtime is a risk on
// inputs, a warning on outputs.
func TestRetention(t *testing.T) {
	hour := "3600000"
	f := findOne(t, evalTopic(topic("in", "input", 3, "retention.ms", hour)), CheckRetention, "topic in")
	require.Equal(t, Risk, f.Severity)
	require.Contains(t, f.Current, "1h0m0s")
	require.Contains(t, f.Fix, "retention.ms=604800000")
	require.Equal(t, Warn, findOne(t, evalTopic(topic("out", "output", 3, "retention.ms", hour)), CheckRetention, "topic out").Severity)
	require.Equal(t, OK, findOne(t, evalTopic(topic("in", "input", 3, "retention.ms", "-1")), CheckRetention, "topic in").Severity)
	require.Equal(t, OK, findOne(t, evalTopic(topic("in", "input", 3)), CheckRetention, "topic in").Severity)

	// Against a longer planned downtime, the 7-day default is a risk.
	r := req()
	r.Downtime = 14 * 24 * time.Hour
	fs := evaluate(snapshot{topics: []topicState{topic("in", "input", 3)}, brokers: []brokerState{broker(1)}}, r)
	require.Equal(t, Risk, findOne(t, fs, CheckRetention, "topic in").Severity)
	require.Equal(t, Risk, findOne(t, fs, CheckOffsetsRetention, "broker 1").Severity)

	// Internal topics are compacted: no retention finding.
	for _, f := range evalTopic(topic(TransactionStateTopic, "transaction state log", 3, "retention.ms", hour)) {
		require.NotEqual(t, CheckRetention, f.Check)
	}
}

// TestRetentionBytesAndCleanupPolicy: size limits and compaction on inputs warn.
func TestRetentionBytesAndCleanupPolicy(t *testing.T) {
	fs := evalTopic(topic("in", "input", 3, "retention.bytes", "1073741824", "cleanup.policy", "compact,delete"))
	require.Equal(t, Warn, findOne(t, fs, CheckRetentionBytes, "topic in").Severity)
	require.Equal(t, Warn, findOne(t, fs, CheckCleanupPolicy, "topic in").Severity)
	for _, f := range evalTopic(topic("in", "input", 3)) {
		require.NotContains(t, []string{CheckRetentionBytes, CheckCleanupPolicy}, f.Check)
	}
}

// TestLogFlush: no fsync is a risk on one copy, information with replication.
func TestLogFlush(t *testing.T) {
	f := findOne(t, evalTopic(topic("in", "input", 1, "min.insync.replicas", "1")), CheckLogFlush, "topic in")
	require.Equal(t, Risk, f.Severity)
	require.Contains(t, f.Risk, "replication")
	require.Contains(t, f.Risk, "page cache")
	require.Contains(t, f.Current, "(never)")
	f = findOne(t, evalTopic(topic("in", "input", 3)), CheckLogFlush, "topic in")
	require.Equal(t, Info, f.Severity)
	require.Contains(t, f.Risk, "relies on replication")
	f = findOne(t, evalTopic(topic("in", "input", 1, "min.insync.replicas", "1", "flush.messages", "1")), CheckLogFlush, "topic in")
	require.Equal(t, Info, f.Severity)
	require.Contains(t, f.Risk, "fsync")
}

// TestTopicMissing: a missing topic is a risk with the create command as fix.
func TestTopicMissing(t *testing.T) {
	fs := evalTopic(topicState{name: "in", role: "input"})
	f := findOne(t, fs, CheckTopicExists, "topic in")
	require.Equal(t, Risk, f.Severity)
	require.Contains(t, f.Fix, "kafka-topics.sh")
	require.Contains(t, f.Fix, "--replication-factor 3")
	require.Len(t, fs, 1+len(evaluate(snapshot{brokers: []brokerState{broker(1)}}, req())), "a missing topic has no other findings")

	b := broker(1, "auto.create.topics.enable", "true", "default.replication.factor", "1")
	fs = evaluate(snapshot{topics: []topicState{{name: "out", role: "output"}}, brokers: []brokerState{b}}, req())
	require.Contains(t, findOne(t, fs, CheckTopicExists, "topic out").Risk, "default.replication.factor=1")

	bad := topicState{name: "in", role: "input", err: errTest}
	require.Equal(t, Warn, findOne(t, evalTopic(bad), CheckTopicExists, "topic in").Severity)
}

var errTest = errorString("TOPIC_AUTHORIZATION_FAILED")

type errorString string

// Error returns the string.
func (e errorString) Error() string { return string(e) }

// TestTransactionStateLogNotYetCreated: the broker settings it will be
// created with are checked instead.
func TestTransactionStateLogNotYetCreated(t *testing.T) {
	res := "topic " + TransactionStateTopic + " (not yet created)"
	b := broker(1, "transaction.state.log.replication.factor", "1", "transaction.state.log.min.isr", "1")
	fs := evaluate(snapshot{topics: []topicState{{name: TransactionStateTopic, role: "transaction state log"}}, brokers: []brokerState{b}}, req())
	require.Equal(t, Info, findOne(t, fs, CheckTopicExists, res).Severity)
	rf := findOne(t, fs, CheckReplicationFactor, res)
	require.Equal(t, Risk, rf.Severity)
	require.Contains(t, rf.Fix, "transaction.state.log.replication.factor=3")
	mi := findOne(t, fs, CheckMinInsyncReplicas, res)
	require.Equal(t, Risk, mi.Severity)
	require.Equal(t, "transaction.state.log.min.isr=1", mi.Current)
	require.Contains(t, mi.Fix, "transaction.state.log.min.isr=2")

	fs = evaluate(snapshot{topics: []topicState{{name: TransactionStateTopic, role: "transaction state log"}}, brokers: []brokerState{broker(1)}}, req())
	require.Equal(t, OK, findOne(t, fs, CheckReplicationFactor, res).Severity)
	require.Equal(t, OK, findOne(t, fs, CheckMinInsyncReplicas, res).Severity)
}

// TestKIP447: TxnOffsetCommit below v3 is a risk in Kafka mode.
func TestKIP447(t *testing.T) {
	old := broker(1)
	old.txnCommitMax = 2
	f := findOne(t, evaluate(snapshot{brokers: []brokerState{old}}, req()), CheckKIP447, "broker 1")
	require.Equal(t, Risk, f.Severity)
	require.Contains(t, f.Risk, "duplicates")
	none := broker(1)
	none.hasTxnCommit = false
	require.Equal(t, Risk, findOne(t, evaluate(snapshot{brokers: []brokerState{none}}, req()), CheckKIP447, "broker 1").Severity)
	require.Equal(t, OK, findOne(t, evaluate(snapshot{brokers: []brokerState{broker(1)}}, req()), CheckKIP447, "broker 1").Severity)
	// Postgres mode does not rely on group fencing in the broker.
	r := req()
	r.PostgresOffsets = true
	for _, f := range evaluate(snapshot{brokers: []brokerState{old}}, r) {
		require.NotEqual(t, CheckKIP447, f.Check)
	}
}

// TestTransactionsV2: transaction.version below 2 warns, with the upgrade command.
func TestTransactionsV2(t *testing.T) {
	require.Equal(t, OK, findOne(t, evaluate(snapshot{brokers: []brokerState{broker(1)}}, req()), CheckTransactionsV2, "broker 1").Severity)
	off := broker(1)
	off.txnVersion = 0
	f := findOne(t, evaluate(snapshot{brokers: []brokerState{off}}, req()), CheckTransactionsV2, "broker 1")
	require.Equal(t, Warn, f.Severity)
	require.Contains(t, f.Fix, "kafka-features.sh")
	require.Contains(t, f.Fix, "transaction.version=2")
	old := broker(1)
	old.txnVersion, old.txnVersionMax = 0, 0
	f = findOne(t, evaluate(snapshot{brokers: []brokerState{old}}, req()), CheckTransactionsV2, "broker 1")
	require.Equal(t, Warn, f.Severity)
	require.Contains(t, f.Fix, "4.0")
}

// TestTxnPartitionVerification: disabled verification warns.
func TestTxnPartitionVerification(t *testing.T) {
	require.Equal(t, OK, findOne(t, evaluate(snapshot{brokers: []brokerState{broker(1)}}, req()), CheckTxnVerification, "broker 1").Severity)
	b := broker(1, "transaction.partition.verification.enable", "false")
	f := findOne(t, evaluate(snapshot{brokers: []brokerState{b}}, req()), CheckTxnVerification, "broker 1")
	require.Equal(t, Warn, f.Severity)
	require.Contains(t, f.Fix, "transaction.partition.verification.enable=true")
}

// TestTxnTimeoutVsBrokerMax: a timeout above the broker's maximum is a risk.
func TestTxnTimeoutVsBrokerMax(t *testing.T) {
	b := broker(1, "transaction.max.timeout.ms", "5000")
	f := findOne(t, evaluate(snapshot{brokers: []brokerState{b}}, req()), CheckTxnTimeoutMax, "broker 1")
	require.Equal(t, Risk, f.Severity)
	require.Contains(t, f.Risk, "INVALID_TRANSACTION_TIMEOUT")
	require.Contains(t, f.Fix, "5s")
	require.Contains(t, f.Fix, "transaction.max.timeout.ms>=10000")
	require.Equal(t, OK, findOne(t, evaluate(snapshot{brokers: []brokerState{broker(1)}}, req()), CheckTxnTimeoutMax, "broker 1").Severity)
}

// TestSessionTimeoutVsBroker: a session timeout outside the broker's range is a risk.
func TestSessionTimeoutVsBroker(t *testing.T) {
	b := broker(1, "group.min.session.timeout.ms", "20000")
	f := findOne(t, evaluate(snapshot{brokers: []brokerState{b}}, req()), CheckSessionTimeoutRange, "broker 1")
	require.Equal(t, Risk, f.Severity)
	require.Contains(t, f.Risk, "INVALID_SESSION_TIMEOUT")
	require.Equal(t, OK, findOne(t, evaluate(snapshot{brokers: []brokerState{broker(1)}}, req()), CheckSessionTimeoutRange, "broker 1").Severity)
}

// TestOffsetsRetention: offsets expiring before the downtime ends are a
// risk in Kafka mode only.
func TestOffsetsRetention(t *testing.T) {
	b := broker(1, "offsets.retention.minutes", "1440")
	f := findOne(t, evaluate(snapshot{brokers: []brokerState{b}}, req()), CheckOffsetsRetention, "broker 1")
	require.Equal(t, Risk, f.Severity)
	require.Contains(t, f.Risk, "duplicates")
	require.Contains(t, f.Risk, "loss")
	require.Contains(t, f.Fix, "offsets.retention.minutes>=10080")
	r := req()
	r.PostgresOffsets = true
	for _, f := range evaluate(snapshot{brokers: []brokerState{b}}, r) {
		require.NotEqual(t, CheckOffsetsRetention, f.Check)
	}
}

// TestTxnTimeoutVsSession: a transaction that can outlive the session is a risk.
func TestTxnTimeoutVsSession(t *testing.T) {
	r := req()
	r.TransactionTimeout, r.SessionTimeout, r.Group = 45*time.Second, 45*time.Second, "g"
	f := findOne(t, evaluate(snapshot{}, r), CheckTxnVsSession, "pipeline (group g)")
	require.Equal(t, Risk, f.Severity)
	require.Contains(t, f.Fix, "-txn-timeout 45s")
	require.Equal(t, OK, findOne(t, evaluate(snapshot{}, req()), CheckTxnVsSession, "pipeline").Severity)
}

// TestBrokerDescribeFailures: a broker that cannot be described warns.
func TestBrokerDescribeFailures(t *testing.T) {
	b := brokerState{id: 2, configsErr: errTest, apiErr: errTest}
	fs := evaluate(snapshot{brokers: []brokerState{b}}, req())
	var n int
	for _, f := range fs {
		if f.Check == CheckBrokerReachable {
			require.Equal(t, Warn, f.Severity)
			require.Contains(t, f.Current, "TOPIC_AUTHORIZATION_FAILED")
			n++
		}
	}
	require.Equal(t, 2, n)
}

// TestSortMergesBrokers: identical broker findings merge; worst first.
func TestSortMergesBrokers(t *testing.T) {
	fs := sortFindings(evaluate(snapshot{brokers: []brokerState{broker(1), broker(2), broker(3, "transaction.max.timeout.ms", "1000")}}, req()))
	require.Equal(t, "brokers 1,2,3", findOne(t, fs, CheckKIP447, "brokers 1,2,3").Resource)
	require.Equal(t, Risk, fs[0].Severity, "worst first")
	require.Equal(t, "broker 3", fs[0].Resource)
	require.Equal(t, OK, findOne(t, fs, CheckTxnTimeoutMax, "brokers 1,2").Severity)
}

// TestRequestValidation: bad fields are errors naming the field; zeros default.
func TestRequestValidation(t *testing.T) {
	for _, c := range []struct {
		r    Request
		want string
	}{
		{Request{}, "Inputs is empty"},
		{Request{Inputs: []string{""}}, `topic name ""`},
		{Request{Inputs: []string{"a,b"}}, `topic name "a,b"`},
		{Request{Inputs: []string{"a"}, Downtime: -time.Hour}, "Downtime is -1h0m0s"},
		{Request{Inputs: []string{"a"}, TransactionTimeout: -1}, "TransactionTimeout"},
	} {
		_, err := c.r.withDefaults()
		require.ErrorContains(t, err, c.want)
	}
	r, err := Request{Inputs: []string{"a"}}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, DefaultDowntime, r.Downtime)
	require.Equal(t, DefaultTransactionTimeout, r.TransactionTimeout)
	require.Equal(t, DefaultSessionTimeout, r.SessionTimeout)
}

// TestEveryFindingIsComplete: every finding has a current value and a risk,
// and every warning or risk a fix.
func TestEveryFindingIsComplete(t *testing.T) {
	bad := broker(1, "transaction.max.timeout.ms", "1", "offsets.retention.minutes", "1", "transaction.partition.verification.enable", "false", "group.min.session.timeout.ms", "60000")
	bad.txnCommitMax, bad.txnVersion = 2, 0
	s := snapshot{
		topics: []topicState{
			topic("in", "input", 1, "min.insync.replicas", "1", "unclean.leader.election.enable", "true", "retention.ms", "1", "retention.bytes", "1", "cleanup.policy", "compact"),
			{name: "out", role: "output"},
			{name: TransactionStateTopic, role: "transaction state log"},
		},
		brokers: []brokerState{bad},
	}
	r := req()
	r.SessionTimeout = r.TransactionTimeout
	for _, f := range evaluate(s, r) {
		require.NotEmpty(t, f.Check)
		require.NotEmpty(t, f.Resource)
		require.NotEmpty(t, f.Current, "%+v", f)
		require.NotEmpty(t, f.Risk, "%+v", f)
		if f.Severity >= Warn {
			require.NotEmpty(t, f.Fix, "%+v", f)
			require.False(t, strings.HasSuffix(f.Fix, "."), "fixes are commands, not sentences: %q", f.Fix)
		}
	}
}

// TestCommittedVsLogStart: a committed offset below the log start means
// records were deleted unprocessed.
func TestCommittedVsLogStart(t *testing.T) {
	r := req()
	r.Group = "g"
	in := topic("in", "input", 3)
	in.progress = map[int32][2]int64{0: {10, 4}, 1: {2, 7}, 2: {-1, 0}}
	f := findOne(t, evaluate(snapshot{topics: []topicState{in}}, r), CheckCommittedVsStart, "topic in")
	require.Equal(t, Risk, f.Severity)
	require.Equal(t, "partition 1 committed 2 < log start 7", f.Current)
	require.Contains(t, f.Risk, "5 record(s)")
	require.Contains(t, f.Risk, "already lost")

	in.progress = map[int32][2]int64{0: {10, 4}, 1: {-1, 7}}
	f = findOne(t, evaluate(snapshot{topics: []topicState{in}}, r), CheckCommittedVsStart, "topic in")
	require.Equal(t, OK, f.Severity)
	require.Equal(t, "1 of 2 partitions committed, all at or after the log start", f.Current)

	in.progress = map[int32][2]int64{0: {-1, 0}}
	require.Equal(t, Info, findOne(t, evaluate(snapshot{topics: []topicState{in}}, r), CheckCommittedVsStart, "topic in").Severity)

	in.progress, in.progressErr = nil, errTest
	require.Equal(t, Warn, findOne(t, evaluate(snapshot{topics: []topicState{in}}, r), CheckCommittedVsStart, "topic in").Severity)

	// No group given: no finding.
	for _, f := range evalTopic(topic("in", "input", 3)) {
		require.NotEqual(t, CheckCommittedVsStart, f.Check)
	}
}
