package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/txn"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Opt configures a Pipeline.
type Opt interface{ apply(*config) }

type opt func(*config)

func (o opt) apply(c *config) { o(c) }

type config struct {
	brokers      []string
	group        string
	topics       []string
	instanceID   string
	maxRecords   int
	maxBytes     int
	maxWait      time.Duration
	concurrency  int
	stageRetries int
	backoffMin   time.Duration
	backoffMax   time.Duration
	startTimeout time.Duration
	sessTimeout  time.Duration
	txnTimeout   time.Duration
	heartbeat    time.Duration
	resetOffset  kgo.Offset
	resetSet     bool
	logger       *slog.Logger
	clientOpts   []kgo.Opt
	hooks        []Hook
	dataLoss     DataLossPolicy
	preflight    PreflightPolicy
	outputs      []string
	static       bool
	// missingTopics is what Run does about input topics that do not exist.
	missingTopics MissingTopicPolicy
}

func defaults() config {
	return config{
		maxRecords:   50_000,
		maxBytes:     16 << 20,
		maxWait:      100 * time.Millisecond,
		concurrency:  runtime.GOMAXPROCS(0),
		stageRetries: 10,
		backoffMin:   50 * time.Millisecond,
		backoffMax:   5 * time.Second,
		startTimeout: time.Minute,
		sessTimeout:  12 * time.Second,
		txnTimeout:   10 * time.Second,
		heartbeat:    250 * time.Millisecond,
		static:       true,
	}
}

// Brokers sets the seed brokers, "host:port" each. Required unless
// ClientOpts carries kgo.SeedBrokers.
func Brokers(addrs ...string) Opt {
	return opt(func(c *config) { c.brokers = append(c.brokers, addrs...) })
}

// Group sets the consumer group. Required. Instances of one pipeline share a
// group and split its partitions.
func Group(name string) Opt { return opt(func(c *config) { c.group = name }) }

// Topics sets the input topics. Required.
func Topics(topics ...string) Opt {
	return opt(func(c *config) { c.topics = append(c.topics, topics...) })
}

// InstanceID names this instance. Required. It must be stable across
// restarts of the same instance and unique among instances running at once:
// the Kafka sink's transactional id is derived from it, and a restarted
// instance uses it to fence its crashed predecessor and resume within about
// a second instead of waiting out the transaction timeout. Letters, digits,
// '.', '_' and '-' only. The Kafka sink's transactional id is
// "<group>:<instance id>" (kafkasink.TransactionalID), distinct for every
// pair of group and instance id.
func InstanceID(id string) Opt { return opt(func(c *config) { c.instanceID = id }) }

// MaxRecords bounds the records in one transaction, over all partitions.
// Default 50,000 (MaxBytes and MaxWait usually end a batch first). A
// transaction has a fixed cost; tens of thousands of records per transaction
// amortise it (see BENCHMARKS.md). Lower it for a slow Stage, which must
// finish a batch within 80% of the transaction timeout.
func MaxRecords(n int) Opt { return opt(func(c *config) { c.maxRecords = n }) }

// MaxBytes bounds the bytes (keys and values) of the input records in one
// transaction. Default 16 MiB. Polls are sized from the largest record seen
// so far, so a transaction exceeds MaxBytes by less than one record (unless a
// record larger than any before arrives in its last poll).
func MaxBytes(n int) Opt { return opt(func(c *config) { c.maxBytes = n }) }

// MaxWait bounds how long a batch keeps growing after its first record
// arrived. Default 100ms. Lower means lower latency and more, smaller
// transactions. With a sink whose commit is cheap (the Postgres sink), a
// batch at least half full also ends before MaxWait once a poll has taken
// everything the client had fetched, so that the next fetch overlaps the
// Stage and the commit instead of delaying them.
func MaxWait(d time.Duration) Opt { return opt(func(c *config) { c.maxWait = d }) }

// Concurrency bounds how many partitions' batches are processed at once.
// Default GOMAXPROCS. 1 processes the partitions of a transaction one after
// another.
func Concurrency(n int) Opt { return opt(func(c *config) { c.concurrency = n }) }

// StageRetries is how many times in a row a failing batch is retried (with
// exponential backoff) before Run gives up and returns a [*StageError].
// Default 10. Nothing is committed for a failing batch, so giving up loses
// nothing: a restart resumes at the batch.
func StageRetries(n int) Opt { return opt(func(c *config) { c.stageRetries = n }) }

// Backoff sets the minimum and maximum delay between retries after an
// aborted transaction or a failed session. Defaults 50ms and 5s.
func Backoff(minDelay, maxDelay time.Duration) Opt {
	return opt(func(c *config) { c.backoffMin, c.backoffMax = minDelay, maxDelay })
}

// StartTimeout bounds how long Run keeps trying to open its session (reach
// the brokers, fence the previous incarnation, check the offsets table)
// before it returns the error. Default 1 minute. Run opens one session; once
// it is open, the session heals itself (a Kafka session re-creates its
// clients after an unknown outcome or a broker-side timeout, retrying until
// the context ends) and is never re-opened by Run.
func StartTimeout(d time.Duration) Opt { return opt(func(c *config) { c.startTimeout = d }) }

// SessionTimeout is the group session timeout. Default 12s. An instance
// that stops heartbeating for this long is replaced, and if it comes back it
// is fenced. Must be larger than TransactionTimeout.
func SessionTimeout(d time.Duration) Opt { return opt(func(c *config) { c.sessTimeout = d }) }

// TransactionTimeout is the Kafka transaction timeout: a transaction open
// this long is aborted by the broker. Default 10s. It must be below the
// session timeout so a zombie's transaction cannot outlive its membership.
//
// It also budgets each batch, in both modes: the Stage gets 80% of it
// (its ctx carries that deadline) and the commit the rest. A batch whose
// Stage runs past its budget fails with a *StageError that says so and is
// retried like any Stage failure; lower MaxRecords or raise this if your
// Stage needs longer.
func TransactionTimeout(d time.Duration) Opt { return opt(func(c *config) { c.txnTimeout = d }) }

// HeartbeatInterval is the group heartbeat interval. Default 250ms.
//
// A member learns of a rebalance from its next heartbeat, and in the classic
// group protocol no member's transaction can commit its offsets until every
// member has rejoined (franz-go blocks TxnOffsetCommit during join and
// sync), so each round of a rebalance lasts about one heartbeat interval;
// a cooperative rebalance that moves partitions takes two. At Kafka's 3 s
// default the partitions that stay put stalled for seconds whenever a worker
// joined or left; at 250 ms their transactions' p99 in the chaos suite's
// churn cell is under a second. A heartbeat is a small request.
func HeartbeatInterval(d time.Duration) Opt { return opt(func(c *config) { c.heartbeat = d }) }

// StaticMembership makes InstanceID the group.instance.id (KIP-345) too.
// Default true. A restarted instance then takes its predecessor's place in
// the group at once instead of waiting for the session timeout to expire the
// dead member, which together with fencing at start lets a crashed instance
// resume within about a second. On a clean stop (Run's context cancelled)
// the instance still leaves the group, so its partitions move at once; an
// instance that was fenced never leaves on behalf of its replacement.
func StaticMembership(on bool) Opt { return opt(func(c *config) { c.static = on }) }

// ResetOffset is where a partition with no committed offset starts.
// Default kgo.NewOffset().AtStart() (earliest), so nothing written before
// the group first ran is skipped.
func ResetOffset(o kgo.Offset) Opt {
	return opt(func(c *config) { c.resetOffset, c.resetSet = o, true })
}

// DataLossPolicy says what Run does when records of an input partition
// disappear before it processed them (see [DataLossError]).
type DataLossPolicy int

const (
	// DataLossStop makes Run return a *DataLossError (inside a
	// *sinks.FatalError). The default: a gap is never committed past
	// silently.
	DataLossStop DataLossPolicy = iota
	// DataLossContinue logs the gap at ERROR, counts it
	// (Stats.DataLosses) and goes on from where the consumer was reset.
	DataLossContinue
)

// DataLoss sets the data loss policy. Default DataLossStop.
func DataLoss(p DataLossPolicy) Opt { return opt(func(c *config) { c.dataLoss = p }) }

// Logger sets the logger. Default: discard.
func Logger(l *slog.Logger) Opt { return opt(func(c *config) { c.logger = l }) }

// OnCommit is called after every committed transaction, from Run's
// goroutine; keep it fast. It is a [HookBatchCommitted] in function form.
func OnCommit(fn func(CommitInfo)) Opt {
	return opt(func(c *config) {
		if fn != nil {
			c.hooks = append(c.hooks, commitFunc(fn))
		}
	})
}

// ClientOpts passes franz-go client options through: TLS, SASL (including
// AWS MSK IAM), client id, logger, hooks, fetch sizes. Options that would
// break exactly-once are refused by New with an error that says why:
// read_uncommitted isolation, disabled idempotence, acks other than all,
// topic auto-creation (exactly never creates topics), and options the
// pipeline sets itself (group, topics, transactional id, auto-commit, the
// client's context).
func ClientOpts(opts ...kgo.Opt) Opt {
	return opt(func(c *config) { c.clientOpts = append(c.clientOpts, opts...) })
}

const errAcks = "acks must be all (the default): acks=0 or 1 loses records when a leader fails before its followers copied them"

var idRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

func (c *config) validate() error {
	bad := func(opt string, v any, why string, args ...any) error {
		return &sinks.ConfigError{Option: "pipeline." + opt, Value: v, Reason: fmt.Sprintf(why, args...)}
	}
	if c.group == "" {
		return bad("Group", `""`, "a consumer group is required")
	}
	if len(c.topics) == 0 {
		return bad("Topics", "[]", "at least one input topic is required")
	}
	seen := map[string]bool{}
	for _, t := range c.topics {
		if t == "" || strings.ContainsAny(t, " \t\n,") {
			return bad("Topics", fmt.Sprintf("%q", t), "topic names must be non-empty and contain no spaces or commas")
		}
		if seen[t] {
			return bad("Topics", fmt.Sprintf("%q", t), "topic listed twice")
		}
		seen[t] = true
	}
	if c.instanceID == "" {
		return bad("InstanceID", `""`, "an instance id is required: it must be stable across restarts and unique among running instances, so a restart fences its crashed predecessor")
	}
	if !idRE.MatchString(c.instanceID) {
		return bad("InstanceID", fmt.Sprintf("%q", c.instanceID), "use letters, digits, '.', '_' and '-' only (no ':', which separates the group from the instance id in the transactional id)")
	}
	for _, b := range c.brokers {
		if b == "" || !strings.Contains(b, ":") {
			return bad("Brokers", fmt.Sprintf("%q", b), "each broker must be host:port")
		}
	}
	switch {
	case c.maxRecords <= 0:
		return bad("MaxRecords", c.maxRecords, "must be positive")
	case c.maxBytes <= 0:
		return bad("MaxBytes", c.maxBytes, "must be positive")
	case c.maxWait <= 0:
		return bad("MaxWait", c.maxWait, "must be positive")
	case c.concurrency <= 0:
		return bad("Concurrency", c.concurrency, "must be positive")
	case c.stageRetries < 0:
		return bad("StageRetries", c.stageRetries, "must not be negative")
	case c.backoffMin <= 0 || c.backoffMax < c.backoffMin:
		return bad("Backoff", fmt.Sprintf("(%v, %v)", c.backoffMin, c.backoffMax), "need 0 < min <= max")
	case c.startTimeout <= 0:
		return bad("StartTimeout", c.startTimeout, "must be positive")
	case c.txnTimeout <= 0:
		return bad("TransactionTimeout", c.txnTimeout, "must be positive")
	case c.sessTimeout <= c.txnTimeout:
		return bad("SessionTimeout", c.sessTimeout, "must be larger than the transaction timeout %v, so a zombie's transaction cannot outlive its group membership: raise pipeline.SessionTimeout above %v, or lower pipeline.TransactionTimeout", c.txnTimeout, c.txnTimeout)
	case c.heartbeat <= 0 || c.heartbeat*3 > c.sessTimeout:
		return bad("HeartbeatInterval", c.heartbeat, "must be positive and at most a third of the session timeout %v", c.sessTimeout)
	case c.preflight < PreflightWarn || c.preflight > PreflightOff:
		return bad("Preflight", int(c.preflight), "use pipeline.PreflightWarn, PreflightRefuse or PreflightOff")
	case c.dataLoss != DataLossStop && c.dataLoss != DataLossContinue:
		return bad("DataLoss", int(c.dataLoss), "use pipeline.DataLossStop or pipeline.DataLossContinue")
	case c.maxWait >= c.txnTimeout:
		return bad("MaxWait", c.maxWait, "must be well below the transaction timeout %v", c.txnTimeout)
	}
	return c.checkClientOpts()
}

// checkClientOpts refuses the user's client options that would weaken the
// guarantee or fight the pipeline's own settings. It reads them back from a
// client that is built and closed without connecting.
func (c *config) checkClientOpts() error {
	// Sentinels go first so that a value still equal to them afterwards
	// was not set by the user.
	const unsetSeed = "exactly-unset-seed:1"
	probe := append([]kgo.Opt{
		kgo.SeedBrokers(unsetSeed),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}, c.clientOpts...)
	refuse := func(name, why string) error {
		return &sinks.ConfigError{Option: "pipeline.ClientOpts", Value: name, Reason: why}
	}
	cl, err := kgo.NewClient(probe...)
	if err != nil {
		// kgo itself refuses acks other than all with idempotence;
		// say why it matters here rather than pass its terse error on.
		if cl2, err2 := kgo.NewClient(append(probe, kgo.DisableIdempotentWrite())...); err2 == nil {
			acks, _ := cl2.OptValue(kgo.RequiredAcks).(kgo.Acks)
			cl2.Close()
			if acks != kgo.AllISRAcks() {
				return refuse("kgo.RequiredAcks", errAcks)
			}
		}
		return &sinks.ConfigError{Option: "pipeline.ClientOpts", Value: "(kgo options)", Reason: err.Error()}
	}
	defer cl.Close()
	if v, _ := cl.OptValue(kgo.FetchIsolationLevel).(int8); v != 1 {
		return refuse("kgo.FetchIsolationLevel", "read_uncommitted would show the outputs of aborted transactions; the pipeline always reads committed")
	}
	if v, ok := cl.OptValue(kgo.DisableIdempotentWrite).(bool); ok && v {
		return refuse("kgo.DisableIdempotentWrite", "idempotent, transactional writes are how exactly-once is kept; a non-idempotent producer duplicates on retry")
	}
	if v, ok := cl.OptValue(kgo.RequiredAcks).(kgo.Acks); ok && v != kgo.AllISRAcks() {
		return refuse("kgo.RequiredAcks", errAcks)
	}
	if v, ok := cl.OptValue(kgo.ConsumerGroup).(string); ok && v != "" {
		return refuse("kgo.ConsumerGroup", "set the group with pipeline.Group")
	}
	if v, ok := cl.OptValue(kgo.ConsumeTopics).([]string); ok && len(v) > 0 {
		return refuse("kgo.ConsumeTopics", "set the topics with pipeline.Topics")
	}
	if vs := cl.OptValues(kgo.TransactionalID); len(vs) == 2 && vs[1] == true {
		return refuse("kgo.TransactionalID", "the transactional id is derived from pipeline.InstanceID")
	}
	if vs := cl.OptValues(kgo.InstanceID); len(vs) == 2 && vs[1] == true {
		return refuse("kgo.InstanceID", "the group instance id is pipeline.InstanceID (see pipeline.StaticMembership)")
	}
	if v, ok := cl.OptValue(kgo.AllowAutoTopicCreation).(bool); ok && v {
		return refuse("kgo.AllowAutoTopicCreation", "exactly never creates topics: a metadata request or produce would create a misspelt topic with the broker defaults (easily one replica); create them with kafka-topics.sh")
	}
	if v, ok := cl.OptValue(kgo.BlockRebalanceOnPoll).(bool); ok && v {
		return refuse("kgo.BlockRebalanceOnPoll", "the pipeline aborts on revoke instead of blocking rebalances")
	}
	if v, ok := cl.OptValue(kgo.WithContext).(context.Context); ok && v != nil {
		return refuse("kgo.WithContext", "the sessions' clients run on contexts of their own, so that closing one can interrupt a group join (txn.CloseClient); stop the pipeline by cancelling Run's context")
	}
	if len(c.brokers) == 0 {
		if v, _ := cl.OptValue(kgo.SeedBrokers).([]string); len(v) == 1 && v[0] == unsetSeed {
			return &sinks.ConfigError{Option: "pipeline.Brokers", Value: "[]", Reason: "no seed brokers: use pipeline.Brokers, or kgo.SeedBrokers in ClientOpts"}
		}
	}
	return nil
}

// consumerOpts are the options that make a client the pipeline's consumer.
func (c *config) consumerOpts() []kgo.Opt {
	reset := kgo.NewOffset().AtStart()
	if c.resetSet {
		reset = c.resetOffset
	}
	opts := []kgo.Opt{
		kgo.ConsumerGroup(c.group),
		kgo.ConsumeTopics(c.topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(reset),
		kgo.SessionTimeout(c.sessTimeout),
		kgo.HeartbeatInterval(c.heartbeat),
		kgo.TransactionTimeout(c.txnTimeout),
		kgo.FetchMaxWait(c.maxWait),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	}
	if c.static {
		opts = append(opts, kgo.InstanceID(c.instanceID))
	}
	return opts
}

// connOpts are the connection options.
func (c *config) connOpts() []kgo.Opt {
	// First, so that the user's ClientOpts override it.
	opts := txn.DefaultClientOpts()
	opts = append(opts, c.clientOpts...)
	if len(c.brokers) > 0 {
		opts = append(opts, kgo.SeedBrokers(c.brokers...))
	}
	// Transaction timeout applies to the fencing client too.
	return append(opts, kgo.TransactionTimeout(c.txnTimeout))
}
