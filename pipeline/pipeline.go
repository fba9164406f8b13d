package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/backoff"
	"github.com/exactlyonce/exactly/sinks"
)

// Pipeline consumes its topics in a consumer group, runs a Stage on batches
// of records, and commits each batch's effects together with the consumer
// offsets through a Sink, so that each input record's effect happens exactly
// once. W is the sink's writer type.
type Pipeline[W any] struct {
	cfg   config
	sink  sinks.Sink[W]
	stage Stage[W]
	log   *slog.Logger

	running atomic.Bool
	stats   stats
	hooks   hooks
	state   state

	// Used by Run's goroutine only: the largest record (key and value)
	// seen, and how many polls learnt from, for sizing polls by MaxBytes.
	maxSeen, learnt int
}

// Stats are counters since New. Safe to read while Run runs.
type Stats struct {
	// CommittedRecords is the input records whose effects committed,
	// including the partitions that committed when others of the same
	// transaction did not (Postgres mode commits each partition on its
	// own), and Kafka commits whose outcome was unknown until the group's
	// committed offsets showed that they landed.
	CommittedRecords int64
	// CommittedTxns is the transactions that committed, wholly or in part.
	CommittedTxns int64
	// AbortedTxns is the transactions, or parts of them, that did not
	// commit; Aborts splits them by reason.
	AbortedTxns int64
	Aborts      map[AbortReason]int64
	// StageErrors is the failed Process calls (errors, panics, calls that
	// ran past the Stage budget).
	StageErrors int64
	// UnknownOutcomes is the commits whose outcome was unknown and was
	// settled as not committed, or could not be settled yet (counted in
	// Aborts as AbortUnknownOutcome too).
	UnknownOutcomes int64
	// DataLosses is the gaps in input partitions gone past under
	// DataLoss(DataLossContinue).
	DataLosses int64
}

// abortReasons are the reasons Stats counts, in a fixed order.
var abortReasons = [...]AbortReason{AbortRebalance, AbortStageError, AbortRefused, AbortTimeout,
	AbortFenced, AbortUnknownOutcome, AbortShutdown, AbortSinkError}

type stats struct {
	records, txns, aborts, stageErrs, unknown, dataLoss atomic.Int64
	byReason                                            [len(abortReasons)]atomic.Int64
}

func (s *stats) abort(r AbortReason) {
	s.aborts.Add(1)
	for i, x := range abortReasons {
		if x == r {
			s.byReason[i].Add(1)
		}
	}
}

// New returns a Pipeline that runs stage on the batches it consumes and
// commits through sink. It validates the configuration and returns a
// [*sinks.ConfigError] naming the bad value; it never connects.
func New[W any](sink sinks.Sink[W], stage Stage[W], opts ...Opt) (*Pipeline[W], error) {
	if sink == nil {
		return nil, &sinks.ConfigError{Option: "pipeline.sink", Value: nil, Reason: "a sink is required (kafkasink.New() or pgsink.New(...))"}
	}
	if stage == nil {
		return nil, &sinks.ConfigError{Option: "pipeline.stage", Value: nil, Reason: "a stage is required"}
	}
	cfg := defaults()
	for _, o := range opts {
		if o == nil {
			return nil, &sinks.ConfigError{Option: "pipeline.Opt", Value: nil, Reason: "nil option"}
		}
		o.apply(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("group", cfg.group, "instance", cfg.instanceID)
	pl := &Pipeline[W]{cfg: cfg, sink: sink, stage: stage, log: log}
	if cc, ok := sink.(sinks.ConfigChecker); ok {
		if err := cc.CheckConfig(pl.sessionConfig(nil)); err != nil {
			return nil, err
		}
	}
	for i, h := range cfg.hooks {
		if !pl.hooks.add(h) {
			return nil, &sinks.ConfigError{Option: "pipeline.Hooks", Value: fmt.Sprintf("hook %d (%T)", i, h),
				Reason: "implements none of the pipeline's Hook interfaces (HookBatchCommitted, HookBatchAborted, HookStateChanged, HookPolled)"}
		}
	}
	return pl, nil
}

// Stats returns the pipeline's counters.
func (p *Pipeline[W]) Stats() Stats {
	st := Stats{
		CommittedRecords: p.stats.records.Load(),
		CommittedTxns:    p.stats.txns.Load(),
		AbortedTxns:      p.stats.aborts.Load(),
		Aborts:           make(map[AbortReason]int64, len(abortReasons)),
		StageErrors:      p.stats.stageErrs.Load(),
		UnknownOutcomes:  p.stats.unknown.Load(),
		DataLosses:       p.stats.dataLoss.Load(),
	}
	for i, r := range abortReasons {
		if n := p.stats.byReason[i].Load(); n > 0 {
			st.Aborts[r] = n
		}
	}
	return st
}

// Run consumes, processes and commits until ctx is done or a fatal error
// happens. It blocks, owns every goroutine it starts, and returns only after
// all of them have finished and the consumer has left the group.
//
// Run returns nil when ctx is cancelled: a transaction in progress is
// aborted, so its batch is processed again by whichever instance owns the
// partition next. It returns a [*StageError] when the Stage panicked or kept
// failing, a fatal error (see [sinks.IsFatal]) when this instance was fenced by a
// newer one or is not authorized, a permanent error (see [sinks.IsPermanent])
// when a topic or table it needs does not exist (for an input topic, once no
// broker has known it for 2s; see [MissingInputTopics]), and a [*StartError]
// when the first session could not be opened within StartTimeout. Transient
// errors — aborted transactions, rebalances, brokers that come and go,
// commits whose outcome was unknown — are retried and logged at WARN, never
// returned. Before it joins the group, Run checks that the brokers answer and
// that the input topics exist (see [MissingInputTopics]; for sinks that
// consume from Kafka, [sinks.KafkaConsumer] — both of exactly's).
//
// Run may be called again after it returns; it may not be called twice at
// once.
func (p *Pipeline[W]) Run(ctx context.Context) (runErr error) {
	if !p.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer p.running.Store(false)
	p.setState(StateStarting, nil)
	err := p.run(ctx)
	p.setState(StateStopped, err)
	return err
}

func (p *Pipeline[W]) run(ctx context.Context) (runErr error) {
	p.logStart()
	// The preflight check refuses before anything joins the group, or,
	// when it only warns, runs beside the start so a restart is not slowed.
	if p.cfg.preflight == PreflightRefuse {
		if err := p.preflight(ctx); err != nil {
			return err
		}
	} else if p.cfg.preflight == PreflightWarn {
		done := make(chan struct{})
		go func() { defer close(done); _ = p.preflight(ctx) }()
		defer func() { <-done }()
	}
	begun := time.Now()
	sess, err := p.openFirst(ctx, &dialWatch{})
	if err != nil {
		if ctx.Err() != nil && !sinks.IsFatal(err) {
			p.log.Info("pipeline stopped before it started: context done", "err", ctx.Err())
			return nil
		}
		p.log.Error("pipeline could not start", "err", err, "took", time.Since(begun).Round(time.Millisecond))
		return err
	}
	p.setState(StateRunning, nil)
	p.log.Info("pipeline started: session open, joining the group", "took", time.Since(begun).Round(time.Millisecond))
	defer func() { p.logStop(ctx, runErr) }()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.txnTimeout)
		defer cancel()
		if cerr := sess.Close(cctx); cerr != nil {
			p.log.Warn("closing the session", "err", cerr)
		}
	}()

	var (
		failures int // consecutive failed attempts of the current batch
		retries  int // consecutive transient failures, for the log
		bo       = backoff.New(p.cfg.backoffMin, p.cfg.backoffMax)
	)
	for {
		start := time.Now()
		batches, err := p.collect(ctx, sess)
		if sinks.IsFatal(err) {
			return err // even at shutdown: the embedding program must see it
		}
		if ctx.Err() != nil {
			return nil // nothing begun: the polled records stay uncommitted
		}
		if err != nil {
			if sinks.IsPermanent(err) {
				return err
			}
			p.setState(StateRetrying, err)
			retries++
			p.log.Warn("polling failed; retrying", "err", err, "attempt", retries)
			if !bo.Wait(ctx) {
				return nil
			}
			continue
		}
		if len(batches) == 0 {
			continue
		}
		if len(p.hooks.polled) > 0 {
			records, bytes := size(batches)
			p.hooks.batchPolled(PollInfo{Records: records, Bytes: bytes, Partitions: len(batches), Took: time.Since(start)})
		}

		err = p.runTxn(ctx, sess, batches, start)
		switch {
		case err == nil:
			failures, retries = 0, 0
			bo.Reset()
			continue
		case sinks.IsFatal(err):
			return err // checked before ctx: a fatal error at shutdown is not swallowed
		case ctx.Err() != nil:
			var se *StageError
			if errors.As(err, &se) && (se.Panic != nil || errors.Is(se, ErrStageStuck)) {
				return se // a bug, or a Stage that ignored the shutdown: say so
			}
			return nil
		case sinks.IsPermanent(err): // a missing topic or table: retrying cannot help
			if se := (*StageError)(nil); errors.As(err, &se) {
				se.Attempts = failures + 1
			}
			return err
		}
		retries++
		var (
			se *StageError
			pe *sinks.ProduceError
			te *sinks.PartitionError
		)
		switch {
		case errors.As(err, &se):
			failures++
			se.Attempts = failures
			if se.Panic != nil || failures > p.cfg.stageRetries {
				return se
			}
			p.log.Warn("stage failed; transaction aborted, retrying", "err", err, "attempt", failures)
		case (errors.As(err, &pe) || errors.As(err, &te)) && !sinks.IsRetryable(err):
			// The sink refused the Stage's output (a record too large, a
			// constraint the database rejects): the same batch fails
			// the same way, so it counts toward StageRetries too.
			failures++
			if failures > p.cfg.stageRetries {
				return fmt.Errorf("pipeline: the sink refused the batch's output %d times in a row (nothing of it was committed): %w", failures, err)
			}
			p.log.Warn("the sink refused the batch's output; transaction aborted, retrying", "err", err, "attempt", failures)
		default:
			// A rebalance is how a group works (an instance joined or
			// left); anything else means something is wrong.
			level := slog.LevelWarn
			if reason := abortReason(ctx, err); reason == AbortRebalance {
				level = slog.LevelInfo
			}
			p.log.Log(ctx, level, "transaction not committed; retrying from the committed offsets",
				"reason", abortReason(ctx, err), "err", err, "attempt", retries)
		}
		if !bo.Wait(ctx) {
			return nil
		}
	}
}

// sessionConfig is what the sink's Open gets; dw, when set, watches the
// clients' dials for the StartError.
func (p *Pipeline[W]) sessionConfig(dw *dialWatch) sinks.SessionConfig {
	opts := p.cfg.connOpts()
	if dw != nil {
		opts = append(opts, kgo.WithHooks(dw))
	}
	return sinks.SessionConfig{
		ClientOpts:   opts,
		ConsumerOpts: p.cfg.consumerOpts(),
		Group:        p.cfg.group,
		InstanceID:   p.cfg.instanceID,
		StaticMember: p.cfg.static,
		Logger:       p.log,

		TransactionTimeout: p.cfg.txnTimeout,
	}
}
