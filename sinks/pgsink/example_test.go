package pgsink_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/pgsink"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A Postgres-mode pipeline: each partition's batch is written with COPY in
// a Postgres transaction that also moves the partition's offset in the
// offsets table, so every record is in the orders table exactly once.
func ExampleNew() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	// One connection per partition in a transaction, plus a few.
	pool, err := pgxpool.New(ctx, "postgres://app@db.internal/app?pool_max_conns=16")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	sink, err := pgsink.New(pool, pgsink.OffsetsTable("app", "exactly_offsets"))
	if err != nil {
		log.Fatal(err)
	}
	// Once, before the first run: CREATE TABLE IF NOT EXISTS (see sink.DDL()).
	if err := sink.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	load := pipeline.StageFunc[*pgsink.Writer](func(ctx context.Context, b *sinks.Batch, w *pgsink.Writer) error {
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
func ExampleSink_DDL() {
	pool, err := pgxpool.New(context.Background(), "postgres://app@db.internal/app") // connects lazily
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	sink, err := pgsink.New(pool, pgsink.OffsetsTable("app", "exactly_offsets"))
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
