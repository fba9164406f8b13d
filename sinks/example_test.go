package sinks_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
)

// A Kafka-mode pipeline: each batch's output records and the consumer
// offsets past it commit in one Kafka transaction. Consumers of "orders.upper"
// that read with read_committed see each input's output exactly once.
func ExampleNewKafka() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	upper := pipeline.StageFunc[*sinks.KafkaWriter](func(ctx context.Context, b *pipeline.Batch, w *sinks.KafkaWriter) error {
		for _, r := range b.Records {
			w.Produce(&kgo.Record{Topic: "orders.upper", Key: r.Key, Value: []byte(strings.ToUpper(string(r.Value)))})
		}
		return nil
	})
	p, err := pipeline.New(sinks.NewKafka(), upper,
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

// A Postgres-mode pipeline: each partition's batch is written with COPY in
// a Postgres transaction that also moves the partition's offset in the
// offsets table, so every record is in the orders table exactly once.
func ExampleNewPostgres() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	// One connection per partition in a transaction, plus a few.
	pool, err := pgxpool.New(ctx, "postgres://app@db.internal/app?pool_max_conns=16")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	sink, err := sinks.NewPostgres(pool, sinks.OffsetsTable("app", "exactly_offsets"))
	if err != nil {
		log.Fatal(err)
	}
	// Once, before the first run: CREATE TABLE IF NOT EXISTS (see sink.DDL()).
	if err := sink.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	load := pipeline.StageFunc[*sinks.PostgresWriter](func(ctx context.Context, b *pipeline.Batch, w *sinks.PostgresWriter) error {
		rows := make([][]any, len(b.Records))
		for i, r := range b.Records {
			rows[i] = []any{r.Topic, r.Partition, r.Offset, r.Key, r.Value}
		}
		_, err := w.CopyFrom(ctx, pgx.Identifier{"app", "orders"},
			[]string{"topic", "partition", "kafka_offset", "key", "body"}, pgx.CopyFromRows(rows))
		return err
	})
	p, err := pipeline.New(sink, load,
		pipeline.Brokers("127.0.0.1:9092"),
		pipeline.Group("orders-to-postgres"),
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

// The offsets table the sink needs, for a migration tool of your own;
// Migrate runs the same statement (and creates the schema if missing).
func ExamplePostgres_DDL() {
	pool, err := pgxpool.New(context.Background(), "postgres://app@db.internal/app") // connects lazily
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	sink, err := sinks.NewPostgres(pool, sinks.OffsetsTable("app", "exactly_offsets"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(sink.DDL())
	// Output:
	// CREATE TABLE IF NOT EXISTS "app"."exactly_offsets" (
	//     consumer_group text        NOT NULL,
	//     topic          text        NOT NULL,
	//     partition      integer     NOT NULL,
	//     next_offset    bigint      NOT NULL,
	//     updated_at     timestamptz NOT NULL DEFAULT now(),
	//     PRIMARY KEY (consumer_group, topic, partition)
	// );
}
