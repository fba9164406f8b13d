package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// topics of one run; unique per run so runs against a real cluster never
// mix.
type topics struct {
	in, out, dead, group string
}

func newTopics() topics {
	id := strconv.FormatInt(time.Now().UnixNano()%1e12, 36)
	return topics{in: "orders-" + id, out: "orders-enriched-" + id, dead: "orders-dead-" + id, group: "etl-" + id}
}

// run is the whole job: cluster, topics, input, pipelines, verification.
func run(ctx context.Context, cfg config, w io.Writer) (result, error) {
	if err := cfg.validate(); err != nil {
		return result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()

	brokers := cfg.brokerList()
	if len(brokers) == 0 {
		c, err := kfake.NewCluster(kfake.NumBrokers(3))
		if err != nil {
			return result{}, fmt.Errorf("starting the embedded cluster: %w", err)
		}
		defer c.Close()
		brokers = c.ListenAddrs()
		fmt.Fprintf(w, "embedded Kafka cluster (kfake, 3 brokers) at %v\n", brokers)
	} else {
		fmt.Fprintf(w, "Kafka cluster at %v\n", brokers)
	}
	conn := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	tp := newTopics()
	if err := createTopics(ctx, conn, cfg.partitions, tp.in, tp.out, tp.dead); err != nil {
		return result{}, err
	}

	start := time.Now()
	wantDead, err := produceInput(ctx, conn, tp.in, cfg)
	if err != nil {
		return result{}, err
	}
	fmt.Fprintf(w, "produced %d order events to %s (%d partitions, %d malformed) in %v\n",
		cfg.records, tp.in, cfg.partitions, wantDead, time.Since(start).Round(time.Millisecond))

	var m mode
	switch cfg.sink {
	case "kafka":
		m = kafkaMode{}
	default:
		m, err = newPostgresMode(ctx, cfg, tp)
		if err != nil {
			return result{}, err
		}
	}
	defer m.close()

	stopObserving, err := startObserving(&cfg, brokers, tp, w)
	if err != nil {
		return result{}, err
	}
	defer stopObserving()
	start = time.Now()
	if err := m.runPipelines(ctx, cfg, brokers, tp, w); err != nil {
		return result{}, err
	}
	took := time.Since(start)
	fmt.Fprintf(w, "processed %d events with %d instances in %v (%.0f events/s)\n",
		cfg.records, cfg.instances, took.Round(time.Millisecond), float64(cfg.records)/took.Seconds())

	res, err := m.verify(ctx, conn, tp)
	if err != nil {
		return result{}, err
	}
	res.wantDead = wantDead
	res.took = took
	return res, nil
}

// mode is where the pipeline commits: Kafka or Postgres.
type mode interface {
	runPipelines(ctx context.Context, cfg config, brokers []string, tp topics, w io.Writer) error
	verify(ctx context.Context, conn []kgo.Opt, tp topics) (result, error)
	close()
}

func createTopics(ctx context.Context, conn []kgo.Opt, partitions int, names ...string) error {
	cl, err := kgo.NewClient(conn...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopics(ctx, int32(partitions), -1, nil, names...)
	if err != nil {
		return fmt.Errorf("creating topics %v: %w", names, err)
	}
	if err := resp.Error(); err != nil {
		return fmt.Errorf("creating topics %v: %w", names, err)
	}
	return nil
}

func produceInput(ctx context.Context, conn []kgo.Opt, topic string, cfg config) (malformed int, err error) {
	cl, err := kgo.NewClient(append(conn, kgo.DefaultProduceTopic(topic), kgo.MaxBufferedRecords(20_000))...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	g := newGenerator(cfg.seed, cfg.malformedPct)
	var (
		mu       sync.Mutex
		firstErr error
	)
	for i := range cfg.records {
		k, v, bad := g.next(i)
		if bad {
			malformed++
		}
		cl.Produce(ctx, &kgo.Record{Key: k, Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return 0, fmt.Errorf("producing input: %w", err)
	}
	if firstErr != nil {
		return 0, fmt.Errorf("producing input: %w", firstErr)
	}
	return malformed, nil
}

// transform is the ETL's business logic, shared by both modes: an enriched
// event, or the validation error that sends the event to the dead letters.
func transform(r *kgo.Record) (Enriched, []byte, error) {
	e, err := Enrich(r.Value, SourceRef{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset})
	if err != nil {
		return e, nil, err
	}
	v, err := json.Marshal(e)
	return e, v, err
}

func sourceHeaders(r *kgo.Record) []kgo.RecordHeader { return kafkasink.AppendSourceHeaders(nil, r) }

type kafkaMode struct{}

func (kafkaMode) close() {}

func kafkaStage(tp topics) pipeline.Stage[*kafkasink.Writer] {
	return pipeline.StageFunc[*kafkasink.Writer](func(ctx context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
		for _, r := range b.Records {
			e, v, err := transform(r)
			if errors.Is(err, errInvalid) {
				w.DeadLetter(tp.dead, r, err)
				continue
			}
			if err != nil {
				return err
			}
			w.Produce(&kgo.Record{Topic: tp.out, Key: []byte(e.CustomerID), Value: v, Headers: sourceHeaders(r)})
		}
		return nil
	})
}

func (kafkaMode) runPipelines(ctx context.Context, cfg config, brokers []string, tp topics, w io.Writer) error {
	return runInstances(ctx, cfg, w, func(i int) (runner, error) {
		return pipeline.New(kafkasink.New(), kafkaStage(tp), pipelineOpts(cfg, brokers, tp, i)...)
	}, brokers, func(ctx context.Context, adm *kadm.Client) (int64, error) {
		return verify.GroupLag(ctx, adm, tp.in, tp.group)
	})
}

func pipelineOpts(cfg config, brokers []string, tp topics, i int) []pipeline.Opt {
	return append([]pipeline.Opt{
		pipeline.Brokers(brokers...),
		pipeline.Group(tp.group),
		pipeline.Topics(tp.in),
		pipeline.InstanceID(fmt.Sprintf("worker-%d", i)),
		pipeline.MaxRecords(cfg.batch),
		pipeline.Logger(cfg.logger().With("worker", i)),
	}, cfg.metrics.opts(i)...)
}

type runner interface {
	Run(context.Context) error
	Stats() pipeline.Stats
}

// runInstances runs cfg.instances pipelines until lag reports 0, showing
// progress, then stops them and waits for them. lag gets one admin client
// for the whole run.
func runInstances(ctx context.Context, cfg config, w io.Writer, mk func(i int) (runner, error),
	brokers []string, lag func(context.Context, *kadm.Client) (int64, error)) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	runners := make([]runner, cfg.instances)
	for i := range runners {
		r, err := mk(i)
		if err != nil {
			return err
		}
		runners[i] = r
	}
	runCtx, stop := context.WithCancel(ctx)
	errs := make(chan error, len(runners))
	for _, r := range runners {
		go func() { errs <- r.Run(runCtx) }()
	}
	finish := func() error {
		stop()
		var first error
		for range runners {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		return first
	}

	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	check := time.NewTicker(100 * time.Millisecond)
	defer check.Stop()
	total := int64(cfg.records)
	for {
		select {
		case <-ctx.Done():
			err := finish()
			return errors.Join(fmt.Errorf("run did not finish within -timeout %v: %w", cfg.timeout, ctx.Err()), err)
		case err := <-errs:
			// An instance stopped on its own: that is fatal for the run.
			errs <- err
			ferr := finish()
			if err == nil {
				err = ferr
			}
			return fmt.Errorf("a pipeline instance stopped: %w", err)
		case <-tick.C:
			var st pipeline.Stats
			for _, r := range runners {
				s := r.Stats()
				st.CommittedRecords += s.CommittedRecords
				st.CommittedTxns += s.CommittedTxns
				st.AbortedTxns += s.AbortedTxns
			}
			el := time.Since(start).Seconds()
			fmt.Fprintf(w, "progress: %d/%d events committed (%.0f%%), %.0f events/s, %d transactions, %d aborted\n",
				st.CommittedRecords, total, 100*float64(st.CommittedRecords)/float64(total),
				float64(st.CommittedRecords)/el, st.CommittedTxns, st.AbortedTxns)
		case <-check.C:
			l, err := lag(ctx, adm)
			if err == nil && l == 0 {
				return finish()
			}
		}
	}
}

func (kafkaMode) verify(ctx context.Context, conn []kgo.Opt, tp topics) (result, error) {
	rep, err := verify.Check(ctx, verify.Options{
		ClientOpts: conn,
		Input:      tp.in,
		Outputs:    []string{tp.out, tp.dead},
		SourceOf:   verify.SourceFromHeaders,
	})
	if err != nil {
		return result{}, err
	}
	return result{
		in: rep.In, out: rep.Out[tp.out], dead: rep.Out[tp.dead],
		duplicates: rep.Duplicates, missing: rep.Missing, unknown: rep.Unknown, disorder: rep.OrderViolations,
	}, nil
}
