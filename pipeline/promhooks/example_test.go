package promhooks_test

import (
	"context"
	"log"
	"log/slog"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/pipeline/promhooks"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// Wiring a pipeline's metrics, its lag and its Kafka clients' metrics into
// one registry served on /metrics.
func Example() {
	brokers := []string{"127.0.0.1:9092"}
	reg := prometheus.NewRegistry()

	// An admin client for the lag collector; the lag's committed offsets
	// come from the pipeline's commits.
	admCl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		log.Fatal(err)
	}
	defer admCl.Close()
	m, err := promhooks.New(reg, promhooks.Lag(kadm.NewClient(admCl), promhooks.LagOptions{}))
	if err != nil {
		log.Fatal(err)
	}
	// franz-go's own metrics (kprom) for the pipeline's clients.
	kgoHooks, err := m.ClientHooks("orders", "worker-0")
	if err != nil {
		log.Fatal(err)
	}

	stage := pipeline.StageFunc[*kafkasink.Writer](func(ctx context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
		for _, r := range b.Records {
			w.Produce(&kgo.Record{Topic: "orders-out", Key: r.Key, Value: r.Value})
		}
		return nil
	})
	p, err := pipeline.New(kafkasink.New(), stage,
		pipeline.Brokers(brokers...),
		pipeline.Group("orders"),
		pipeline.Topics("orders"),
		pipeline.InstanceID("worker-0"),
		pipeline.Hooks(m.Hook("orders", "worker-0")),
		pipeline.ClientOpts(kgo.WithHooks(kgoHooks)),
	)
	if err != nil {
		log.Fatal(err)
	}
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	go func() { log.Print(http.ListenAndServe("127.0.0.1:9464", nil)) }()
	_ = p // p.Run(ctx) until shutdown
}

// franz-go's plugin/kslog sends the Kafka clients' own logs to a
// log/slog logger; pipeline.Logger is the pipeline's own.
func Example_kslog() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	stage := pipeline.StageFunc[*kafkasink.Writer](func(ctx context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
		for _, r := range b.Records {
			w.Produce(&kgo.Record{Topic: "orders-out", Key: r.Key, Value: r.Value})
		}
		return nil
	})
	p, err := pipeline.New(kafkasink.New(), stage,
		pipeline.Brokers("127.0.0.1:9092"),
		pipeline.Group("orders"),
		pipeline.Topics("orders"),
		pipeline.InstanceID("worker-0"),
		pipeline.Logger(logger),
		pipeline.ClientOpts(kgo.WithLogger(kslog.New(logger.With("client", "kgo")))),
	)
	if err != nil {
		log.Fatal(err)
	}
	_ = p // p.Run(ctx) until shutdown
}
