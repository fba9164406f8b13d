package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// A pipeline that upper-cases order events, exactly once, on an in-process
// cluster. Against a real cluster only the broker addresses change.
func Example() {
	cluster, err := kfake.NewCluster(kfake.SeedTopics(2, "orders", "orders-upper"))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	produceOrders(brokers, 100)

	// The Stage: the business logic, one partition's batch at a time.
	// Everything it produces commits in the batch's transaction, together
	// with the consumer offsets.
	upper := pipeline.StageFunc[*kafkasink.Writer](func(ctx context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
		for _, r := range b.Records {
			w.Produce(&kgo.Record{Topic: "orders-upper", Key: r.Key, Value: bytes.ToUpper(r.Value)})
		}
		return nil
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var committed int
	p, err := pipeline.New(kafkasink.New(), upper,
		pipeline.Brokers(brokers...),
		pipeline.Group("upper"),
		pipeline.Topics("orders"),
		pipeline.InstanceID("worker-1"),
		pipeline.OnCommit(func(ci pipeline.CommitInfo) {
			if committed += ci.Records; committed == 100 {
				cancel() // a demo stops when the input is done; a service runs on
			}
		}),
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("committed", p.Stats().CommittedRecords)
	// Output: committed 100
}

// New refuses configurations that would break the guarantee, and says why.
func ExampleNew_refused() {
	stage := pipeline.StageFunc[*kafkasink.Writer](func(context.Context, *sinks.Batch, *kafkasink.Writer) error { return nil })
	_, err := pipeline.New(kafkasink.New(), stage,
		pipeline.Brokers("127.0.0.1:9092"),
		pipeline.Group("g"),
		pipeline.Topics("in"),
		pipeline.InstanceID("w-1"),
		pipeline.ClientOpts(kgo.RequiredAcks(kgo.LeaderAck())),
	)
	fmt.Println(err)
	// Output: exactly: invalid pipeline.ClientOpts kgo.RequiredAcks: acks must be all (the default): acks=0 or 1 loses records when a leader fails before its followers copied them
}

// Middleware wraps a Stage: here a timeout per batch and an observer for
// metrics.
func ExampleChain() {
	var stage pipeline.Stage[*kafkasink.Writer] = pipeline.StageFunc[*kafkasink.Writer](
		func(ctx context.Context, b *sinks.Batch, w *kafkasink.Writer) error { return nil })
	var batches int
	stage = pipeline.Chain(stage,
		pipeline.Observe(func(b *sinks.Batch, took time.Duration, err error) {
			batches++ // record took and err in your metrics here
		}),
		pipeline.Timeout(5*time.Second),
	)
	err := stage.Process(context.Background(), &sinks.Batch{Topic: "orders"}, nil)
	fmt.Println(batches, err)
	// Output: 1 <nil>
}

// A middleware that needs the writer's type is adapted with Typed.
func ExampleTyped() {
	audit := pipeline.Typed(func(next pipeline.Stage[*kafkasink.Writer]) pipeline.Stage[*kafkasink.Writer] {
		return pipeline.StageFunc[*kafkasink.Writer](func(ctx context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
			if err := next.Process(ctx, b, w); err != nil {
				return err
			}
			// w.Produce(...) an audit record in the same transaction
			return nil
		})
	})
	stage := pipeline.Chain(pipeline.StageFunc[*kafkasink.Writer](
		func(ctx context.Context, b *sinks.Batch, w *kafkasink.Writer) error { return nil }),
		audit, pipeline.Timeout(time.Second))
	fmt.Println(stage.Process(context.Background(), &sinks.Batch{Topic: "orders"}, nil))
	// Output: <nil>
}

func produceOrders(brokers []string, n int) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("orders"))
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	for i := range n {
		r := &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: []byte(fmt.Sprintf("order %d", i))}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			log.Fatal(err)
		}
	}
}

// A batch job: process everything the input holds, then stop.
func ExamplePipeline_RunUntilCaughtUp() {
	cluster, err := kfake.NewCluster(kfake.SeedTopics(2, "orders", "orders-upper"))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	produceOrders(brokers, 50)

	upper := pipeline.StageFunc[*kafkasink.Writer](func(ctx context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
		for _, r := range b.Records {
			w.Produce(&kgo.Record{Topic: "orders-upper", Key: r.Key, Value: bytes.ToUpper(r.Value)})
		}
		return nil
	})
	p, err := pipeline.New(kafkasink.New(), upper, pipeline.Brokers(brokers...),
		pipeline.Group("upper"), pipeline.Topics("orders"), pipeline.InstanceID("batch-1"))
	if err != nil {
		log.Fatal(err)
	}
	if err := p.RunUntilCaughtUp(context.Background()); err != nil {
		log.Fatal(err)
	}
	fmt.Println("committed", p.Stats().CommittedRecords)
	// Output: committed 50
}

// A topic that does not exist stops Run, once no broker has known it for 2s,
// with an error that names it.
func ExampleMissingInputTopics() {
	cluster, err := kfake.NewCluster(kfake.SeedTopics(1, "orders"))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	stage := pipeline.StageFunc[*kafkasink.Writer](func(context.Context, *sinks.Batch, *kafkasink.Writer) error { return nil })
	p, err := pipeline.New(kafkasink.New(), stage, pipeline.Brokers(cluster.ListenAddrs()...),
		pipeline.Group("g"), pipeline.Topics("ordres"), pipeline.InstanceID("w-1"))
	if err != nil {
		log.Fatal(err)
	}
	err = p.Run(context.Background())
	var me *sinks.MissingError
	fmt.Println(errors.As(err, &me), me.Kind, me.Name, sinks.IsPermanent(err))
	// Output: true input topic ordres true
}
