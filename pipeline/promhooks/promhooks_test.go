package promhooks_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/exactlyonce/exactly/internal/promtest"
	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/pipeline/promhooks"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type kw = *kafkasink.Writer

// failOnce is a copy Stage whose first call fails.
func failOnce(out string) (pipeline.Stage[kw], *atomic.Int64) {
	var calls atomic.Int64
	return pipeline.StageFunc[kw](func(ctx context.Context, b *sinks.Batch, w kw) error {
		if calls.Add(1) == 1 {
			return errors.New("injected")
		}
		for _, r := range b.Records {
			w.Produce(testkit.CopyRecord(out, r))
		}
		return nil
	}), &calls
}

func newPipeline(t *testing.T, brokers []string, stage pipeline.Stage[kw], instance string, opts ...pipeline.Opt) *pipeline.Pipeline[kw] {
	t.Helper()
	opts = append([]pipeline.Opt{
		pipeline.Brokers(brokers...),
		pipeline.Group("g"),
		pipeline.Topics("in"),
		pipeline.InstanceID(instance),
		pipeline.MaxRecords(100),
		pipeline.MaxWait(20 * time.Millisecond),
		pipeline.SessionTimeout(3 * time.Second),
		pipeline.TransactionTimeout(2 * time.Second),
		pipeline.HeartbeatInterval(300 * time.Millisecond),
		pipeline.Backoff(5*time.Millisecond, 50*time.Millisecond),
	}, opts...)
	p, err := pipeline.New(kafkasink.New(), stage, opts...)
	require.NoError(t, err)
	return p
}

func run(p *pipeline.Pipeline[kw]) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- p.Run(ctx) }()
	return func() error { cancel(); return <-ch }
}

func admin(t *testing.T, brokers []string) *kadm.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// Every metric moves on a real pipeline, read by scraping /metrics: records
// in and out, batches, the abort of the Stage that fails once under its
// reason, the histograms, the state, the lag per partition and the kgo
// client's own metrics.
func TestMetricsOnARealPipeline(t *testing.T) {
	_, brokers := testkit.Cluster(t, 2, "in", "out")
	const n = 1000
	testkit.Produce(t, brokers, "in", n)

	reg := prometheus.NewRegistry()
	m, err := promhooks.New(reg, promhooks.Lag(admin(t, brokers), promhooks.LagOptions{MaxAge: time.Millisecond}))
	require.NoError(t, err)
	kh, err := m.ClientHooks("g", "a")
	require.NoError(t, err)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	scrape := func() promtest.Families { return promtest.Scrape(t, srv.URL) }

	// Once the hook exists, before Run: every series exists, at zero, and
	// the state is idle.
	hook := m.Hook("g", "a")
	f := scrape()
	who := []string{"group", "g", "instance_id", "a"}
	require.Equal(t, 0.0, f.Value("exactly_batches_committed_total", who...))
	require.Equal(t, []string{"fenced", "rebalance", "refused", "shutdown", "sink_error", "stage_error", "timeout", "unknown_outcome"},
		f.LabelValues("exactly_batches_aborted_total", "reason", who...), "a series per abort reason from the start")
	require.Equal(t, 1.0, f.Value("exactly_state", append(who, "state", "idle")...))
	require.Equal(t, 0.0, f.Value("exactly_state", append(who, "state", "running")...))

	stage, _ := failOnce("out")
	p := newPipeline(t, brokers, stage, "a", pipeline.Hooks(hook), pipeline.ClientOpts(kgo.WithHooks(kh)))
	stop := run(p)
	testkit.WaitFor(t, 30*time.Second, "all records committed", func() bool {
		return scrape().Value("exactly_records_committed_total", who...) >= n
	})
	f = scrape()
	require.Equal(t, 1.0, f.Value("exactly_state", append(who, "state", "running")...))
	require.Equal(t, 0.0, f.Value("exactly_state", append(who, "state", "idle")...))
	// The lag: every partition committed to its end.
	testkit.WaitFor(t, 30*time.Second, "lag sampled", func() bool {
		f = scrape()
		return len(f.Series("exactly_partition_lag", "group", "g", "topic", "in")) == 2
	})
	require.Equal(t, 0.0, f.Value("exactly_partition_lag", "group", "g", "topic", "in"))
	require.Equal(t, 0.0, f.Value("exactly_partition_open_records", "group", "g", "topic", "in"))
	require.Equal(t, float64(n), f.Value("exactly_partition_committed_offset", "group", "g", "topic", "in"), "the offsets add up to n")
	require.Equal(t, 0.0, f.Value("exactly_lag_sample_errors_total"))
	require.NoError(t, stop())

	st := p.Stats()
	f = scrape()
	require.Equal(t, float64(n), f.Value("exactly_records_committed_total", who...))
	require.Equal(t, float64(n), f.Value("exactly_records_produced_total", who...), "one output per input")
	require.Equal(t, float64(st.CommittedTxns), f.Value("exactly_batches_committed_total", who...))
	require.Equal(t, 1.0, f.Value("exactly_batches_aborted_total", append(who, "reason", "stage_error")...))
	require.Equal(t, 1.0, f.Value("exactly_stage_errors_total", who...))
	aborted := f.Value("exactly_batches_aborted_total", who...)
	require.Equal(t, float64(st.AbortedTxns), aborted)
	require.Equal(t, f.Value("exactly_records_committed_total", who...)+f.Value("exactly_records_aborted_total", who...),
		f.Value("exactly_records_polled_total", who...), "every polled record committed or aborted")
	for _, h := range []string{"exactly_commit_duration_seconds", "exactly_batch_duration_seconds", "exactly_stage_duration_seconds",
		"exactly_batch_records", "exactly_batch_bytes"} {
		require.Equal(t, float64(st.CommittedTxns), f.Value(h, who...), "%s: one observation per commit", h)
	}
	require.Equal(t, float64(st.CommittedTxns)+aborted, f.Value("exactly_poll_duration_seconds", who...))
	last := f.Value("exactly_last_commit_timestamp_seconds", who...)
	require.InDelta(t, float64(time.Now().Unix()), last, 600)
	require.Equal(t, 1.0, f.Value("exactly_state", append(who, "state", "stopped")...))
	require.Equal(t, 1.0, f.Value("exactly_state", who...), "one state at a time")
	require.Greater(t, f.Value("exactly_state_since_timestamp_seconds", who...), 0.0)
	// franz-go's own metrics, next to ours, with the same labels.
	require.Greater(t, f.Value("kgo_read_bytes_total", who...), 0.0)
	require.Greater(t, f.Value("kgo_fetch_bytes_total", who...), 0.0)
}

// Two pipelines of one group share one Metrics: each has its own series, and
// the lag covers the partitions of both.
func TestTwoInstancesOneRegistry(t *testing.T) {
	_, brokers := testkit.Cluster(t, 4, "in", "out")
	const n = 2000
	testkit.Produce(t, brokers, "in", n)
	reg := prometheus.NewRegistry()
	m, err := promhooks.New(reg, promhooks.Lag(admin(t, brokers), promhooks.LagOptions{MaxAge: time.Millisecond}))
	require.NoError(t, err)
	var ps []*pipeline.Pipeline[kw]
	var stops []func() error
	for _, id := range []string{"a", "b"} {
		kh, err := m.ClientHooks("g", id)
		require.NoError(t, err)
		stage, _ := failOnce("out")
		p := newPipeline(t, brokers, stage, id, pipeline.Hooks(m.Hook("g", id)), pipeline.ClientOpts(kgo.WithHooks(kh)))
		ps = append(ps, p)
		stops = append(stops, run(p))
	}
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	var f promtest.Families
	testkit.WaitFor(t, 60*time.Second, "all records committed and lagged", func() bool {
		f = promtest.Scrape(t, srv.URL)
		return f.Value("exactly_records_committed_total", "group", "g") >= n &&
			len(f.Series("exactly_partition_lag", "topic", "in")) == 4 && f.Value("exactly_partition_lag", "topic", "in") == 0
	})
	for _, stop := range stops {
		require.NoError(t, stop())
	}
	f = promtest.Scrape(t, srv.URL)
	require.Equal(t, []string{"a", "b"}, f.LabelValues("exactly_batches_committed_total", "instance_id"))
	require.Equal(t, float64(n), f.Value("exactly_records_committed_total", "group", "g"))
	for i, id := range []string{"a", "b"} {
		require.Equal(t, float64(ps[i].Stats().CommittedTxns), f.Value("exactly_batches_committed_total", "instance_id", id))
		require.Equal(t, 1.0, f.Value("exactly_stage_errors_total", "instance_id", id))
	}
	require.Equal(t, []string{"a", "b"}, f.LabelValues("kgo_read_bytes_total", "instance_id"))
}

// A lag sample that cannot finish in its timeout does not hold a scrape
// longer than the timeout: it counts an error and reports no lag.
func TestLagIsBoundedInTime(t *testing.T) {
	// An admin client on a port where nothing listens.
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.RetryTimeout(time.Minute))
	require.NoError(t, err)
	defer cl.Close()
	reg := prometheus.NewRegistry()
	m, err := promhooks.New(reg, promhooks.Lag(kadm.NewClient(cl), promhooks.LagOptions{Timeout: 200 * time.Millisecond}))
	require.NoError(t, err)
	h := m.Hook("g", "a")
	h.OnBatchCommitted(pipeline.CommitInfo{Records: 1, Offsets: map[string]map[int32]int64{"in": {0: 1}}})
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	start := time.Now()
	f := promtest.Scrape(t, srv.URL)
	require.Less(t, time.Since(start), 20*time.Second, "the scrape waited for the timeout, not the client's retries")
	require.Equal(t, 1.0, f.Value("exactly_lag_sample_errors_total"))
	require.Empty(t, f.Series("exactly_partition_lag"))
	require.Equal(t, 1.0, f.Value("exactly_batches_committed_total", "instance_id", "a"), "the other metrics are served")
}

func TestNewRefuses(t *testing.T) {
	_, err := promhooks.New(nil)
	require.Error(t, err)
	_, err = promhooks.New(prometheus.NewRegistry(), promhooks.Lag(nil, promhooks.LagOptions{}))
	require.ErrorContains(t, err, "admin client")
	reg := prometheus.NewRegistry()
	_, err = promhooks.New(reg)
	require.NoError(t, err)
	_, err = promhooks.New(reg)
	require.ErrorContains(t, err, "duplicate", "a second Metrics on one registry: use one Metrics and a Hook per pipeline")
	_, err = promhooks.New(reg, promhooks.Namespace("other"))
	require.NoError(t, err, "another namespace registers beside it")
}

// TestCoreImportsNoMetricsLibrary: the pipeline package links neither
// client_golang nor OpenTelemetry; only the adapters do.
func TestCoreImportsNoMetricsLibrary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/exactlyonce/exactly/pipeline").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "github.com/twmb/franz-go/pkg/kgo")
	require.NotContains(t, string(out), "prometheus")
	require.NotContains(t, string(out), "opentelemetry")
}
