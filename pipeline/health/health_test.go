package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/pipeline/health"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, h http.Handler, path string) (int, health.Report) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	var rep health.Report
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &rep), "%s", rec.Body)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	return rec.Code, rep
}

// Each state's answer to both probes.
func TestEachState(t *testing.T) {
	since := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	boom := errors.New("fenced by a newer instance")
	for _, tc := range []struct {
		info        pipeline.StateInfo
		live, ready int
	}{
		{pipeline.StateInfo{State: pipeline.StateIdle}, 200, 503},
		{pipeline.StateInfo{State: pipeline.StateStarting, Since: since}, 200, 503},
		{pipeline.StateInfo{State: pipeline.StateRunning, Since: since}, 200, 200},
		{pipeline.StateInfo{State: pipeline.StateRebalancing, Cause: boom, Since: since}, 200, 200},
		{pipeline.StateInfo{State: pipeline.StateRetrying, Cause: boom, Since: since}, 200, 503},
		{pipeline.StateInfo{State: pipeline.StateStopped, Since: since}, 200, 503},
		{pipeline.StateInfo{State: pipeline.StateStopped, Cause: boom, Since: since}, 503, 503},
	} {
		name := tc.info.State.String()
		if tc.info.Cause != nil {
			name += "-with-cause"
		}
		t.Run(name, func(t *testing.T) {
			h := health.New(health.Check{Name: "w0", State: func() pipeline.StateInfo { return tc.info }})
			code, rep := get(t, h, "/healthz")
			require.Equal(t, tc.live, code)
			require.Equal(t, tc.live == 200, rep.OK)
			code, rep = get(t, h, "/readyz")
			require.Equal(t, tc.ready, code)
			require.Equal(t, tc.ready == 200, rep.OK)
			require.Len(t, rep.Pipelines, 1)
			st := rep.Pipelines[0]
			require.Equal(t, "w0", st.Name)
			require.Equal(t, tc.info.State.String(), st.State)
			require.Equal(t, tc.info.Ready(), st.Ready)
			require.True(t, st.Since.Equal(tc.info.Since), "since %v", st.Since)
			if tc.info.Cause != nil {
				require.Equal(t, tc.info.Cause.Error(), st.Cause)
			} else {
				require.Empty(t, st.Cause)
			}
		})
	}
}

// With several pipelines a probe fails if one fails, and names it.
func TestSeveralPipelines(t *testing.T) {
	running := func() pipeline.StateInfo { return pipeline.StateInfo{State: pipeline.StateRunning, Since: time.Now()} }
	retrying := func() pipeline.StateInfo {
		return pipeline.StateInfo{State: pipeline.StateRetrying, Cause: errors.New("broker down"), Since: time.Now()}
	}
	h := health.New(health.Check{Name: "a", State: running}, health.Check{Name: "b", State: retrying})
	code, rep := get(t, h, "/readyz")
	require.Equal(t, 503, code)
	require.True(t, rep.Pipelines[0].OK)
	require.False(t, rep.Pipelines[1].OK)
	require.Equal(t, "broker down", rep.Pipelines[1].Cause)
	code, _ = get(t, h, "/healthz")
	require.Equal(t, 200, code)

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/other", nil))
	require.Equal(t, 404, rec.Code)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/readyz", nil))
	require.Equal(t, 405, rec.Code)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/readyz", nil))
	require.Equal(t, 503, rec.Code)
	require.Empty(t, rec.Body.String())
}

// On a real pipeline: not ready before Run, ready while it runs, and, after
// a Stage panic stops it with an error, not alive; a Tracker hook sees the
// same states as p.State.
func TestRealPipeline(t *testing.T) {
	_, brokers := testkit.Cluster(t, 2, "in", "out")
	testkit.Produce(t, brokers, "in", 200)
	var (
		tr    health.Tracker
		crash = make(chan struct{})
	)
	stage := pipeline.StageFunc[*kafkasink.Writer](func(ctx context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
		select {
		case <-crash:
			panic("injected")
		default:
		}
		for _, r := range b.Records {
			w.Produce(testkit.CopyRecord("out", r))
		}
		return nil
	})
	p, err := pipeline.New(kafkasink.New(), stage, pipeline.Brokers(brokers...), pipeline.Group("g"), pipeline.Topics("in"),
		pipeline.InstanceID("a"), pipeline.MaxWait(20*time.Millisecond), pipeline.SessionTimeout(3*time.Second),
		pipeline.TransactionTimeout(2*time.Second), pipeline.HeartbeatInterval(300*time.Millisecond), pipeline.Hooks(&tr))
	require.NoError(t, err)
	h := health.New(health.Check{Name: "a", State: p.State}, health.Check{Name: "tracked", State: tr.State})
	srv := httptest.NewServer(h)
	defer srv.Close()
	probe := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, 503, probe("/readyz"))
	require.Equal(t, 200, probe("/healthz"))

	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	testkit.WaitFor(t, 30*time.Second, "ready", func() bool { return probe("/readyz") == 200 })
	testkit.WaitFor(t, 30*time.Second, "records committed", func() bool { return p.Stats().CommittedRecords >= 200 })
	require.Equal(t, 200, probe("/healthz"))

	close(crash)
	testkit.Produce(t, brokers, "in", 10)
	var se *pipeline.StageError
	require.ErrorAs(t, <-done, &se)
	require.Equal(t, 503, probe("/healthz"))
	require.Equal(t, 503, probe("/readyz"))
	_, rep := get(t, h, "/healthz")
	for _, st := range rep.Pipelines {
		require.Equal(t, "stopped", st.State)
		require.Contains(t, st.Cause, "panic")
	}
}
