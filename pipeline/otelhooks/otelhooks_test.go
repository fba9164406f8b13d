package otelhooks_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/pipeline/otelhooks"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type kw = *kafkasink.Writer

func failOnce(out string) pipeline.Stage[kw] {
	var calls atomic.Int64
	return pipeline.StageFunc[kw](func(ctx context.Context, b *sinks.Batch, w kw) error {
		if calls.Add(1) == 1 {
			return errors.New("injected")
		}
		for _, r := range b.Records {
			w.Produce(testkit.CopyRecord(out, r))
		}
		return nil
	})
}

// collected is one collection of a ManualReader.
type collected map[string]metricdata.Aggregation

func collect(t *testing.T, r *sdkmetric.ManualReader) collected {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	out := collected{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

func has(set attribute.Set, kv []attribute.KeyValue) bool {
	for _, want := range kv {
		v, ok := set.Value(want.Key)
		if !ok || v.Emit() != want.Value.Emit() {
			return false
		}
	}
	return true
}

// value sums the data points of name whose attributes include kv: a sum's
// or gauge's value, a histogram's count; -1 when there is none.
func (c collected) value(name string, kv ...attribute.KeyValue) float64 {
	v, found := 0.0, false
	switch d := c[name].(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, kv) {
				v, found = v+float64(p.Value), true
			}
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, kv) {
				v, found = v+float64(p.Value), true
			}
		}
	case metricdata.Gauge[float64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, kv) {
				v, found = v+p.Value, true
			}
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, kv) {
				v, found = v+float64(p.Count), true
			}
		}
	case metricdata.Histogram[int64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, kv) {
				v, found = v+float64(p.Count), true
			}
		}
	}
	if !found {
		return -1
	}
	return v
}

// points counts the data points of name whose attributes include kv.
func (c collected) points(name string, kv ...attribute.KeyValue) int {
	n := 0
	count := func(set attribute.Set) {
		if has(set, kv) {
			n++
		}
	}
	switch d := c[name].(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			count(p.Attributes)
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			count(p.Attributes)
		}
	}
	return n
}

// The metrics and the spans of a real pipeline whose Stage fails once.
func TestMetricsAndSpans(t *testing.T) {
	_, brokers := testkit.Cluster(t, 2, "in", "out")
	const n = 1000
	testkit.Produce(t, brokers, "in", n)
	admCl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer admCl.Close()

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { require.NoError(t, mp.Shutdown(context.Background())) }()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer func() { require.NoError(t, tp.Shutdown(context.Background())) }()

	tel, err := otelhooks.New(otelhooks.MeterProvider(mp), otelhooks.TracerProvider(tp),
		otelhooks.Lag(kadm.NewClient(admCl), otelhooks.LagOptions{MaxAge: time.Millisecond}))
	require.NoError(t, err)
	defer func() { require.NoError(t, tel.Close()) }()
	hook := tel.Hook("g", "a")
	who := []attribute.KeyValue{otelhooks.KeyGroup.String("g"), otelhooks.KeyInstance.String("a")}
	reason := func(r pipeline.AbortReason) []attribute.KeyValue {
		return append(who[:2:2], otelhooks.KeyReason.String(string(r)))
	}
	state := func(s pipeline.State) []attribute.KeyValue {
		return append(who[:2:2], otelhooks.KeyState.String(s.String()))
	}

	c := collect(t, reader)
	require.Equal(t, 8, c.points("exactly.batches.aborted", who...), "a zero point per abort reason from the start")
	require.Equal(t, 0.0, c.value("exactly.batches.committed", who...))
	require.Equal(t, 1.0, c.value("exactly.state", state(pipeline.StateIdle)...))

	p, err := pipeline.New(kafkasink.New(), failOnce("out"), pipeline.Brokers(brokers...), pipeline.Group("g"),
		pipeline.Topics("in"), pipeline.InstanceID("a"), pipeline.MaxRecords(100), pipeline.MaxWait(20*time.Millisecond),
		pipeline.SessionTimeout(3*time.Second), pipeline.TransactionTimeout(2*time.Second),
		pipeline.HeartbeatInterval(300*time.Millisecond), pipeline.Backoff(5*time.Millisecond, 50*time.Millisecond),
		pipeline.Hooks(hook))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	testkit.WaitFor(t, 30*time.Second, "all committed and lag 0", func() bool {
		c = collect(t, reader)
		return c.value("exactly.records.committed", who...) >= n && c.points("exactly.partition.lag") == 2 &&
			c.value("exactly.partition.lag", otelhooks.KeyTopic.String("in")) == 0
	})
	require.Equal(t, 1.0, c.value("exactly.state", state(pipeline.StateRunning)...))
	require.Equal(t, float64(n), c.value("exactly.partition.committed_offset", otelhooks.KeyGroup.String("g")))
	require.Equal(t, 0.0, c.value("exactly.partition.open_records"))
	cancel()
	require.NoError(t, <-done)

	st := p.Stats()
	c = collect(t, reader)
	require.Equal(t, float64(n), c.value("exactly.records.committed", who...))
	require.Equal(t, float64(n), c.value("exactly.records.produced", who...))
	require.Equal(t, float64(st.CommittedTxns), c.value("exactly.batches.committed", who...))
	require.Equal(t, 1.0, c.value("exactly.batches.aborted", reason(pipeline.AbortStageError)...))
	require.Equal(t, float64(st.AbortedTxns), c.value("exactly.batches.aborted", who...))
	require.Equal(t, 1.0, c.value("exactly.stage.errors", who...))
	require.Equal(t, c.value("exactly.records.committed", who...)+c.value("exactly.records.aborted", who...),
		c.value("exactly.records.polled", who...))
	for _, h := range []string{"exactly.commit.duration", "exactly.stage.duration", "exactly.batch.duration", "exactly.batch.records", "exactly.batch.bytes"} {
		require.Equal(t, float64(st.CommittedTxns), c.value(h, who...), h)
	}
	require.Equal(t, 1.0, c.value("exactly.state", state(pipeline.StateStopped)...))
	require.Equal(t, 1.0, c.value("exactly.state", who...), "one state at a time")
	require.InDelta(t, float64(time.Now().Unix()), c.value("exactly.last_commit.time", who...), 600)
	require.Greater(t, c.value("exactly.state.since", who...), 0.0)

	// Spans: one "exactly.batch" per transaction, committed ones with
	// poll, stage and commit children inside it, the aborted one with an
	// error status and its reason.
	ended := spans.Ended()
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, s := range ended {
		byID[s.SpanContext().SpanID()] = s
	}
	var committed, aborted int
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	for _, s := range ended {
		if s.Parent().IsValid() {
			children[s.Parent().SpanID()] = append(children[s.Parent().SpanID()], s)
		}
	}
	for _, s := range ended {
		if s.Name() != otelhooks.SpanBatch {
			require.True(t, s.Parent().IsValid(), "%s is a child", s.Name())
			require.Equal(t, otelhooks.SpanBatch, byID[s.Parent().SpanID()].Name())
			continue
		}
		require.False(t, s.Parent().IsValid(), "a batch span is a root")
		require.Equal(t, trace.SpanKindConsumer, s.SpanKind())
		attrs := attribute.NewSet(s.Attributes()...)
		require.True(t, has(attrs, who))
		recs, _ := attrs.Value(otelhooks.KeyRecords)
		require.Positive(t, recs.AsInt64())
		outcome, _ := attrs.Value(otelhooks.KeyOutcome)
		kids := children[s.SpanContext().SpanID()]
		for _, k := range kids {
			require.False(t, k.StartTime().Before(s.StartTime()), "%s starts inside the batch", k.Name())
			require.False(t, k.EndTime().After(s.EndTime()), "%s ends inside the batch", k.Name())
		}
		switch outcome.AsString() {
		case "committed":
			committed++
			require.Equal(t, codes.Ok, s.Status().Code)
			names := map[string]bool{}
			for _, k := range kids {
				names[k.Name()] = true
			}
			require.Equal(t, map[string]bool{otelhooks.SpanPoll: true, otelhooks.SpanStage: true, otelhooks.SpanCommit: true}, names)
			parts, _ := attrs.Value(otelhooks.KeyPartitions)
			require.Positive(t, parts.AsInt64())
			b, _ := attrs.Value(otelhooks.KeyBytes)
			require.Positive(t, b.AsInt64())
		case "aborted":
			aborted++
			r, _ := attrs.Value(otelhooks.KeyReason)
			require.Equal(t, codes.Error, s.Status().Code)
			if r.AsString() == string(pipeline.AbortStageError) {
				require.Contains(t, s.Status().Description, "injected")
				require.NotEmpty(t, s.Events(), "the error is recorded")
			}
		default:
			t.Fatalf("outcome %q", outcome.AsString())
		}
	}
	require.EqualValues(t, st.CommittedTxns, committed)
	require.EqualValues(t, st.AbortedTxns, aborted)
}

// The span timestamps are the CommitInfo's: the batch from Start to
// Start+Took, the commit its last Commit, the Stage just before it.
func TestSpanTimestamps(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer func() { require.NoError(t, tp.Shutdown(context.Background())) }()
	tel, err := otelhooks.New(otelhooks.TracerProvider(tp))
	require.NoError(t, err)
	h := tel.Hook("g", "a")
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	h.OnPolled(pipeline.PollInfo{Records: 3, Took: 100 * time.Millisecond})
	h.OnBatchCommitted(pipeline.CommitInfo{Records: 3, Bytes: 30, Partitions: 1, Start: start,
		Took: time.Second, Stage: 500 * time.Millisecond, Commit: 200 * time.Millisecond})
	h.OnBatchAborted(pipeline.AbortInfo{Reason: pipeline.AbortShutdown, Records: 2, Partitions: 1, Start: start, Took: time.Second})
	got := map[string][2]time.Time{}
	for _, s := range spans.Ended() {
		if _, dup := got[s.Name()]; !dup {
			got[s.Name()] = [2]time.Time{s.StartTime(), s.EndTime()}
		}
	}
	at := func(d time.Duration) time.Time { return start.Add(d) }
	require.Equal(t, [2]time.Time{at(0), at(time.Second)}, got[otelhooks.SpanBatch])
	require.Equal(t, [2]time.Time{at(0), at(100 * time.Millisecond)}, got[otelhooks.SpanPoll])
	require.Equal(t, [2]time.Time{at(300 * time.Millisecond), at(800 * time.Millisecond)}, got[otelhooks.SpanStage])
	require.Equal(t, [2]time.Time{at(800 * time.Millisecond), at(time.Second)}, got[otelhooks.SpanCommit])
	require.Len(t, spans.Ended(), 5, "4 for the commit, 1 for the abort")
	last := spans.Ended()[4]
	require.Equal(t, codes.Error, last.Status().Code)
	require.Equal(t, "aborted: shutdown", last.Status().Description)
}

func TestNewRefuses(t *testing.T) {
	_, err := otelhooks.New()
	require.Error(t, err)
	tp := sdktrace.NewTracerProvider()
	defer func() { require.NoError(t, tp.Shutdown(context.Background())) }()
	_, err = otelhooks.New(otelhooks.TracerProvider(tp), otelhooks.Lag(nil, otelhooks.LagOptions{}))
	require.ErrorContains(t, err, "MeterProvider")
	mp := sdkmetric.NewMeterProvider()
	defer func() { require.NoError(t, mp.Shutdown(context.Background())) }()
	_, err = otelhooks.New(otelhooks.MeterProvider(mp), otelhooks.Lag(nil, otelhooks.LagOptions{}))
	require.ErrorContains(t, err, "admin client")
}
