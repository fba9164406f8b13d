package otelhooks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactlyonce/exactly/internal/observe"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/pipeline/doctor"
)

// ScopeName is the instrumentation scope of the meter and the tracer.
const ScopeName = "github.com/exactlyonce/exactly/pipeline/otelhooks"

// The attribute keys. Group, topic and partition are OpenTelemetry's
// messaging semantic conventions.
const (
	KeyGroup      = attribute.Key("messaging.consumer.group.name")
	KeyTopic      = attribute.Key("messaging.destination.name")
	KeyPartition  = attribute.Key("messaging.destination.partition.id")
	KeySystem     = attribute.Key("messaging.system")
	KeyInstance   = attribute.Key("exactly.instance_id")
	KeyReason     = attribute.Key("exactly.abort.reason")
	KeyState      = attribute.Key("exactly.state")
	KeyOutcome    = attribute.Key("exactly.outcome") // committed or aborted
	KeyRecords    = attribute.Key("exactly.records")
	KeyBytes      = attribute.Key("exactly.bytes")
	KeyPartitions = attribute.Key("exactly.partitions")
	KeyOutputs    = attribute.Key("exactly.outputs")
)

// The span names.
const (
	SpanBatch  = "exactly.batch"
	SpanPoll   = "exactly.poll"
	SpanStage  = "exactly.stage"
	SpanCommit = "exactly.commit"
)

// DefaultDurationBuckets are the bucket boundaries of the duration
// histograms, in seconds: a millisecond to a minute.
var DefaultDurationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// DefaultRecordBuckets are the boundaries of the records-per-batch histogram.
var DefaultRecordBuckets = []float64{1, 10, 50, 100, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000}

// DefaultByteBuckets are the boundaries of the bytes-per-batch histogram: 1
// KiB to 256 MiB by factors of four.
var DefaultByteBuckets = []float64{1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24, 1 << 26, 1 << 28}

// Opt configures New.
type Opt interface{ apply(*cfg) }

type opt func(*cfg)

func (o opt) apply(c *cfg) { o(c) }

type cfg struct {
	mp        metric.MeterProvider
	tp        trace.TracerProvider
	durations []float64
	lag       *observe.LagConfig
}

// MeterProvider exports the metrics through mp.
func MeterProvider(mp metric.MeterProvider) Opt { return opt(func(c *cfg) { c.mp = mp }) }

// TracerProvider records a span per transaction through tp: "exactly.batch"
// with children "exactly.poll", "exactly.stage" and "exactly.commit".
func TracerProvider(tp trace.TracerProvider) Opt { return opt(func(c *cfg) { c.tp = tp }) }

// DurationBuckets sets the boundaries, in seconds, of the duration
// histograms. Default DefaultDurationBuckets.
func DurationBuckets(b ...float64) Opt { return opt(func(c *cfg) { c.durations = b }) }

// LagOptions tunes the lag gauges (see Lag).
type LagOptions struct {
	// Topics to report. Empty: the topics commits were seen on.
	Topics []string
	// Committed, if set, reads a group's committed offsets (for example
	// doctor.KafkaCommitted), and every partition of the topics is
	// reported. Unset: the next offsets the pipelines' commits reported
	// (CommitInfo.Offsets), and only the partitions a commit was seen of.
	Committed func(ctx context.Context, group string) (doctor.Committed, error)
	// Timeout bounds one sample. Default 5s.
	Timeout time.Duration
	// MaxAge is how long a sample is reused by the next collections.
	// Default 5s.
	MaxAge time.Duration
}

// Lag adds the per-partition lag gauges, computed with doctor.Lag when
// the reader collects (at most every MaxAge), bounded by Timeout and by
// the collection's context; the pipeline never waits for it.
func Lag(adm *kadm.Client, o LagOptions) Opt {
	return opt(func(c *cfg) {
		c.lag = &observe.LagConfig{Admin: adm, Topics: o.Topics, Committed: o.Committed, Timeout: o.Timeout, MaxAge: o.MaxAge}
	})
}

// Telemetry is the OpenTelemetry adapter: the pipeline metrics on one
// MeterProvider and the batch spans on one TracerProvider. Get a hook per
// pipeline with Hook; one Telemetry serves any number of pipelines.
type Telemetry struct {
	tracer trace.Tracer // nil without a TracerProvider
	on     bool         // metrics enabled

	polled, committed, outputs, batches, stageErrors metric.Int64Counter
	aborted, abortedRecords, lagErrors               metric.Int64Counter
	commitDur, batchDur, stageDur, pollDur           metric.Float64Histogram
	batchRecords, batchBytes                         metric.Int64Histogram
	lastCommit, stateSince                           metric.Float64ObservableGauge
	state, lag, open, offset                         metric.Int64ObservableGauge

	lagSampler *observe.LagSampler
	regs       []metric.Registration

	mu    sync.Mutex
	hooks []*Hook
}

// New creates the instruments on the MeterProvider and registers the
// callbacks of the observable gauges (undo it with Close). It fails without
// a MeterProvider or TracerProvider, and for Lag without an admin client.
func New(opts ...Opt) (*Telemetry, error) {
	c := cfg{durations: DefaultDurationBuckets}
	for _, o := range opts {
		o.apply(&c)
	}
	if c.mp == nil && c.tp == nil {
		return nil, errors.New("otelhooks: neither a MeterProvider nor a TracerProvider: pass otelhooks.MeterProvider(mp) and/or otelhooks.TracerProvider(tp)")
	}
	t := &Telemetry{}
	if c.tp != nil {
		t.tracer = c.tp.Tracer(ScopeName)
	}
	if c.lag != nil {
		if c.mp == nil {
			return nil, errors.New("otelhooks.Lag: the lag gauges need a MeterProvider")
		}
		s, err := observe.NewLagSampler(*c.lag)
		if err != nil {
			return nil, fmt.Errorf("otelhooks.Lag: %w", err)
		}
		t.lagSampler = s
	}
	if c.mp == nil {
		return t, nil
	}
	t.on = true
	if err := t.instruments(c.mp.Meter(ScopeName), c); err != nil {
		return nil, fmt.Errorf("otelhooks: creating the instruments: %w", err)
	}
	return t, nil
}

func (t *Telemetry) instruments(m metric.Meter, c cfg) error {
	var errs []error
	counter := func(name, unit, desc string) metric.Int64Counter {
		x, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return x
	}
	seconds := func(name, desc string) metric.Float64Histogram {
		x, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(c.durations...))
		errs = append(errs, err)
		return x
	}
	sizes := func(name, unit, desc string, b []float64) metric.Int64Histogram {
		x, err := m.Int64Histogram(name, metric.WithUnit(unit), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(b...))
		errs = append(errs, err)
		return x
	}
	t.polled = counter("exactly.records.polled", "{record}", "Input records collected into batches (polled), committed or not.")
	t.committed = counter("exactly.records.committed", "{record}", "Input records whose transaction committed.")
	t.outputs = counter("exactly.records.produced", "{record}", "Records the Stage produced in committed transactions (Kafka mode).")
	t.abortedRecords = counter("exactly.records.aborted", "{record}", "Input records of transactions that did not commit, by reason.")
	t.batches = counter("exactly.batches.committed", "{transaction}", "Transactions committed.")
	t.aborted = counter("exactly.batches.aborted", "{transaction}", "Transactions that did not commit, by reason.")
	t.stageErrors = counter("exactly.stage.errors", "{transaction}", "Transactions aborted because the Stage returned an error or panicked.")
	t.commitDur = seconds("exactly.commit.duration", "Time of the commit alone, per committed transaction.")
	t.stageDur = seconds("exactly.stage.duration", "Time of the Stage calls of a committed transaction, first start to last end.")
	t.batchDur = seconds("exactly.batch.duration", "Time from a batch's first poll to the end of its commit.")
	t.pollDur = seconds("exactly.poll.duration", "Time from a batch's first poll to the batch being complete.")
	t.batchRecords = sizes("exactly.batch.records", "{record}", "Input records per committed transaction.", DefaultRecordBuckets)
	t.batchBytes = sizes("exactly.batch.bytes", "By", "Bytes (keys and values) of the input records per committed transaction.", DefaultByteBuckets)
	var err error
	t.lastCommit, err = m.Float64ObservableGauge("exactly.last_commit.time", metric.WithUnit("s"),
		metric.WithDescription("Unix time of the last committed transaction."))
	errs = append(errs, err)
	t.stateSince, err = m.Float64ObservableGauge("exactly.state.since", metric.WithUnit("s"),
		metric.WithDescription("Unix time the pipeline entered its current state."))
	errs = append(errs, err)
	t.state, err = m.Int64ObservableGauge("exactly.state", metric.WithUnit("1"),
		metric.WithDescription("1 for the pipeline's current state, 0 for the others."))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	reg, err := m.RegisterCallback(t.observeHooks, t.lastCommit, t.stateSince, t.state)
	if err != nil {
		return err
	}
	t.regs = append(t.regs, reg)
	if t.lagSampler == nil {
		return nil
	}
	t.lag, err = m.Int64ObservableGauge("exactly.partition.lag", metric.WithUnit("{record}"),
		metric.WithDescription("Records of the partition past the committed offset (high watermark minus committed offset)."))
	errs = append(errs, err)
	t.open, err = m.Int64ObservableGauge("exactly.partition.open_records", metric.WithUnit("{record}"),
		metric.WithDescription("Records of the partition in transactions still open (high watermark minus last stable offset)."))
	errs = append(errs, err)
	t.offset, err = m.Int64ObservableGauge("exactly.partition.committed_offset", metric.WithUnit("1"),
		metric.WithDescription("The committed (next) offset of the partition the lag is computed against."))
	errs = append(errs, err)
	t.lagErrors = counter("exactly.lag.sample_errors", "{sample}", "Lag samples that failed or timed out.")
	if err := errors.Join(errs...); err != nil {
		return err
	}
	reg, err = m.RegisterCallback(t.observeLag, t.lag, t.open, t.offset)
	if err != nil {
		return err
	}
	t.regs = append(t.regs, reg)
	return nil
}

// Close unregisters the observable gauges' callbacks. The hooks keep
// working; their gauges are no longer reported.
func (t *Telemetry) Close() error {
	var errs []error
	for _, r := range t.regs {
		errs = append(errs, r.Unregister())
	}
	t.regs = nil
	return errors.Join(errs...)
}

func (t *Telemetry) observeHooks(_ context.Context, o metric.Observer) error {
	t.mu.Lock()
	hooks := append([]*Hook(nil), t.hooks...)
	t.mu.Unlock()
	for _, h := range hooks {
		if at := h.lastCommit.Load(); at != 0 {
			o.ObserveFloat64(t.lastCommit, float64(at)/1e9, h.who)
		}
		if at := h.since.Load(); at != 0 {
			o.ObserveFloat64(t.stateSince, float64(at)/1e9, h.who)
		}
		cur := pipeline.State(h.state.Load())
		for _, s := range observe.States {
			v := int64(0)
			if s == cur {
				v = 1
			}
			o.ObserveInt64(t.state, v, h.states[s])
		}
	}
	return nil
}

func (t *Telemetry) observeLag(ctx context.Context, o metric.Observer) error {
	s := t.lagSampler.Sample(ctx)
	if s.Err != nil {
		t.lagErrors.Add(ctx, 1)
	}
	for g, rep := range s.Groups {
		for _, p := range rep.Partitions {
			if p.Err != "" {
				continue
			}
			at := metric.WithAttributes(KeyGroup.String(g), KeyTopic.String(p.Topic), KeyPartition.String(strconv.Itoa(int(p.Partition))))
			o.ObserveInt64(t.lag, p.Lag, at)
			o.ObserveInt64(t.open, p.Open, at)
			o.ObserveInt64(t.offset, p.Committed, at)
		}
	}
	return nil // a failed sample is counted, not failed: the other gauges still report
}

// Hook returns the hook of one pipeline, to pass with pipeline.Hooks. Its
// measurements carry group and instanceID as messaging.consumer.group.name
// and exactly.instance_id. The counters of every abort reason start at 0.
func (t *Telemetry) Hook(group, instanceID string) *Hook {
	base := []attribute.KeyValue{KeyGroup.String(group), KeyInstance.String(instanceID)}
	h := &Hook{t: t, group: group, base: base,
		who:     metric.WithAttributeSet(attribute.NewSet(base...)),
		reasons: map[pipeline.AbortReason]metric.MeasurementOption{},
		states:  map[pipeline.State]metric.ObserveOption{}}
	for _, s := range observe.States {
		h.states[s] = metric.WithAttributeSet(attribute.NewSet(append(base[:2:2], KeyState.String(s.String()))...))
	}
	for _, r := range observe.AbortReasons {
		h.reasons[r] = h.reasonOpt(r)
	}
	if t.on {
		ctx := context.Background()
		for _, c := range []metric.Int64Counter{t.polled, t.committed, t.outputs, t.batches, t.stageErrors} {
			c.Add(ctx, 0, h.who)
		}
		for _, r := range observe.AbortReasons {
			t.aborted.Add(ctx, 0, h.reasons[r])
			t.abortedRecords.Add(ctx, 0, h.reasons[r])
		}
		t.mu.Lock()
		t.hooks = append(t.hooks, h)
		t.mu.Unlock()
	}
	if t.lagSampler != nil {
		t.lagSampler.Known(group)
	}
	return h
}

// Hook is one pipeline's hook: it implements pipeline.HookPolled,
// HookBatchCommitted, HookBatchAborted and HookStateChanged. Pass it to
// one pipeline only.
type Hook struct {
	t       *Telemetry
	group   string
	base    []attribute.KeyValue
	who     metric.MeasurementOption
	reasons map[pipeline.AbortReason]metric.MeasurementOption
	states  map[pipeline.State]metric.ObserveOption

	state      atomic.Int32
	since      atomic.Int64 // unix ns
	lastCommit atomic.Int64 // unix ns

	mu       sync.Mutex
	lastPoll time.Duration // the poll of the batch in flight, for its span
}

var (
	_ pipeline.HookPolled         = (*Hook)(nil)
	_ pipeline.HookBatchCommitted = (*Hook)(nil)
	_ pipeline.HookBatchAborted   = (*Hook)(nil)
	_ pipeline.HookStateChanged   = (*Hook)(nil)
)

func (h *Hook) reasonOpt(r pipeline.AbortReason) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(append(h.base[:2:2], KeyReason.String(string(r)))...))
}

// OnPolled counts the records collected into a batch.
func (h *Hook) OnPolled(pi pipeline.PollInfo) {
	h.mu.Lock()
	h.lastPoll = pi.Took
	h.mu.Unlock()
	if !h.t.on {
		return
	}
	ctx := context.Background()
	h.t.polled.Add(ctx, int64(pi.Records), h.who)
	h.t.pollDur.Record(ctx, pi.Took.Seconds(), h.who)
}

// takePoll returns the poll time of the batch that just ended.
func (h *Hook) takePoll() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.lastPoll
	h.lastPoll = 0
	return d
}

// OnBatchCommitted records a committed transaction, and its span.
func (h *Hook) OnBatchCommitted(ci pipeline.CommitInfo) {
	poll := h.takePoll()
	h.lastCommit.Store(time.Now().UnixNano())
	if h.t.on {
		ctx := context.Background()
		h.t.committed.Add(ctx, int64(ci.Records), h.who)
		h.t.outputs.Add(ctx, int64(ci.Outputs), h.who)
		h.t.batches.Add(ctx, 1, h.who)
		h.t.commitDur.Record(ctx, ci.Commit.Seconds(), h.who)
		h.t.batchDur.Record(ctx, ci.Took.Seconds(), h.who)
		h.t.stageDur.Record(ctx, ci.Stage.Seconds(), h.who)
		h.t.batchRecords.Record(ctx, int64(ci.Records), h.who)
		h.t.batchBytes.Record(ctx, int64(ci.Bytes), h.who)
	}
	if h.t.lagSampler != nil && len(ci.Offsets) > 0 {
		h.t.lagSampler.Observe(h.group, ci.Offsets)
	}
	if h.t.tracer == nil {
		return
	}
	// The spans are reconstructed from the timings: the commit ends the
	// batch, the Stage ends where the commit starts.
	end := ci.Start.Add(ci.Took)
	commitStart := end.Add(-ci.Commit)
	stageStart := commitStart.Add(-ci.Stage)
	if stageStart.Before(ci.Start) {
		stageStart = ci.Start
	}
	ctx, span := h.t.tracer.Start(context.Background(), SpanBatch, trace.WithTimestamp(ci.Start),
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(append(h.base,
			KeySystem.String("kafka"), KeyOutcome.String("committed"),
			KeyRecords.Int(ci.Records), KeyBytes.Int(ci.Bytes), KeyPartitions.Int(ci.Partitions), KeyOutputs.Int(ci.Outputs))...))
	h.pollSpan(ctx, ci.Start, poll)
	_, stage := h.t.tracer.Start(ctx, SpanStage, trace.WithTimestamp(stageStart))
	stage.End(trace.WithTimestamp(commitStart))
	_, commit := h.t.tracer.Start(ctx, SpanCommit, trace.WithTimestamp(commitStart))
	commit.End(trace.WithTimestamp(end))
	span.SetStatus(codes.Ok, "")
	span.End(trace.WithTimestamp(end))
}

func (h *Hook) pollSpan(ctx context.Context, start time.Time, took time.Duration) {
	if took <= 0 {
		return
	}
	_, s := h.t.tracer.Start(ctx, SpanPoll, trace.WithTimestamp(start))
	s.End(trace.WithTimestamp(start.Add(took)))
}

// OnBatchAborted counts a transaction that did not commit, by reason, and
// records its span with an error status.
func (h *Hook) OnBatchAborted(ai pipeline.AbortInfo) {
	poll := h.takePoll()
	if h.t.on {
		ctx := context.Background()
		r, ok := h.reasons[ai.Reason]
		if !ok {
			r = h.reasonOpt(ai.Reason)
		}
		h.t.aborted.Add(ctx, 1, r)
		h.t.abortedRecords.Add(ctx, int64(ai.Records), r)
		if ai.Reason == pipeline.AbortStageError {
			h.t.stageErrors.Add(ctx, 1, h.who)
		}
	}
	if h.t.tracer == nil {
		return
	}
	end := ai.Start.Add(ai.Took)
	ctx, span := h.t.tracer.Start(context.Background(), SpanBatch, trace.WithTimestamp(ai.Start),
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(append(h.base,
			KeySystem.String("kafka"), KeyOutcome.String("aborted"), KeyReason.String(string(ai.Reason)),
			KeyRecords.Int(ai.Records), KeyPartitions.Int(ai.Partitions))...))
	h.pollSpan(ctx, ai.Start, poll)
	msg := "aborted: " + string(ai.Reason)
	if ai.Err != nil {
		span.RecordError(ai.Err, trace.WithTimestamp(end))
		msg += ": " + ai.Err.Error()
	}
	span.SetStatus(codes.Error, msg)
	span.End(trace.WithTimestamp(end))
}

// OnStateChanged records the state for the state gauges.
func (h *Hook) OnStateChanged(si pipeline.StateInfo) {
	h.state.Store(int32(si.State))
	h.since.Store(si.Since.UnixNano())
}
