package promhooks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/exactlyonce/exactly/internal/observe"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/pipeline/doctor"
)

// DefaultDurationBuckets are the buckets of the duration histograms, in
// seconds: from a millisecond (a small commit on a local broker) to a
// minute (the default transaction timeout).
var DefaultDurationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// DefaultRecordBuckets are the buckets of the batch size histogram, in
// records: 1 to 100,000 (MaxRecords' default is 10,000).
var DefaultRecordBuckets = []float64{1, 10, 50, 100, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000}

// DefaultByteBuckets are the buckets of the batch bytes histogram: 1 KiB to
// 256 MiB, by factors of four.
var DefaultByteBuckets = prometheus.ExponentialBuckets(1024, 4, 10)

// Opt configures New.
type Opt interface{ apply(*cfg) }

type opt func(*cfg)

func (o opt) apply(c *cfg) { o(c) }

type cfg struct {
	namespace string
	durations []float64
	records   []float64
	bytes     []float64
	lag       *observe.LagConfig
}

// Namespace is the prefix of every metric name. Default "exactly".
func Namespace(ns string) Opt { return opt(func(c *cfg) { c.namespace = ns }) }

// DurationBuckets sets the buckets, in seconds, of the duration histograms
// (commit, stage, batch, poll). Default DefaultDurationBuckets.
func DurationBuckets(b ...float64) Opt { return opt(func(c *cfg) { c.durations = b }) }

// RecordBuckets sets the buckets of the records-per-batch histogram.
// Default DefaultRecordBuckets.
func RecordBuckets(b ...float64) Opt { return opt(func(c *cfg) { c.records = b }) }

// ByteBuckets sets the buckets of the bytes-per-batch histogram. Default
// DefaultByteBuckets.
func ByteBuckets(b ...float64) Opt { return opt(func(c *cfg) { c.bytes = b }) }

// LagOptions tunes the lag collector (see Lag).
type LagOptions struct {
	// Topics to report. Empty: the topics commits were seen on.
	Topics []string
	// Committed, if set, reads a group's committed offsets (for example
	// doctor.KafkaCommitted, or a query of the Postgres offsets table),
	// and every partition of the topics is reported. Unset: the next
	// offsets the pipelines' commits reported (CommitInfo.Offsets), with
	// no request for them, and only the partitions a commit was seen of.
	Committed func(ctx context.Context, group string) (doctor.Committed, error)
	// Timeout bounds one sample (three offset listings). Default 5s. A
	// scrape that runs out of it reports no lag and counts an error.
	Timeout time.Duration
	// MaxAge is how long a sample is reused by the next scrapes. Default 5s.
	MaxAge time.Duration
}

// Lag adds the per-partition lag gauges: on a scrape (at most every
// MaxAge), adm lists the partitions' start, end and last stable offsets
// (doctor.Lag) and the lag is computed against the committed offsets. The
// sample runs on the scrape's goroutine, bounded by Timeout; the pipeline
// never waits for it.
//
// Without Committed, each process reports the partitions its own
// instances committed: with several processes, take the smallest value per
// partition (min by (group, topic, partition)), since an instance that
// lost a partition keeps reporting its last position.
func Lag(adm *kadm.Client, o LagOptions) Opt {
	return opt(func(c *cfg) {
		c.lag = &observe.LagConfig{Admin: adm, Topics: o.Topics, Committed: o.Committed, Timeout: o.Timeout, MaxAge: o.MaxAge}
	})
}

// Metrics holds the pipeline metrics registered on one Registerer. Get a
// hook per pipeline with Hook; one Metrics serves any number of pipelines.
type Metrics struct {
	reg prometheus.Registerer

	polled, committed, outputs, batches, stageErrors *prometheus.CounterVec
	aborted, abortedRecords                          *prometheus.CounterVec
	commitDur, batchDur, stageDur, pollDur           *prometheus.HistogramVec
	batchRecords, batchBytes                         *prometheus.HistogramVec
	lastCommit, state, stateSince                    *prometheus.GaugeVec

	lag *observe.LagSampler
}

// The label names.
const (
	LabelGroup     = "group"
	LabelInstance  = "instance_id"
	LabelReason    = "reason"
	LabelState     = "state"
	LabelTopic     = "topic"
	LabelPartition = "partition"
)

// New creates the metrics and registers them on reg. It fails if reg is
// nil, if a metric of the same name is already registered, or if Lag was
// given no admin client.
func New(reg prometheus.Registerer, opts ...Opt) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("promhooks: no Registerer: pass prometheus.DefaultRegisterer or a prometheus.NewRegistry()")
	}
	c := cfg{namespace: "exactly", durations: DefaultDurationBuckets, records: DefaultRecordBuckets, bytes: DefaultByteBuckets}
	for _, o := range opts {
		o.apply(&c)
	}
	m := &Metrics{reg: reg}
	if c.lag != nil {
		s, err := observe.NewLagSampler(*c.lag)
		if err != nil {
			return nil, fmt.Errorf("promhooks.Lag: %w", err)
		}
		m.lag = s
	}
	who := []string{LabelGroup, LabelInstance}
	counter := func(name, help string, extra ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: c.namespace, Name: name, Help: help}, append(who[:2:2], extra...))
	}
	hist := func(name, help string, buckets []float64) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: c.namespace, Name: name, Help: help, Buckets: buckets}, who)
	}
	gauge := func(name, help string, extra ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: c.namespace, Name: name, Help: help}, append(who[:2:2], extra...))
	}
	m.polled = counter("records_polled_total", "Input records collected into batches (polled), committed or not.")
	m.committed = counter("records_committed_total", "Input records whose transaction committed.")
	m.outputs = counter("records_produced_total", "Records the Stage produced in committed transactions (Kafka mode).")
	m.batches = counter("batches_committed_total", "Transactions committed.")
	m.stageErrors = counter("stage_errors_total", "Transactions aborted because the Stage returned an error or panicked.")
	m.aborted = counter("batches_aborted_total", "Transactions that did not commit, by reason.", LabelReason)
	m.abortedRecords = counter("records_aborted_total", "Input records of transactions that did not commit (polled again), by reason.", LabelReason)
	m.commitDur = hist("commit_duration_seconds", "Time of the commit alone, per committed transaction.", c.durations)
	m.batchDur = hist("batch_duration_seconds", "Time from a batch's first poll to the end of its commit.", c.durations)
	m.stageDur = hist("stage_duration_seconds", "Time of the Stage calls of a committed transaction, first start to last end.", c.durations)
	m.pollDur = hist("poll_duration_seconds", "Time from a batch's first poll to the batch being complete.", c.durations)
	m.batchRecords = hist("batch_records", "Input records per committed transaction.", c.records)
	m.batchBytes = hist("batch_bytes", "Bytes (keys and values) of the input records per committed transaction.", c.bytes)
	m.lastCommit = gauge("last_commit_timestamp_seconds", "Unix time of the last committed transaction.")
	m.state = gauge("state", "1 for the pipeline's current state, 0 for the others.", LabelState)
	m.stateSince = gauge("state_since_timestamp_seconds", "Unix time the pipeline entered its current state.")

	cs := []prometheus.Collector{m.polled, m.committed, m.outputs, m.batches, m.stageErrors, m.aborted, m.abortedRecords,
		m.commitDur, m.batchDur, m.stageDur, m.pollDur, m.batchRecords, m.batchBytes, m.lastCommit, m.state, m.stateSince}
	if m.lag != nil {
		cs = append(cs, newLagCollector(c.namespace, m.lag))
	}
	for i, col := range cs {
		if err := reg.Register(col); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("promhooks: registering the metrics: %w", err)
		}
	}
	return m, nil
}

// Hook returns the hook of one pipeline, to pass with pipeline.Hooks: its
// series carry group and instanceID as the labels "group" and
// "instance_id". Every series the hook can move exists from now on, at 0
// (and state "idle" at 1), so rates and alerts work before the first event.
func (m *Metrics) Hook(group, instanceID string) *Hook {
	h := &Hook{m: m, group: group, aborted: map[pipeline.AbortReason]prometheus.Counter{},
		abortedRecords: map[pipeline.AbortReason]prometheus.Counter{}, state: map[pipeline.State]prometheus.Gauge{}}
	l := prometheus.Labels{LabelGroup: group, LabelInstance: instanceID}
	h.polled = m.polled.With(l)
	h.committed = m.committed.With(l)
	h.outputs = m.outputs.With(l)
	h.batches = m.batches.With(l)
	h.stageErrors = m.stageErrors.With(l)
	h.commitDur = m.commitDur.With(l)
	h.batchDur = m.batchDur.With(l)
	h.stageDur = m.stageDur.With(l)
	h.pollDur = m.pollDur.With(l)
	h.batchRecords = m.batchRecords.With(l)
	h.batchBytes = m.batchBytes.With(l)
	h.lastCommit = m.lastCommit.With(l)
	h.stateSince = m.stateSince.With(l)
	for _, r := range observe.AbortReasons {
		h.aborted[r] = m.aborted.WithLabelValues(group, instanceID, string(r))
		h.abortedRecords[r] = m.abortedRecords.WithLabelValues(group, instanceID, string(r))
	}
	h.instance = instanceID
	for _, s := range observe.States {
		h.state[s] = m.state.WithLabelValues(group, instanceID, s.String())
	}
	h.state[pipeline.StateIdle].Set(1)
	if m.lag != nil {
		m.lag.Known(group)
	}
	return h
}

// Hook is one pipeline's hook: it implements pipeline.HookPolled,
// HookBatchCommitted, HookBatchAborted and HookStateChanged. Each call
// updates a few in-memory series and returns.
type Hook struct {
	m               *Metrics
	group, instance string

	polled, committed, outputs, batches, stageErrors prometheus.Counter
	commitDur, batchDur, stageDur, pollDur           prometheus.Observer
	batchRecords, batchBytes                         prometheus.Observer
	lastCommit, stateSince                           prometheus.Gauge
	aborted, abortedRecords                          map[pipeline.AbortReason]prometheus.Counter
	state                                            map[pipeline.State]prometheus.Gauge
}

var (
	_ pipeline.HookPolled         = (*Hook)(nil)
	_ pipeline.HookBatchCommitted = (*Hook)(nil)
	_ pipeline.HookBatchAborted   = (*Hook)(nil)
	_ pipeline.HookStateChanged   = (*Hook)(nil)
)

// OnPolled counts the records collected into a batch.
func (h *Hook) OnPolled(pi pipeline.PollInfo) {
	h.polled.Add(float64(pi.Records))
	h.pollDur.Observe(pi.Took.Seconds())
}

// OnBatchCommitted counts a committed transaction and records its timings,
// and the committed offsets for the lag collector.
func (h *Hook) OnBatchCommitted(ci pipeline.CommitInfo) {
	h.committed.Add(float64(ci.Records))
	h.outputs.Add(float64(ci.Outputs))
	h.batches.Inc()
	h.commitDur.Observe(ci.Commit.Seconds())
	h.batchDur.Observe(ci.Took.Seconds())
	h.stageDur.Observe(ci.Stage.Seconds())
	h.batchRecords.Observe(float64(ci.Records))
	h.batchBytes.Observe(float64(ci.Bytes))
	h.lastCommit.Set(float64(time.Now().UnixNano()) / 1e9)
	if h.m.lag != nil && len(ci.Offsets) > 0 {
		h.m.lag.Observe(h.group, ci.Offsets)
	}
}

// OnBatchAborted counts a transaction that did not commit, by reason.
func (h *Hook) OnBatchAborted(ai pipeline.AbortInfo) {
	c, ok := h.aborted[ai.Reason]
	if !ok { // a reason added to the pipeline after this adapter was written
		c = h.m.aborted.WithLabelValues(h.group, h.instance, string(ai.Reason))
	}
	c.Inc()
	rc, ok := h.abortedRecords[ai.Reason]
	if !ok {
		rc = h.m.abortedRecords.WithLabelValues(h.group, h.instance, string(ai.Reason))
	}
	rc.Add(float64(ai.Records))
	if ai.Reason == pipeline.AbortStageError {
		h.stageErrors.Inc()
	}
}

// OnStateChanged sets the state gauges.
func (h *Hook) OnStateChanged(si pipeline.StateInfo) {
	for s, g := range h.state {
		if s == si.State {
			g.Set(1)
		} else {
			g.Set(0)
		}
	}
	h.stateSince.Set(float64(si.Since.UnixNano()) / 1e9)
}

// lagCollector reports the lag sampler's partitions on a scrape.
type lagCollector struct {
	s                 *observe.LagSampler
	lag, open, offset *prometheus.Desc
	errs              prometheus.Counter
}

func newLagCollector(ns string, s *observe.LagSampler) *lagCollector {
	labels := []string{LabelGroup, LabelTopic, LabelPartition}
	return &lagCollector{
		s:      s,
		lag:    prometheus.NewDesc(ns+"_partition_lag", "Records of the partition past the committed offset (high watermark minus committed offset).", labels, nil),
		open:   prometheus.NewDesc(ns+"_partition_open_records", "Records of the partition in transactions still open (high watermark minus last stable offset).", labels, nil),
		offset: prometheus.NewDesc(ns+"_partition_committed_offset", "The committed (next) offset of the partition the lag is computed against.", labels, nil),
		errs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "lag_sample_errors_total",
			Help: "Lag samples that failed or timed out (the lag gauges are then absent or from the previous sample)."}),
	}
}

// Describe implements prometheus.Collector.
func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lag
	ch <- c.open
	ch <- c.offset
	c.errs.Describe(ch)
}

// Collect implements prometheus.Collector: it takes (or reuses) a sample,
// bounded by the sampler's timeout.
func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s.Sample(context.Background())
	if s.Err != nil {
		c.errs.Inc()
	}
	for g, rep := range s.Groups {
		for _, p := range rep.Partitions {
			if p.Err != "" {
				continue
			}
			part := strconv.Itoa(int(p.Partition))
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(p.Lag), g, p.Topic, part)
			ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(p.Open), g, p.Topic, part)
			ch <- prometheus.MustNewConstMetric(c.offset, prometheus.GaugeValue, float64(p.Committed), g, p.Topic, part)
		}
	}
	c.errs.Collect(ch)
}
