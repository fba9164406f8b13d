package kafkasink_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"strings"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A Kafka-mode pipeline: each batch's output records and the consumer
// offsets past it commit in one Kafka transaction. Consumers of "orders.upper"
// that read with read_committed see each input's output exactly once.
func ExampleNew() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	upper := pipeline.StageFunc[*kafkasink.Writer](func(ctx context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
		for _, r := range b.Records {
			w.Produce(&kgo.Record{Topic: "orders.upper", Key: r.Key, Value: []byte(strings.ToUpper(string(r.Value)))})
		}
		return nil
	})
	p, err := pipeline.New(kafkasink.New(), upper,
		pipeline.Brokers("127.0.0.1:9092"),
		pipeline.Group("upper"),
		pipeline.Topics("orders"),
		pipeline.InstanceID(os.Getenv("HOSTNAME")),
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
