package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
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
	ctx, cancel := context.WithTimeoutCause(ctx, cfg.timeout, errTimeout)
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
	checkDurability(ctx, conn, tp, w)

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
	res.group = tp.group
	return res, nil
}

// errTimeout is the cause of the run's context when -timeout passed.
var errTimeout = errors.New("-timeout passed")

// stopped says why ctx ended: -timeout, or an interrupt (ctrl-C, SIGTERM).
func stopped(ctx context.Context, cfg config, doing string) error {
	if errors.Is(context.Cause(ctx), errTimeout) {
		return fmt.Errorf("%s did not finish within -timeout %v", doing, cfg.timeout)
	}
	return fmt.Errorf("interrupted while %s (%w)", doing, context.Cause(ctx))
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
		if ctx.Err() != nil {
			return 0, stopped(ctx, cfg, "producing the input")
		}
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
		if ctx.Err() != nil {
			return 0, stopped(ctx, cfg, "producing the input")
		}
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
		for i, r := range b.Records {
			if i%1024 == 0 && ctx.Err() != nil {
				return ctx.Err() // stopping: nothing of this batch commits anyway
			}
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
	return runInstances(ctx, cfg, w, func(i int, hooks pipeline.Hook) (runner, error) {
		return pipeline.New(kafkasink.New(), kafkaStage(tp), append(pipelineOpts(cfg, brokers, tp, i), pipeline.Hooks(hooks))...)
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
		pipeline.Outputs(tp.out, tp.dead),
		pipeline.Preflight(pipeline.PreflightOff), // run once for all instances: checkDurability
	}, cfg.metrics.opts(i)...)
}

type runner interface {
	RunUntilCaughtUp(context.Context) error
	Stats() pipeline.Stats
}

// aborts counts the transactions that did not commit, by reason, with the
// first error of each reason: a fault-free run aborts one or two (an
// instance joining the group revokes partitions mid-transaction), and the
// summary says so instead of leaving the number unexplained.
type aborts struct {
	mu    sync.Mutex
	n     map[pipeline.AbortReason]int
	first map[pipeline.AbortReason]error
}

// OnBatchAborted implements pipeline.HookBatchAborted.
func (a *aborts) OnBatchAborted(ai pipeline.AbortInfo) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == nil {
		a.n, a.first = map[pipeline.AbortReason]int{}, map[pipeline.AbortReason]error{}
	}
	a.n[ai.Reason]++
	if a.first[ai.Reason] == nil && ai.Err != nil {
		a.first[ai.Reason] = ai.Err
	}
}

// why explains the common reasons in words.
var why = map[pipeline.AbortReason]string{
	pipeline.AbortRebalance: "partitions moved while the transaction was open: an instance joined or left the group; its batches were redone by their new owner",
	pipeline.AbortShutdown:  "the run stopped with a transaction open; nothing of it was committed",
}

// summary is one line per reason, sorted.
func (a *aborts) summary() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var lines []string
	for reason, n := range a.n {
		line := fmt.Sprintf("  %d × %s", n, reason)
		if w, ok := why[reason]; ok {
			line += ": " + w
		} else if err := a.first[reason]; err != nil {
			line += ": " + err.Error()
		}
		lines = append(lines, line)
	}
	slices.Sort(lines)
	return lines
}

// runInstances runs cfg.instances pipelines until the group has caught up
// with the input, showing progress, then waits for all of them and prints
// the aborted transactions with their reasons.
func runInstances(ctx context.Context, cfg config, w io.Writer, mk func(i int, hooks pipeline.Hook) (runner, error)) error {
	var ab aborts
	runners := make([]runner, cfg.instances)
	for i := range runners {
		r, err := mk(i, &ab)
		if err != nil {
			return err
		}
		runners[i] = r
	}
	// One instance failing stops the others.
	runCtx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	errs := make(chan error, len(runners))
	for _, r := range runners {
		go func() { errs <- r.RunUntilCaughtUp(runCtx) }()
	}
	stats := func() pipeline.Stats {
		var st pipeline.Stats
		for _, r := range runners {
			s := r.Stats()
			st.CommittedRecords += s.CommittedRecords
			st.CommittedTxns += s.CommittedTxns
			st.AbortedTxns += s.AbortedTxns
		}
		return st
	}
	defer func() {
		st := stats()
		if st.AbortedTxns == 0 {
			return
		}
		fmt.Fprintf(w, "%d of %d transactions aborted (nothing of them committed; their records were processed again):\n",
			st.AbortedTxns, st.AbortedTxns+st.CommittedTxns)
		for _, l := range ab.summary() {
			fmt.Fprintln(w, l)
		}
	}()

	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	total := int64(cfg.records)
	var first error
	for pending := len(runners); pending > 0; {
		select {
		case err := <-errs:
			pending--
			if err != nil && first == nil {
				first = err
				stopAll()
			}
		case <-tick.C:
			st := stats()
			el := time.Since(start).Seconds()
			fmt.Fprintf(w, "progress: %d/%d events committed (%.0f%%), %.0f events/s, %d transactions, %d aborted\n",
				st.CommittedRecords, total, 100*float64(st.CommittedRecords)/float64(total),
				float64(st.CommittedRecords)/el, st.CommittedTxns, st.AbortedTxns)
		}
	}
	switch {
	case first == nil:
		return nil
	case ctx.Err() != nil:
		return stopped(ctx, cfg, "processing")
	}
	return fmt.Errorf("a pipeline instance stopped: %w", first)
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
