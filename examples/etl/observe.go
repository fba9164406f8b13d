package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/pipeline/health"
	"github.com/exactlyonce/exactly/pipeline/promhooks"
)

// observeConfig is -metrics-addr: while the ETL runs, serve /metrics
// (Prometheus: the pipelines' metrics, their lag, their Kafka clients'
// metrics, Go runtime metrics) and the /healthz and /readyz probes.
type observeConfig struct {
	addr string // "" serves nothing

	// For tests: called with the bound address once serving, and again
	// just before the server stops (after the pipelines stopped).
	started, stopping func(addr string)

	obs *observer // set by startObserving
}

// observer is the running metrics server of one run.
type observer struct {
	cfg      observeConfig
	group    string
	m        *promhooks.Metrics
	trackers []*health.Tracker
	kgoHooks []kgo.Hook
	adm      *kgo.Client
	srv      *http.Server
	addr     string
	served   chan error
}

// startObserving starts the metrics server of cfg.metrics, if any, and
// sets cfg.metrics.obs for pipelineOpts; stop shuts it down.
func startObserving(cfg *config, brokers []string, tp topics, w io.Writer) (stop func(), err error) {
	if cfg.metrics.addr == "" {
		return func() {}, nil
	}
	o, err := newObserver(cfg.metrics, cfg.instances, brokers, tp)
	if err != nil {
		return nil, fmt.Errorf("-metrics-addr %s: %w", cfg.metrics.addr, err)
	}
	cfg.metrics.obs = o
	fmt.Fprintf(w, "metrics at http://%s/metrics, probes at /healthz and /readyz\n", o.addr)
	if o.cfg.started != nil {
		o.cfg.started(o.addr)
	}
	return o.close, nil
}

func newObserver(c observeConfig, instances int, brokers []string, tp topics) (*observer, error) {
	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := promhooks.New(reg, promhooks.Lag(kadm.NewClient(adm), promhooks.LagOptions{Topics: []string{tp.in}, MaxAge: time.Second}))
	if err != nil {
		adm.Close()
		return nil, err
	}
	o := &observer{cfg: c, group: tp.group, m: m, adm: adm, served: make(chan error, 1)}
	var checks []health.Check
	for i := range instances {
		tr := &health.Tracker{}
		o.trackers = append(o.trackers, tr)
		checks = append(checks, health.Check{Name: instanceName(i), State: tr.State})
		kh, err := m.ClientHooks(tp.group, instanceName(i))
		if err != nil {
			adm.Close()
			return nil, err
		}
		o.kgoHooks = append(o.kgoHooks, kh)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	probes := health.New(checks...)
	mux.Handle("/healthz", probes)
	mux.Handle("/readyz", probes)
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		adm.Close()
		return nil, err
	}
	o.addr = ln.Addr().String()
	o.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { o.served <- o.srv.Serve(ln) }()
	return o, nil
}

// opts are instance i's hooks: the pipeline metrics, the health tracker and
// franz-go's client metrics. None without -metrics-addr.
func (c observeConfig) opts(i int) []pipeline.Opt {
	o := c.obs
	if o == nil {
		return nil
	}
	id := instanceName(i)
	return []pipeline.Opt{
		pipeline.Hooks(o.m.Hook(o.group, id), o.trackers[i]),
		pipeline.ClientOpts(kgo.WithHooks(o.kgoHooks[i])),
	}
}

func (o *observer) close() {
	if o.cfg.stopping != nil {
		o.cfg.stopping(o.addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = o.srv.Shutdown(ctx)
	if err := <-o.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Println("etl: metrics server:", err)
	}
	o.adm.Close()
}

func instanceName(i int) string { return fmt.Sprintf("worker-%d", i) }
