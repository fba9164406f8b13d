package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/exactlyonce/exactly/internal/promtest"
	"github.com/exactlyonce/exactly/pipeline/health"
)

// probe is one GET of a health endpoint.
func probe(t *testing.T, url string) (int, health.Report) {
	t.Helper()
	code, body, err := promtest.Get(url)
	require.NoError(t, err)
	var rep health.Report
	require.NoError(t, json.Unmarshal(body, &rep), "%s", body)
	return code, rep
}

// With -metrics-addr the ETL serves /metrics while it runs: committed
// batches rise scrape after scrape, there is a series per abort reason, the
// lag per input partition and franz-go's client metrics; /readyz answers 200
// while the instances run, and after they stopped cleanly /healthz is 200 and
// /readyz 503.
func TestMetricsAddr(t *testing.T) {
	cfg := defaultConfig()
	cfg.records = 30_000
	cfg.instances = 2
	cfg.batch = 300
	cfg.timeout = 3 * time.Minute
	cfg.log = io.Discard
	cfg.metrics.addr = "127.0.0.1:0"

	var (
		mu        sync.Mutex
		committed []float64 // exactly_batches_committed_total, per scrape
		readyOK   bool      // a /readyz answered 200 during the run
		scrapeErr error
		base      string
		final     promtest.Families
		stop      = make(chan struct{})
		stopped   = make(chan struct{})
	)
	cfg.metrics.started = func(addr string) {
		base = "http://" + addr
		go func() {
			defer close(stopped)
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				f, err := promtest.TryScrape(base + "/metrics")
				code, _, perr := promtest.Get(base + "/readyz")
				mu.Lock()
				if err == nil && perr == nil {
					committed = append(committed, f.Value("exactly_batches_committed_total"))
					readyOK = readyOK || code == 200
				} else if scrapeErr == nil {
					scrapeErr = err
				}
				mu.Unlock()
			}
		}()
	}
	cfg.metrics.stopping = func(string) {
		close(stop)
		<-stopped
		final = promtest.Scrape(t, base+"/metrics")
		code, rep := probe(t, base+"/healthz")
		require.Equal(t, 200, code, "stopped without an error is alive: %+v", rep)
		code, rep = probe(t, base+"/readyz")
		require.Equal(t, 503, code)
		require.Len(t, rep.Pipelines, 2)
		for _, st := range rep.Pipelines {
			require.Equal(t, "stopped", st.State)
		}
	}
	var out bytes.Buffer
	res, err := run(context.Background(), cfg, &out)
	require.NoError(t, err, out.String())
	require.True(t, res.ok(), "%s\n%s", res.line(), out.String())
	require.Contains(t, out.String(), "/metrics")

	mu.Lock()
	defer mu.Unlock()
	require.NoError(t, scrapeErr)
	require.NotNil(t, final, "the server was up until the end")
	last := final.Value("exactly_batches_committed_total")
	require.Positive(t, last)
	rising := false
	for i, v := range committed {
		require.LessOrEqual(t, v, last, "scrape %d", i)
		if i > 0 {
			require.GreaterOrEqual(t, v, committed[i-1], "a counter never goes down")
		}
		rising = rising || (v > 0 && v < last)
	}
	require.True(t, rising, "a scrape during the run saw committed batches between 0 and the final %v: %v", last, committed)
	require.True(t, readyOK, "/readyz answered 200 while the instances ran")

	require.Equal(t, float64(cfg.records), final.Value("exactly_records_committed_total"), "every input committed once")
	require.Equal(t, []string{"worker-0", "worker-1"}, final.LabelValues("exactly_batches_committed_total", "instance_id"))
	require.Equal(t, []string{"fenced", "rebalance", "refused", "shutdown", "sink_error", "stage_error", "timeout", "unknown_outcome"},
		final.LabelValues("exactly_batches_aborted_total", "reason", "instance_id", "worker-0"))
	require.Equal(t, 2.0, final.Value("exactly_state", "state", "stopped"))
	require.Len(t, final.Series("exactly_partition_lag"), cfg.partitions, "lag of each input partition")
	require.Positive(t, final.Value("kgo_read_bytes_total", "instance_id", "worker-1"), "franz-go's client metrics")
	require.NotEmpty(t, final.Names("go_"), "Go runtime metrics")
	t.Logf("committed batches per scrape: %v", committed)
}
