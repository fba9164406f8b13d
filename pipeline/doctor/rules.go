package doctor

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The checks, by the name a Finding carries.
const (
	CheckTopicExists         = "topic-exists"
	CheckReplicationFactor   = "replication-factor"
	CheckMinInsyncReplicas   = "min-insync-replicas"
	CheckPartitionHealth     = "partition-health"
	CheckUncleanElection     = "unclean-leader-election"
	CheckRetention           = "retention"
	CheckRetentionBytes      = "retention-bytes"
	CheckCleanupPolicy       = "cleanup-policy"
	CheckLogFlush            = "log-flush"
	CheckKIP447              = "kip-447"
	CheckTransactionsV2      = "transactions-v2"
	CheckTxnVerification     = "txn-partition-verification"
	CheckTxnTimeoutMax       = "txn-timeout-vs-broker-max"
	CheckSessionTimeoutRange = "session-timeout-vs-broker"
	CheckOffsetsRetention    = "offsets-retention"
	CheckTxnVsSession        = "txn-timeout-vs-session"
	CheckBrokerReachable     = "broker-describe"
	CheckCommittedVsStart    = "committed-vs-log-start"
	CheckMetadataLag         = "metadata-lag"
)

// evaluate turns a snapshot into findings. It is pure, so every rule can be
// tested on a constructed snapshot where a test cluster cannot express the
// case.
func evaluate(s snapshot, req Request) []Finding {
	var fs []Finding
	var first *brokerState // the lowest-id broker whose configs we have
	for i := range s.brokers {
		if s.brokers[i].configs != nil {
			first = &s.brokers[i]
			break
		}
	}
	for _, t := range s.topics {
		fs = append(fs, topicFindings(t, first, req)...)
	}
	for _, b := range s.brokers {
		fs = append(fs, brokerFindings(b, req)...)
	}
	fs = append(fs, pipelineFindings(req)...)
	return fs
}

// internal reports whether t is one of Kafka's internal topics.
func (t topicState) internal() bool {
	return t.name == TransactionStateTopic || t.name == ConsumerOffsetsTopic
}

// cfg returns a config value and whether the broker reported one.
func cfg(m map[string]*string, key string) (string, bool) {
	v, ok := m[key]
	if !ok || v == nil {
		return "", false
	}
	return *v, true
}

// cfgInt returns an integer config value and whether it was reported and
// parses.
func cfgInt(m map[string]*string, key string) (int64, bool) {
	v, ok := cfg(m, key)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	return n, err == nil
}

// alterTopic is the kafka-configs.sh command that sets key=value on topic.
func alterTopic(topic, kv string) string {
	return fmt.Sprintf("kafka-configs.sh --bootstrap-server <brokers> --alter --entity-type topics --entity-name %s --add-config %s", topic, kv)
}

// alterBrokers is the kafka-configs.sh command that sets key=value as the
// cluster-wide broker default.
func alterBrokers(kv string) string {
	return fmt.Sprintf("kafka-configs.sh --bootstrap-server <brokers> --alter --entity-type brokers --entity-default --add-config %s", kv)
}

// never marks Kafka's "no limit" value (Long.MAX_VALUE) of a flush setting.
func never(v string) string {
	if v == strconv.FormatInt(math.MaxInt64, 10) {
		return v + " (never)"
	}
	return v
}

// ms is d in milliseconds, the unit of Kafka's duration configs.
func ms(d time.Duration) int64 { return d.Milliseconds() }

// human renders milliseconds as a duration ("168h0m0s"); -1 is "forever".
func human(msv int64) string {
	if msv < 0 {
		return "forever"
	}
	if msv > math.MaxInt64/int64(time.Millisecond) {
		return "forever"
	}
	return (time.Duration(msv) * time.Millisecond).String()
}

// topicFindings checks one topic; b (may be nil) supplies the broker
// defaults a missing topic would be created with.
func topicFindings(t topicState, b *brokerState, req Request) []Finding {
	res := "topic " + t.name
	f := func(check string, sev Severity, current, risk, fix string) Finding {
		return Finding{Check: check, Resource: res, Severity: sev, Current: current, Risk: risk, Fix: fix}
	}
	var bcfg map[string]*string
	if b != nil {
		bcfg = b.configs
	}
	if t.err != nil {
		return []Finding{f(CheckTopicExists, Warn, "unknown: "+t.err.Error(),
			"the "+t.role+" topic could not be described, so none of its durability settings were checked",
			"grant the doctor's principal DESCRIBE and DESCRIBE_CONFIGS on topic "+t.name+", or check the broker logs for the error")}
	}
	if !t.exists {
		if t.internal() {
			return plannedInternal(t, bcfg, res)
		}
		auto := "unknown"
		if v, ok := cfg(bcfg, "auto.create.topics.enable"); ok {
			auto = v
		}
		defRF, _ := cfg(bcfg, "default.replication.factor")
		risk := fmt.Sprintf("the %s topic does not exist: Run fails with an unknown-topic error", t.role)
		if auto == "true" {
			risk = fmt.Sprintf("the %s topic does not exist, and auto.create.topics.enable=true: the first produce or metadata request creates it with the broker defaults (default.replication.factor=%s, min.insync.replicas from the broker), which are easily too weak", t.role, defRF)
		}
		return []Finding{f(CheckTopicExists, Risk, "missing", risk,
			fmt.Sprintf("kafka-topics.sh --bootstrap-server <brokers> --create --topic %s --partitions <n> --replication-factor 3 --config min.insync.replicas=2", t.name))}
	}
	out := []Finding{f(CheckTopicExists, OK, fmt.Sprintf("%d partitions (%s)", t.parts, t.role), "the topic exists", "")}

	// Replication factor.
	rfFix := fmt.Sprintf("raise it to 3: kafka-reassign-partitions.sh --bootstrap-server <brokers> --execute --reassignment-json-file <3 replicas per partition of %s>; for topics created later set default.replication.factor=3", t.name)
	if t.name == TransactionStateTopic {
		rfFix = "reassign __transaction_state to 3 replicas per partition (kafka-reassign-partitions.sh), and set transaction.state.log.replication.factor=3 in every broker's server.properties"
	} else if t.name == ConsumerOffsetsTopic {
		rfFix = "reassign __consumer_offsets to 3 replicas per partition (kafka-reassign-partitions.sh), and set offsets.topic.replication.factor=3 in every broker's server.properties"
	}
	out = append(out, rfFinding(res, t, t.rf, rfFix))

	// min.insync.replicas.
	if mi, ok := cfgInt(t.configs, "min.insync.replicas"); ok {
		out = append(out, minISRFinding(res, t, t.rf, mi))
	} else {
		out = append(out, f(CheckMinInsyncReplicas, Warn, "not reported",
			"the broker did not report min.insync.replicas for this topic, so whether acks=all means more than one copy is unknown",
			alterTopic(t.name, "min.insync.replicas=2")))
	}

	// Partition health now.
	switch {
	case len(t.offline) > 0:
		out = append(out, f(CheckPartitionHealth, Risk, fmt.Sprintf("no leader for partitions %v", t.offline),
			"these partitions accept no reads or writes now: the pipeline stalls on them, and if their last replica's disk is gone so are their records",
			"bring the replicas' brokers back; do not enable unclean leader election to force a leader (that truncates committed records)"))
	case len(t.underRe) > 0:
		out = append(out, f(CheckPartitionHealth, Warn, fmt.Sprintf("ISR smaller than replicas on partitions %v", t.underRe),
			"these partitions are under-replicated now: one more broker failure can stall writes (ISR below min.insync.replicas) or leave committed records on a single copy",
			"find the lagging or stopped broker (kafka-topics.sh --describe --under-replicated-partitions) and bring it back"))
	default:
		out = append(out, f(CheckPartitionHealth, OK, fmt.Sprintf("all %d partitions have a leader and a full ISR", t.parts), "no partition is offline or under-replicated", ""))
	}

	// Unclean leader election.
	if v, ok := cfg(t.configs, "unclean.leader.election.enable"); !ok {
		out = append(out, f(CheckUncleanElection, Info, "not reported",
			"the broker did not report unclean.leader.election.enable; Kafka's default is false (safe)", ""))
	} else if strings.EqualFold(v, "true") {
		risk := "when every in-sync replica is lost, an out-of-sync replica may become leader and the log is truncated to what it had: records that were acknowledged and committed (outputs, transaction markers) disappear — loss"
		if t.name == ConsumerOffsetsTopic {
			risk = "when every in-sync replica is lost, an out-of-sync replica may become leader and committed offsets roll back to older values: the pipeline reprocesses records whose outputs were already committed — duplicates"
		}
		out = append(out, f(CheckUncleanElection, Risk, "unclean.leader.election.enable=true", risk,
			alterTopic(t.name, "unclean.leader.election.enable=false")+" (and the same on the brokers: "+alterBrokers("unclean.leader.election.enable=false")+")"))
	} else {
		out = append(out, f(CheckUncleanElection, OK, "unclean.leader.election.enable="+v, "only an in-sync replica can become leader, so a leader change never truncates committed records", ""))
	}

	mi, _ := cfgInt(t.configs, "min.insync.replicas")
	out = append(out, flushFinding(res, t, t.rf, mi))

	if t.internal() {
		return out
	}

	// Retention against the expected downtime.
	if r, ok := cfgInt(t.configs, "retention.ms"); ok {
		cur := fmt.Sprintf("retention.ms=%d (%s)", r, human(r))
		down := req.Downtime
		switch {
		case r < 0 || r >= ms(down):
			out = append(out, f(CheckRetention, OK, cur, fmt.Sprintf("records outlive the planned downtime of %v", down), ""))
		case strings.Contains(t.role, "input"):
			out = append(out, f(CheckRetention, Risk, cur,
				fmt.Sprintf("records are deleted %s after they are written; a pipeline stopped longer than that (you plan for up to %v) comes back to find its unprocessed records expired — lost, and the consumer jumps to the earliest offset left", human(r), down),
				alterTopic(t.name, fmt.Sprintf("retention.ms=%d", ms(down)))+fmt.Sprintf(" (or -1 for no time limit; or plan for downtime below %s)", human(r))))
		default:
			out = append(out, f(CheckRetention, Warn, cur,
				fmt.Sprintf("outputs are deleted %s after they are written; a downstream consumer (or the verifier) stopped longer than that (planned downtime %v) misses them", human(r), down),
				alterTopic(t.name, fmt.Sprintf("retention.ms=%d", ms(down)))))
		}
	}
	if f, ok := progressFinding(t, req); ok {
		out = append(out, f)
	}
	if strings.Contains(t.role, "input") {
		if rb, ok := cfgInt(t.configs, "retention.bytes"); ok && rb >= 0 {
			out = append(out, f(CheckRetentionBytes, Warn, fmt.Sprintf("retention.bytes=%d", rb),
				fmt.Sprintf("a partition larger than %d bytes deletes its oldest segments whether or not the pipeline has read them: a backlog bigger than that (a stopped or slow pipeline) is lost", rb),
				alterTopic(t.name, "retention.bytes=-1")+" (or size it for the backlog of the planned downtime)"))
		}
		if cp, ok := cfg(t.configs, "cleanup.policy"); ok && strings.Contains(cp, "compact") {
			out = append(out, f(CheckCleanupPolicy, Warn, "cleanup.policy="+cp,
				"compaction removes older records of a key, possibly before the pipeline processed them: a lagging pipeline sees only the latest value per key, and a record-by-record verification reports the removed ones as missing",
				"keep compaction only if the pipeline needs just the latest value per key; otherwise "+alterTopic(t.name, "cleanup.policy=delete")))
		}
	}
	return out
}

// progressFinding compares the group's committed offsets on input t with
// the log start offsets: a committed offset below the log start means
// retention (or DeleteRecords) removed records the pipeline never
// processed — they are already lost.
func progressFinding(t topicState, req Request) (Finding, bool) {
	res := "topic " + t.name
	f := Finding{Check: CheckCommittedVsStart, Resource: res}
	if t.progressErr != nil {
		f.Severity = Warn
		f.Current = "unknown: " + t.progressErr.Error()
		f.Risk = fmt.Sprintf("group %s's committed offsets could not be read, so whether retention already removed unprocessed records is unknown", req.Group)
		f.Fix = "grant the doctor's principal DESCRIBE on group " + req.Group + ", and check -group"
		return f, true
	}
	if t.progress == nil {
		return f, false
	}
	var lost []string
	var total int64
	committed := 0
	parts := make([]int32, 0, len(t.progress))
	for p := range t.progress {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	for _, p := range parts {
		cs := t.progress[p]
		if cs[0] < 0 {
			continue
		}
		committed++
		if cs[0] < cs[1] {
			lost = append(lost, fmt.Sprintf("partition %d committed %d < log start %d", p, cs[0], cs[1]))
			total += cs[1] - cs[0]
		}
	}
	switch {
	case len(lost) > 0:
		f.Severity = Risk
		f.Current = strings.Join(lost, "; ")
		f.Risk = fmt.Sprintf("%d record(s) the group %s never processed were deleted by retention (or DeleteRecords) before it got to them: they are already lost, and the pipeline will resume at the log start", total, req.Group)
		f.Fix = "restore them from their source if you can; then lengthen retention (" + alterTopic(t.name, fmt.Sprintf("retention.ms=%d", ms(req.Downtime))) + ") or fix the pipeline's throughput so it keeps up"
	case committed == 0:
		f.Severity = Info
		f.Current = "no committed offsets for group " + req.Group
		f.Risk = "the group has not committed on this topic yet: the pipeline will start from its configured start position (earliest by default)"
	default:
		f.Severity = OK
		f.Current = fmt.Sprintf("%d of %d partitions committed, all at or after the log start", committed, len(parts))
		f.Risk = "no record was deleted before the group processed it"
	}
	return f, true
}

// plannedInternal checks an internal topic that does not exist yet against
// the broker settings it will be created with.
func plannedInternal(t topicState, bcfg map[string]*string, res string) []Finding {
	res += " (not yet created)"
	rfKey, isrKey := "transaction.state.log.replication.factor", "transaction.state.log.min.isr"
	if t.name == ConsumerOffsetsTopic {
		rfKey, isrKey = "offsets.topic.replication.factor", "min.insync.replicas"
	}
	var out []Finding
	out = append(out, Finding{Check: CheckTopicExists, Resource: res, Severity: Info, Current: "missing",
		Risk: fmt.Sprintf("Kafka creates the %s on first use with %s and %s from the broker config; the other findings on this resource check those", t.role, rfKey, isrKey)})
	rf, okRF := cfgInt(bcfg, rfKey)
	if !okRF {
		return append(out, Finding{Check: CheckReplicationFactor, Resource: res, Severity: Warn, Current: "not reported",
			Risk: "the broker did not report " + rfKey + ", so the replication of the " + t.role + " is unknown",
			Fix:  "set " + rfKey + "=3 in every broker's server.properties"})
	}
	out = append(out, rfFinding(res, t, int(rf), "set "+rfKey+"=3 in every broker's server.properties before the topic is first created (it is read only then)"))
	if mi, ok := cfgInt(bcfg, isrKey); ok {
		m := minISRFinding(res, t, int(rf), mi)
		m.Current = fmt.Sprintf("%s=%d", isrKey, mi)
		if m.Fix != "" {
			m.Fix = "set " + isrKey + "=2 (with " + rfKey + "=3) in every broker's server.properties before the topic is first created"
		}
		out = append(out, m)
	}
	return out
}

// rfFinding grades replication factor rf of topic t.
func rfFinding(res string, t topicState, rf int, fix string) Finding {
	f := Finding{Check: CheckReplicationFactor, Resource: res, Current: strconv.Itoa(rf)}
	what := "records"
	switch t.name {
	case TransactionStateTopic:
		what = "transaction states (a commit decided but not yet written to every partition)"
	case ConsumerOffsetsTopic:
		what = "committed offsets"
	}
	switch {
	case rf <= 1:
		f.Severity = Risk
		f.Risk = fmt.Sprintf("one copy of every partition: losing that broker's disk loses its %s for good, and any restart of that broker stops the pipeline until it is back", what)
		if t.name == TransactionStateTopic {
			f.Risk += "; a coordinator that loses a transaction in PrepareCommit leaves it committed on some partitions and not on others — a torn transaction (outputs without offsets: duplicates; offsets without outputs: loss)"
		} else if t.name == ConsumerOffsetsTopic {
			f.Risk += "; lost offsets send the pipeline back to its start position — every retained record is processed again (duplicates)"
		}
		f.Fix = fix
	case rf == 2:
		f.Severity = Warn
		f.Risk = "two copies: with min.insync.replicas=2 one broker down stops every transactional write; with min.insync.replicas=1 one broker down leaves acknowledged " + what + " on a single copy"
		f.Fix = fix
	default:
		f.Severity = OK
		f.Risk = fmt.Sprintf("%d copies: one broker can fail (or be restarted) without losing %s", rf, what)
	}
	return f
}

// minISRFinding grades min.insync.replicas mi against replication factor rf.
func minISRFinding(res string, t topicState, rf int, mi int64) Finding {
	f := Finding{Check: CheckMinInsyncReplicas, Resource: res, Current: fmt.Sprintf("min.insync.replicas=%d (replication factor %d)", mi, rf)}
	fix := alterTopic(t.name, "min.insync.replicas=2")
	switch {
	case rf <= 1 && mi <= 1:
		f.Severity = Risk
		f.Risk = "acks=all is satisfied by the leader alone: an acknowledged write, even a committed transaction, is one copy in one broker's page cache, and nothing protects it against that broker's loss"
		f.Fix = "first raise the replication factor to 3, then " + fix
	case mi > int64(rf):
		f.Severity = Risk
		f.Risk = fmt.Sprintf("min.insync.replicas %d exceeds the %d replicas: every acks=all write (every transactional produce and commit marker) fails with NOT_ENOUGH_REPLICAS — the pipeline cannot commit at all", mi, rf)
		f.Fix = alterTopic(t.name, fmt.Sprintf("min.insync.replicas=%d", max(rf-1, 1))) + " (or raise the replication factor)"
	case mi == int64(rf):
		f.Severity = Risk
		f.Risk = fmt.Sprintf("min.insync.replicas equals the replication factor (%d): as soon as one replica is down or lagging, every acks=all write fails with NOT_ENOUGH_REPLICAS and the pipeline stalls until it is back — no broker can be restarted without stopping the pipeline", rf)
		f.Fix = alterTopic(t.name, fmt.Sprintf("min.insync.replicas=%d", max(rf-1, 2))) + " (with replication factor 3 or more)"
		if rf == 2 {
			f.Fix = "raise the replication factor to 3 and keep min.insync.replicas=2"
		}
	case mi <= 1:
		f.Severity = Risk
		f.Risk = "when the ISR shrinks to the leader, acks=all writes (outputs, commit markers, offsets) are acknowledged with one copy; if that leader then dies, a replica that never had them becomes leader and the committed records are gone — loss"
		f.Fix = fix
	default:
		f.Severity = OK
		f.Risk = fmt.Sprintf("every acknowledged write is on at least %d brokers, and %d replica(s) can be down without stopping writes", mi, int64(rf)-mi)
	}
	return f
}

// flushFinding explains what the flush settings mean for this topic's
// durability.
func flushFinding(res string, t topicState, rf int, mi int64) Finding {
	msgs, okM := cfg(t.configs, "flush.messages")
	fms, okT := cfg(t.configs, "flush.ms")
	cur := "flush.messages=" + never(msgs) + " flush.ms=" + never(fms)
	if !okM && !okT {
		cur = "flush settings not reported (Kafka default: never fsync per write)"
	}
	f := Finding{Check: CheckLogFlush, Resource: res, Current: cur}
	n, err := strconv.ParseInt(msgs, 10, 64)
	if okM && err == nil && n == 1 {
		f.Severity = Info
		f.Risk = "every write is fsync'd before it is acknowledged: durable against a power loss even on one copy, at a large throughput cost"
		return f
	}
	if rf <= 1 || mi <= 1 {
		f.Severity = Risk
		f.Risk = "Kafka acknowledges a write once it is in the page cache of the in-sync replicas, without fsync; durability comes from replication. Here an acknowledged, even committed, record can live in one broker's page cache: a power loss or kernel crash of that machine loses it"
		f.Fix = "raise replication (replication factor 3, min.insync.replicas=2) — the Kafka way; only if you cannot, " + alterTopic(t.name, "flush.messages=1") + " (an fsync per write, much slower)"
		return f
	}
	f.Severity = Info
	f.Risk = fmt.Sprintf("no fsync per write: Kafka relies on replication, so a committed record is in the page cache of at least %d brokers and is lost only if all of them lose power before writing it out — put brokers in separate failure domains (broker.rack, separate power)", mi)
	return f
}

// brokerFindings checks one broker's API versions and configs against the
// pipeline.
func brokerFindings(b brokerState, req Request) []Finding {
	res := fmt.Sprintf("broker %d", b.id)
	f := func(check string, sev Severity, current, risk, fix string) Finding {
		return Finding{Check: check, Resource: res, Severity: sev, Current: current, Risk: risk, Fix: fix}
	}
	var out []Finding
	if b.configsErr != nil {
		out = append(out, f(CheckBrokerReachable, Warn, "configs unknown: "+b.configsErr.Error(),
			"this broker's configs could not be described, so its transaction and retention limits were not checked",
			"grant the doctor's principal DESCRIBE_CONFIGS on the cluster, and check that the broker is up"))
	}
	if len(b.lacks) > 0 {
		out = append(out, f(CheckMetadataLag, Warn, "its metadata lacks "+strings.Join(b.lacks, ", "),
			"the brokers disagree: another broker knows these topics, and this one's metadata still lacked them when the check stopped waiting for them to agree; a broker that lags the controller tells every client that asks it that the topics do not exist (and if they are being deleted, the other brokers lag instead)",
			"check this broker's log and its connection to the controller quorum; on KRaft, its metadata lag (last-applied-record-lag-ms of kafka.server:type=broker-metadata-metrics); restart it if it does not catch up"))
	}
	if b.apiErr != nil {
		out = append(out, f(CheckBrokerReachable, Warn, "API versions unknown: "+b.apiErr.Error(),
			"this broker did not answer ApiVersions, so its support for KIP-447 and transactions v2 was not checked",
			"check that the broker is up and reachable at its advertised address"))
	}

	if b.versionsListed && !req.PostgresOffsets {
		switch {
		case !b.hasTxnCommit:
			out = append(out, f(CheckKIP447, Risk, "TxnOffsetCommit not supported",
				"the broker does not support transactional offset commits: Kafka mode cannot commit offsets with its outputs atomically at all",
				"use Apache Kafka 2.5 or newer (4.x recommended)"))
		case b.txnCommitMax < 3:
			out = append(out, f(CheckKIP447, Risk, fmt.Sprintf("TxnOffsetCommit up to v%d", b.txnCommitMax),
				"without KIP-447 (TxnOffsetCommit v3) the broker cannot check the group generation on an offset commit: a paused instance that was replaced can still commit offsets and outputs of partitions it no longer owns — duplicates",
				"upgrade the brokers to Apache Kafka 2.5 or newer (4.x recommended)"))
		default:
			out = append(out, f(CheckKIP447, OK, fmt.Sprintf("TxnOffsetCommit up to v%d", b.txnCommitMax),
				"offset commits carry the group generation and member id, so the broker fences a replaced (zombie) instance", ""))
		}
	}
	if b.versionsListed && (len(req.Outputs) > 0 || !req.PostgresOffsets) {
		cur := fmt.Sprintf("transaction.version=%d (finalized), broker supports up to %d", b.txnVersion, b.txnVersionMax)
		switch {
		case b.txnVersion >= 2:
			out = append(out, f(CheckTransactionsV2, OK, cur,
				"KIP-890 transactions v2: the producer epoch bumps on every commit, so a delayed produce or EndTxn from an earlier transaction is rejected instead of landing in a later one", ""))
		case b.txnVersionMax >= 2:
			out = append(out, f(CheckTransactionsV2, Warn, cur,
				"the broker supports transactions v2 (KIP-890) but it is not enabled: a delayed produce or EndTxn can land in a later transaction (hanging or torn transactions, KAFKA-17754); exactly re-creates its producer after indeterminate errors, which narrows but does not close this",
				"kafka-features.sh --bootstrap-server <brokers> upgrade --feature transaction.version=2"))
		default:
			out = append(out, f(CheckTransactionsV2, Warn, cur,
				"the broker does not support transactions v2 (KIP-890): a delayed produce or EndTxn can land in a later transaction (hanging or torn transactions, KAFKA-17754); exactly re-creates its producer after indeterminate errors, which narrows but does not close this",
				"upgrade the brokers to Apache Kafka 4.0 or newer, then kafka-features.sh --bootstrap-server <brokers> upgrade --feature transaction.version=2"))
		}
	}
	if b.configs == nil {
		return out
	}
	if v, ok := cfg(b.configs, "transaction.partition.verification.enable"); ok && (len(req.Outputs) > 0 || !req.PostgresOffsets) {
		if strings.EqualFold(v, "false") {
			out = append(out, f(CheckTxnVerification, Warn, "transaction.partition.verification.enable=false",
				"the broker does not verify that a transactional produce belongs to an ongoing transaction (KIP-890 part 1): a late produce from an aborted transaction can start a hanging transaction that pins the last stable offset of its partition",
				alterBrokers("transaction.partition.verification.enable=true")))
		} else {
			out = append(out, f(CheckTxnVerification, OK, "transaction.partition.verification.enable="+v,
				"the broker rejects a transactional produce that is not part of an ongoing transaction", ""))
		}
	}
	if mx, ok := cfgInt(b.configs, "transaction.max.timeout.ms"); ok && (len(req.Outputs) > 0 || !req.PostgresOffsets) {
		cur := fmt.Sprintf("transaction.max.timeout.ms=%d (%s), pipeline transaction timeout %v", mx, human(mx), req.TransactionTimeout)
		if ms(req.TransactionTimeout) > mx {
			out = append(out, f(CheckTxnTimeoutMax, Risk, cur,
				"the broker refuses the pipeline's transaction timeout: InitProducerId fails with INVALID_TRANSACTION_TIMEOUT and the pipeline cannot start",
				fmt.Sprintf("lower the pipeline's TransactionTimeout to at most %s (-txn-timeout), or set transaction.max.timeout.ms>=%d in every broker's server.properties", human(mx), ms(req.TransactionTimeout))))
		} else {
			out = append(out, f(CheckTxnTimeoutMax, OK, cur, "the broker accepts the pipeline's transaction timeout", ""))
		}
	}
	minS, okMin := cfgInt(b.configs, "group.min.session.timeout.ms")
	maxS, okMax := cfgInt(b.configs, "group.max.session.timeout.ms")
	if okMin && okMax {
		cur := fmt.Sprintf("group.min.session.timeout.ms=%d group.max.session.timeout.ms=%d, pipeline session timeout %v", minS, maxS, req.SessionTimeout)
		s := ms(req.SessionTimeout)
		if s < minS || s > maxS {
			out = append(out, f(CheckSessionTimeoutRange, Risk, cur,
				"the broker refuses the pipeline's session timeout: JoinGroup fails with INVALID_SESSION_TIMEOUT and the pipeline cannot start",
				fmt.Sprintf("set the pipeline's SessionTimeout (-session-timeout) between %s and %s, or change the brokers' group.min/max.session.timeout.ms", human(minS), human(maxS))))
		} else {
			out = append(out, f(CheckSessionTimeoutRange, OK, cur, "the broker accepts the pipeline's session timeout", ""))
		}
	}
	if !req.PostgresOffsets {
		if m, ok := cfgInt(b.configs, "offsets.retention.minutes"); ok {
			r := time.Duration(m) * time.Minute
			cur := fmt.Sprintf("offsets.retention.minutes=%d (%v), planned downtime %v", m, r, req.Downtime)
			if r < req.Downtime {
				out = append(out, f(CheckOffsetsRetention, Risk, cur,
					fmt.Sprintf("once the group has had no member for %v the broker deletes its committed offsets; a pipeline stopped longer restarts from its start position: from the earliest offset it processes every retained record again (duplicates), from the latest it skips what was written while it was down (loss)", r),
					fmt.Sprintf("set offsets.retention.minutes>=%d in every broker's server.properties (or plan for downtime below %v)", int64(req.Downtime/time.Minute), r)))
			} else {
				out = append(out, f(CheckOffsetsRetention, OK, cur, "committed offsets outlive the planned downtime", ""))
			}
		}
	}
	return out
}

// pipelineFindings checks the pipeline's own timeouts against each other.
func pipelineFindings(req Request) []Finding {
	res := "pipeline"
	if req.Group != "" {
		res = "pipeline (group " + req.Group + ")"
	}
	cur := fmt.Sprintf("transaction timeout %v, session timeout %v", req.TransactionTimeout, req.SessionTimeout)
	if req.TransactionTimeout >= req.SessionTimeout {
		return []Finding{{Check: CheckTxnVsSession, Resource: res, Severity: Risk, Current: cur,
			Risk: "a transaction can outlive its owner's group membership: an instance paused past its session timeout is replaced while its transaction stays open, the new owner stalls on UNSTABLE_OFFSET_COMMIT until the broker aborts it, and the zombie may still commit outputs of partitions it no longer owns (exactly's pipeline refuses this configuration)",
			Fix:  fmt.Sprintf("make the transaction timeout smaller than the session timeout, e.g. -txn-timeout %v -session-timeout %v (pipeline.TransactionTimeout / pipeline.SessionTimeout; the defaults are 10s and 12s)", req.TransactionTimeout, req.TransactionTimeout+req.TransactionTimeout/5+time.Second)}}
	}
	return []Finding{{Check: CheckTxnVsSession, Resource: res, Severity: OK, Current: cur,
		Risk: "a transaction ends (commit, abort or broker timeout) before its owner can be replaced"}}
}
