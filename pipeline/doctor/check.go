package doctor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/exactlyonce/exactly/internal/backoff"
	"github.com/exactlyonce/exactly/internal/kmeta"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The defaults of Request, the same as the pipeline package's.
const (
	DefaultTransactionTimeout = 10 * time.Second
	DefaultSessionTimeout     = 12 * time.Second
	DefaultDowntime           = 7 * 24 * time.Hour
)

// Kafka's internal topics that a pipeline depends on.
const (
	TransactionStateTopic = "__transaction_state"
	ConsumerOffsetsTopic  = "__consumer_offsets"
)

// Request describes the pipeline to check.
type Request struct {
	// Inputs are the topics the pipeline consumes. At least one.
	Inputs []string
	// Outputs are the topics it produces to (outputs and dead letters).
	Outputs []string
	// Group is the pipeline's consumer group; it only labels the report.
	Group string
	// TransactionTimeout is the pipeline's transaction timeout. Default
	// DefaultTransactionTimeout (10s, as pipeline.TransactionTimeout).
	TransactionTimeout time.Duration
	// SessionTimeout is the pipeline's group session timeout. Default
	// DefaultSessionTimeout (12s, as pipeline.SessionTimeout).
	SessionTimeout time.Duration
	// Downtime is the longest the pipeline may be stopped (a weekend, an
	// incident) and still must lose nothing: retention and offset retention
	// are checked against it. Default DefaultDowntime (7 days).
	Downtime time.Duration
	// PostgresOffsets says the pipeline runs in Postgres mode: its offsets
	// live in a Postgres table, so __consumer_offsets, the broker's offset
	// retention and KIP-447 group fencing do not guard it.
	PostgresOffsets bool
}

// withDefaults returns r with zero durations set to their defaults, or an
// error naming the first bad field.
func (r Request) withDefaults() (Request, error) {
	if len(r.Inputs) == 0 {
		return r, errors.New("doctor: Request.Inputs is empty: name the pipeline's input topics (-topics a,b)")
	}
	for _, t := range append(append([]string(nil), r.Inputs...), r.Outputs...) {
		if strings.TrimSpace(t) == "" || strings.ContainsAny(t, " ,") {
			return r, fmt.Errorf("doctor: topic name %q is not valid: give plain topic names, comma separated on the command line", t)
		}
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"TransactionTimeout", &r.TransactionTimeout, DefaultTransactionTimeout},
		{"SessionTimeout", &r.SessionTimeout, DefaultSessionTimeout},
		{"Downtime", &r.Downtime, DefaultDowntime},
	} {
		if *d.v < 0 {
			return r, fmt.Errorf("doctor: Request.%s is %v: give a positive duration, or 0 for the default %v", d.name, *d.v, d.def)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	return r, nil
}

// topicState is what the cluster told us about one topic.
type topicState struct {
	name    string
	role    string // "input", "output", "transaction state log", "consumer offsets topic"
	exists  bool
	err     error              // a failure to describe the topic other than "does not exist"
	rf      int                // replicas of partition 0 (the smallest over partitions)
	parts   int                // number of partitions
	offline []int32            // partitions without a leader
	underRe []int32            // partitions whose ISR is smaller than their replicas
	configs map[string]*string // effective topic configs
	// The group's committed offsets against the log start offsets, for
	// inputs when Request.Group is set in Kafka mode.
	progress    map[int32][2]int64 // partition -> {committed, log start}; committed -1 when none
	progressErr error
}

// brokerState is what one broker told us about itself.
type brokerState struct {
	id             int32
	configs        map[string]*string // nil when they could not be described
	configsErr     error
	apiErr         error    // ApiVersions failed
	hasTxnCommit   bool     // TxnOffsetCommit is supported at all
	txnCommitMax   int16    // its max version
	txnVersion     int16    // finalized transaction.version, 0 when not finalized
	txnVersionMax  int16    // supported transaction.version max, 0 when not listed
	versionsListed bool     // ApiVersions answered
	lacks          []string // topics another broker knows that this one's metadata lacks
}

// snapshot is everything the rules look at, gathered in one pass.
type snapshot struct {
	topics  []topicState
	brokers []brokerState
}

// Check inspects every topic the pipeline touches, the transaction state
// log, the brokers' configs and API versions, and the pipeline's own
// timeouts, and returns one Finding per check and resource. It fails only
// when the cluster cannot be asked at all (bad Request, unreachable
// brokers); a topic that does not exist is a finding, not an error.
//
// cl's requests should be bounded by ctx; Check sends a handful of
// requests and nothing that changes the cluster: Metadata (to every broker
// too, when the first answer lacks a topic: see settle; it then waits up to
// 5s for brokers that disagree), DescribeConfigs for the topics and each
// broker, ApiVersions to each broker, and, with a Group, OffsetFetch and
// ListOffsets.
func Check(ctx context.Context, cl *kgo.Client, req Request) (Report, error) {
	req, err := req.withDefaults()
	if err != nil {
		return Report{}, err
	}
	if cl == nil {
		return Report{}, errNoClient
	}
	snap, err := gather(ctx, cl, req)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Findings: sortFindings(evaluate(snap, req))}
	for _, b := range snap.brokers {
		rep.Brokers = append(rep.Brokers, b.id)
	}
	return rep, nil
}

// settleTimeout bounds how long Check waits for the brokers to agree on
// topics some of them lack (a variable for the tests).
var settleTimeout = 5 * time.Second

// settle deals with the topics the first metadata answer lacked. A broker
// whose metadata lags (it has not applied the creation of a topic created a
// moment ago: Kafka's metadata is only eventually consistent across brokers)
// answers that the topic does not exist, so a topic is missing only if no
// broker knows it. While some brokers know a topic that others lack, settle
// asks them all again, up to settleTimeout. Then it refreshes the client's
// metadata cache, which kadm's later requests read and which still holds the
// first answer. It returns md with every topic some broker knew, and the
// brokers that still lack one.
func settle(ctx context.Context, cl *kgo.Client, adm *kadm.Client, md kadm.Metadata, names, missing []string) (kadm.Metadata, map[int32][]string) {
	deadline := time.Now().Add(settleTimeout)
	known := map[string]kmeta.Known{} // over every ask: a broker that knew a topic once is not forgotten
	var lacks map[int32][]string
	for {
		ans := kmeta.Ask(ctx, cl, md.Brokers, missing)
		for t, k := range ans.Known() {
			if _, ok := known[t]; !ok {
				known[t] = k
			}
		}
		lacks = ans.Lacking(slices.Sorted(maps.Keys(known)))
		if len(known) == 0 || len(lacks) == 0 || time.Now().After(deadline) || !backoff.Sleep(ctx, 100*time.Millisecond) {
			break
		}
	}
	if len(known) == 0 {
		return md, nil
	}
	refreshCache(ctx, cl, names, known)
	if fresh, err := adm.Metadata(ctx, names...); err == nil {
		md = fresh
	}
	if md.Topics == nil {
		md.Topics = kadm.TopicDetails{}
	}
	for t, k := range known {
		if td, ok := md.Topics[t]; !ok || kmeta.IsUnknownTopic(td.Err) {
			md.Topics[t] = k.Detail
		}
	}
	return md, lacks
}

// refreshCache asks anew for the metadata of names, which kgo caches for its
// MetadataMinAge, until an answer has every known topic or AskTimeout has
// passed. Each request goes to a broker kgo picks at random, so when one
// still lags a few tries find another.
func refreshCache(ctx context.Context, cl *kgo.Client, names []string, known map[string]kmeta.Known) {
	req := kmeta.Request(names)
	deadline := time.Now().Add(kmeta.AskTimeout)
	for {
		resp, err := cl.RequestCachedMetadata(ctx, req, time.Nanosecond) // older than 1ns: asked anew
		if err != nil {
			return
		}
		stale := slices.ContainsFunc(resp.Topics, func(rt kmsg.MetadataResponseTopic) bool {
			if rt.Topic == nil {
				return false
			}
			_, want := known[*rt.Topic]
			return want && kmeta.IsUnknownTopic(kerr.ErrorForCode(rt.ErrorCode))
		})
		if !stale || time.Now().After(deadline) || !backoff.Sleep(ctx, 20*time.Millisecond) {
			return
		}
	}
}

// gather asks the cluster for everything evaluate needs.
func gather(ctx context.Context, cl *kgo.Client, req Request) (snapshot, error) {
	adm := kadm.NewClient(cl)
	var snap snapshot
	roles := map[string]string{}
	var names []string
	add := func(t, role string) {
		if _, ok := roles[t]; ok {
			if !strings.Contains(roles[t], role) {
				roles[t] += " and " + role
			}
			return
		}
		roles[t] = role
		names = append(names, t)
	}
	for _, t := range req.Inputs {
		add(t, "input")
	}
	for _, t := range req.Outputs {
		add(t, "output")
	}
	if len(req.Outputs) > 0 || !req.PostgresOffsets {
		add(TransactionStateTopic, "transaction state log")
	}
	if !req.PostgresOffsets {
		add(ConsumerOffsetsTopic, "consumer offsets topic")
	}

	md, err := adm.Metadata(ctx, names...)
	if err != nil {
		return snap, fmt.Errorf("doctor: metadata for %s: %w", strings.Join(names, ","), err)
	}
	missing := kmeta.Missing(md, names)
	var lags map[int32][]string
	if len(missing) > 0 && len(md.Brokers) > 1 {
		md, lags = settle(ctx, cl, adm, md, names, missing)
	}
	var existing []string
	for _, t := range names {
		ts := topicState{name: t, role: roles[t]}
		td, ok := md.Topics[t]
		switch {
		case !ok || kmeta.IsUnknownTopic(td.Err):
		case td.Err != nil:
			ts.err = td.Err
		default:
			ts.exists = true
			ts.parts = len(td.Partitions)
			ts.rf = -1
			for _, p := range td.Partitions.Sorted() {
				if ts.rf < 0 || len(p.Replicas) < ts.rf {
					ts.rf = len(p.Replicas)
				}
				if p.Leader < 0 {
					ts.offline = append(ts.offline, p.Partition)
				}
				if len(p.ISR) < len(p.Replicas) {
					ts.underRe = append(ts.underRe, p.Partition)
				}
			}
			if ts.rf < 0 {
				ts.rf = 0
			}
			existing = append(existing, t)
		}
		snap.topics = append(snap.topics, ts)
	}

	if len(existing) > 0 {
		rcs, err := adm.DescribeTopicConfigs(ctx, existing...)
		if err != nil && len(rcs) == 0 {
			return snap, fmt.Errorf("doctor: describing configs of topics %s: %w", strings.Join(existing, ","), err)
		}
		for i := range snap.topics {
			ts := &snap.topics[i]
			if !ts.exists {
				continue
			}
			rc, err := rcs.On(ts.name, nil)
			if err == nil {
				err = rc.Err
			}
			if err != nil {
				ts.err = fmt.Errorf("describing its configs: %w", err)
				continue
			}
			ts.configs = configMap(rc.Configs)
		}
	}

	ids := md.Brokers.NodeIDs()
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	if len(ids) == 0 {
		return snap, errors.New("doctor: the cluster's metadata lists no brokers")
	}
	bcs, bErr := adm.DescribeBrokerConfigs(ctx, ids...)
	if bErr != nil && len(bcs) == 0 {
		return snap, fmt.Errorf("doctor: describing broker configs of brokers %v: %w", ids, bErr)
	}
	vs, err := adm.ApiVersions(ctx)
	if err != nil {
		return snap, fmt.Errorf("doctor: ApiVersions: %w", err)
	}
	for _, id := range ids {
		b := brokerState{id: id, lacks: lags[id]}
		rc, err := bcs.On(fmt.Sprint(id), nil)
		if err == nil {
			err = rc.Err
		}
		if err != nil {
			if bErr != nil {
				err = bErr
			}
			b.configsErr = err
		} else {
			b.configs = configMap(rc.Configs)
		}
		if v, ok := vs[id]; !ok {
			b.apiErr = errors.New("the broker did not answer ApiVersions")
		} else if v.Err != nil {
			b.apiErr = v.Err
		} else {
			b.versionsListed = true
			_, b.txnCommitMax, b.hasTxnCommit = v.KeyVersions(28) // TxnOffsetCommit
			if raw := v.Raw(); raw != nil {
				for _, f := range raw.FinalizedFeatures {
					if f.Name == "transaction.version" {
						b.txnVersion = f.MaxVersionLevel
					}
				}
				for _, f := range raw.SupportedFeatures {
					if f.Name == "transaction.version" {
						b.txnVersionMax = f.MaxVersion
					}
				}
			}
		}
		snap.brokers = append(snap.brokers, b)
	}
	if req.Group != "" && !req.PostgresOffsets {
		gatherProgress(ctx, adm, req, &snap)
	}
	return snap, nil
}

// gatherProgress reads the group's committed offsets and the log start
// offsets of the existing inputs, so evaluate can tell whether retention
// has already deleted records the group never processed.
func gatherProgress(ctx context.Context, adm *kadm.Client, req Request, snap *snapshot) {
	var inputs []string
	for _, ts := range snap.topics {
		if ts.exists && ts.configs != nil && strings.Contains(ts.role, "input") {
			inputs = append(inputs, ts.name)
		}
	}
	if len(inputs) == 0 {
		return
	}
	set := func(err error, fill func(ts *topicState)) {
		for i := range snap.topics {
			ts := &snap.topics[i]
			if !slices.Contains(inputs, ts.name) {
				continue
			}
			if err != nil {
				ts.progressErr = err
				continue
			}
			fill(ts)
		}
	}
	committed, err := KafkaCommitted(ctx, adm, req.Group, inputs...)
	if err != nil {
		set(err, nil)
		return
	}
	starts, err := adm.ListStartOffsets(ctx, inputs...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		set(fmt.Errorf("listing log start offsets: %w", err), nil)
		return
	}
	set(nil, func(ts *topicState) {
		ts.progress = map[int32][2]int64{}
		for p, lo := range starts[ts.name] {
			c, ok := committed[ts.name][p]
			if !ok {
				c = -1
			}
			ts.progress[p] = [2]int64{c, lo.Offset}
		}
	})
}

// configMap indexes configs by key.
func configMap(cs []kadm.Config) map[string]*string {
	m := make(map[string]*string, len(cs))
	for _, c := range cs {
		m[c.Key] = c.Value
	}
	return m
}
