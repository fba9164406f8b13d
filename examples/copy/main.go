// Command copy is the smallest exactly-once pipeline: it copies every record
// of topic "in" to topic "out", upper-cased, in Kafka transactions. With no
// flags it starts an in-process Kafka cluster (kfake), writes -records input
// records, runs one pipeline instance until the group has caught up, and
// checks the output with an independent read_committed verifier:
//
//	copied exactly once: in=10000 out=10000 duplicates=0 missing=0
//
// It is Kafka-only, so it links no database driver (a test checks that).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

func main() {
	brokers := flag.String("brokers", "", "comma-separated seed brokers (default: an embedded in-process cluster)")
	records := flag.Int("records", 10_000, "input records to write first")
	verbose := flag.Bool("v", false, "log the pipeline's lifecycle and retries")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := slog.New(slog.DiscardHandler)
	if *verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	line, err := run(ctx, *brokers, *records, log)
	if err != nil {
		fmt.Println("copy:", err)
		os.Exit(1)
	}
	fmt.Println(line)
}

// upper is the Stage: one output record per input record, in the batch's
// transaction.
var upper = pipeline.StageFunc[*kafkasink.Writer](func(_ context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
	for _, r := range b.Records {
		w.Produce(&kgo.Record{
			Topic: "out", Key: r.Key, Value: bytes.ToUpper(r.Value),
			Headers: kafkasink.AppendSourceHeaders(nil, r), // lineage, for the verifier
		})
	}
	return nil
})

func run(ctx context.Context, brokerList string, records int, log *slog.Logger) (string, error) {
	var seeds []string
	if brokerList == "" {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "in", "out"))
		if err != nil {
			return "", err
		}
		defer c.Close()
		seeds = c.ListenAddrs()
	} else {
		seeds = strings.Split(brokerList, ",")
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		return "", err
	}
	defer cl.Close()
	if brokerList != "" {
		if _, err := kadm.NewClient(cl).CreateTopics(ctx, 3, -1, nil, "in", "out"); err != nil {
			return "", err
		}
	}
	for i := range records {
		cl.Produce(ctx, &kgo.Record{Topic: "in", Value: fmt.Appendf(nil, "record %d", i)}, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		return "", err
	}

	p, err := pipeline.New(kafkasink.New(), upper,
		pipeline.Brokers(seeds...), pipeline.Group("copy"), pipeline.Topics("in"),
		pipeline.InstanceID("copy-1"), pipeline.Logger(log))
	if err != nil {
		return "", err
	}
	// Run until the group has committed everything written above.
	if err := p.RunUntilCaughtUp(ctx); err != nil {
		return "", err
	}
	rep, err := verify.Check(ctx, verify.Options{
		ClientOpts: []kgo.Opt{kgo.SeedBrokers(seeds...)},
		Input:      "in", Outputs: []string{"out"},
		SourceOf: verify.SourceFromHeaders,
	})
	if err != nil {
		return "", err
	}
	if !rep.OK() {
		return "", fmt.Errorf("not exactly once: %v", rep)
	}
	return fmt.Sprintf("copied exactly once: in=%d out=%d duplicates=%d missing=%d", rep.In, rep.TotalOut(), rep.Duplicates, rep.Missing), nil
}
