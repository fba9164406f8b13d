package otelhooks_test

import (
	"context"
	"log"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/pipeline/otelhooks"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// Metrics and traces of a pipeline through the OpenTelemetry SDK. In a
// service the reader is an exporter's (OTLP, Prometheus) and the tracer
// provider has a batching OTLP exporter.
func Example() {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())

	tel, err := otelhooks.New(otelhooks.MeterProvider(mp), otelhooks.TracerProvider(tp))
	if err != nil {
		log.Fatal(err)
	}
	defer tel.Close()

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
		pipeline.Hooks(tel.Hook("orders", "worker-0")),
	)
	if err != nil {
		log.Fatal(err)
	}
	_ = p // p.Run(ctx) until shutdown
}

// franz-go's plugin/kotel adds the Kafka clients' own metrics (and, with
// its Tracer, a span per produced and fetched record) through the same
// providers. Unlike kprom it can be passed to a pipeline as is: it
// registers nothing per client.
func Example_kotel() {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	tel, err := otelhooks.New(otelhooks.MeterProvider(mp))
	if err != nil {
		log.Fatal(err)
	}
	defer tel.Close()
	k := kotel.NewKotel(kotel.WithMeter(kotel.NewMeter(kotel.MeterProvider(mp))))

	p, err := pipeline.New(kafkasink.New(), copyTo("orders-out"),
		pipeline.Brokers("127.0.0.1:9092"),
		pipeline.Group("orders"),
		pipeline.Topics("orders"),
		pipeline.InstanceID("worker-0"),
		pipeline.Hooks(tel.Hook("orders", "worker-0")),
		pipeline.ClientOpts(kgo.WithHooks(k.Hooks()...)),
	)
	if err != nil {
		log.Fatal(err)
	}
	_ = p // p.Run(ctx) until shutdown
}

// copyTo is a Stage that copies every record to topic.
func copyTo(topic string) pipeline.Stage[*kafkasink.Writer] {
	return pipeline.StageFunc[*kafkasink.Writer](func(ctx context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
		for _, r := range b.Records {
			w.Produce(&kgo.Record{Topic: topic, Key: r.Key, Value: r.Value})
		}
		return nil
	})
}
