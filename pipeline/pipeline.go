package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
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
// at once when a topic or table it needs does not exist, and a [*StartError]
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

// pollSize is how many records the next poll of a batch may take, so that
// the batch stays within MaxRecords and MaxBytes. kgo bounds a poll by count
// only, so the count comes from the largest record (key and value) seen so
// far. While the pipeline is young (its first learnPolls polls) a batch's
// polls also grow from one record, doubling, because the first records may be
// smaller than the ones that follow. A batch exceeds MaxBytes by less than
// one record, unless a record larger than any seen before arrives in its
// last poll.
func (p *Pipeline[W]) pollSize(n, size int, chunk *int) int {
	if p.maxSeen == 0 {
		return 1 // nothing seen yet: learn the size from one record
	}
	want := min(p.cfg.maxRecords-n, max(1, (p.cfg.maxBytes-size)/p.maxSeen))
	if p.learnt < learnPolls {
		p.learnt++
		*chunk = max(1, min(want, *chunk*2))
		return *chunk
	}
	return want
}

// learnPolls is how many polls size their batches cautiously (see pollSize).
const learnPolls = 64

// collect polls one batch per partition, bounded by MaxRecords, MaxBytes
// and MaxWait after the first record.
func (p *Pipeline[W]) collect(ctx context.Context, sess sinks.Session[W]) ([]*sinks.Batch, error) {
	var (
		batches []*sinks.Batch
		index   = map[tp]int{}
		n, size int
		timer   *time.Timer
	)
	// waitCtx ends MaxWait after the first record arrived.
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	chunk := 0 // records asked for by the last poll
	for n < p.cfg.maxRecords && size < p.cfg.maxBytes {
		fs, err := sess.Poll(waitCtx, p.pollSize(n, size, &chunk))
		if err != nil {
			if n > 0 && !sinks.IsFatal(err) {
				// Never drop what was polled: a later commit
				// would move the offsets past it.
				break
			}
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		for _, fe := range fs.Errors() {
			if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
				continue
			}
			if errors.Is(fe.Err, kgo.ErrClientClosed) {
				return nil, fmt.Errorf("pipeline: client closed while polling: %w", fe.Err)
			}
			if err := p.fetchError(fe); err != nil {
				// Nothing of this poll is begun or committed: Run
				// returns and the session closes.
				return nil, err
			}
		}
		fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
			if len(ftp.Records) == 0 {
				return
			}
			k := tp{ftp.Topic, ftp.Partition}
			i, ok := index[k]
			if !ok {
				i = len(batches)
				index[k] = i
				batches = append(batches, &sinks.Batch{Topic: ftp.Topic, Partition: ftp.Partition})
			}
			batches[i].Records = append(batches[i].Records, ftp.Records...)
			for _, r := range ftp.Records {
				rs := len(r.Key) + len(r.Value)
				size += rs
				if rs > p.maxSeen {
					p.maxSeen = rs
				}
			}
			n += len(ftp.Records)
		})
		if n > 0 && timer == nil {
			timer = time.AfterFunc(p.cfg.maxWait, cancel)
		}
		if waitCtx.Err() != nil {
			break
		}
	}
	return batches, nil
}

// fetchError decides what a partition's fetch error means: authorization
// failures and, by default, data loss stop the pipeline with a fatal error
// that says what to change; everything else kgo retries itself, so it is
// logged and the loop goes on.
func (p *Pipeline[W]) fetchError(fe kgo.FetchError) error {
	var dl *kgo.ErrDataLoss
	switch {
	case errors.Is(fe.Err, kerr.TopicAuthorizationFailed):
		return &sinks.FatalError{Op: "fetch", ID: p.cfg.instanceID, Err: fmt.Errorf(
			"not authorized to read topic %q (grant the principal Read on it): %w", fe.Topic, fe.Err)}
	case errors.Is(fe.Err, kerr.GroupAuthorizationFailed):
		return &sinks.FatalError{Op: "fetch", ID: p.cfg.instanceID, Err: fmt.Errorf(
			"not authorized for consumer group %q (grant the principal Read on the group): %w", p.cfg.group, fe.Err)}
	case sinks.IsFatal(fe.Err):
		return &sinks.FatalError{Op: "fetch", ID: p.cfg.instanceID, Err: fmt.Errorf("topic %q partition %d: %w", fe.Topic, fe.Partition, fe.Err)}
	case errors.As(fe.Err, &dl):
		loss := &DataLossError{Topic: dl.Topic, Partition: dl.Partition, ConsumedTo: dl.ConsumedTo, ResetTo: dl.ResetTo, Err: fe.Err}
		if p.cfg.dataLoss == DataLossContinue {
			p.stats.dataLoss.Add(1)
			p.log.Error("data loss: records the pipeline had not processed are gone from the topic; going on from where the consumer was reset (DataLoss policy: continue)",
				"topic", dl.Topic, "partition", dl.Partition, "consumed_to", dl.ConsumedTo, "reset_to", dl.ResetTo, "err", fe.Err)
			return nil
		}
		return &sinks.FatalError{Op: "fetch", ID: p.cfg.instanceID, Err: loss}
	}
	p.log.Warn("fetch error; the client retries it", "topic", fe.Topic, "partition", fe.Partition, "err", fe.Err)
	return nil
}

type tp struct {
	topic     string
	partition int32
}

// runTxn runs the stage on batches inside one transaction and commits it.
func (p *Pipeline[W]) runTxn(ctx context.Context, sess sinks.Session[W], batches []*sinks.Batch, start time.Time) error {
	// A transaction, once begun, is ended on a context that outlives a
	// cancelled ctx, with a budget of its own: abandoning it half-way would
	// leave the client in an unknown state.
	endCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), p.cfg.txnTimeout)
	}

	// The transaction's budget counts from its start: the Stage gets 80%
	// of the transaction timeout and the commit what is left of it, so
	// that the two together never outlast the timeout after which the
	// broker aborts the transaction under us.
	txStart := time.Now()
	tx, err := sess.Begin(ctx, batches)
	if err != nil {
		return err
	}
	rollback := func() error {
		rctx, cancel := endCtx()
		defer cancel()
		rerr := tx.Rollback(rctx) // a no-op after Commit or a first Rollback
		if rerr != nil && !sinks.IsRetryable(rerr) && !sinks.IsFatal(rerr) {
			p.log.Warn("rolling the transaction back", "err", rerr)
		}
		return rerr
	}
	defer rollback()

	// The Stage must finish well inside the transaction timeout, or the
	// broker aborts the transaction under it. Past the stage budget the
	// batch fails like any Stage error: retried, and after StageRetries
	// failures returned from Run, instead of retried forever.
	sctx, cancel := context.WithDeadline(ctx, txStart.Add(p.stageBudget()))
	stageStart := time.Now()
	err = p.process(sctx, tx, batches)
	stageTook := time.Since(stageStart)
	serr := sctx.Err() // before cancel, which would make it Canceled
	cancel()
	if err == nil && ctx.Err() == nil && serr != nil {
		err = serr
	}
	if err != nil && ctx.Err() == nil && errors.Is(serr, context.DeadlineExceeded) {
		err = p.tooSlow(batches, err)
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		if rerr := rollback(); sinks.IsFatal(rerr) {
			err = rerr // fenced while aborting: that is what Run must report
		}
		p.aborted(ctx, batches, err, start)
		return err
	}
	commitStart := time.Now()
	cctx, cancelCommit := context.WithDeadline(context.WithoutCancel(ctx), txStart.Add(p.cfg.txnTimeout))
	err = tx.Commit(cctx)
	cancelCommit()
	done, failed := batches, []*sinks.Batch(nil)
	if err != nil {
		done, failed = splitCommit(batches, err)
		p.aborted(ctx, failed, err, start)
	}
	if len(done) > 0 {
		records, bytes := size(done)
		p.stats.records.Add(int64(records))
		p.stats.txns.Add(1)
		if err == nil {
			p.setState(StateRunning, nil)
		}
		if len(p.hooks.committed) > 0 {
			ci := CommitInfo{Records: records, Bytes: bytes, Partitions: len(done),
				Start: start, Took: time.Since(start), Stage: stageTook, Commit: time.Since(commitStart),
				Offsets: sinks.NextOffsets(done)}
			if oc, ok := tx.(sinks.OutputCounter); ok && err == nil {
				ci.Outputs = oc.Outputs()
			}
			p.hooks.batchCommitted(ci)
		}
	}
	return err
}

// splitCommit tells, after a failed Commit, which batches committed all the
// same: a sink that commits partitions on their own names each partition that
// did not commit with a *sinks.PartitionError, and the others committed.
// Without PartitionErrors nothing committed.
func splitCommit(batches []*sinks.Batch, err error) (done, failed []*sinks.Batch) {
	named := map[tp]bool{}
	var walk func(error)
	walk = func(e error) {
		switch x := e.(type) {
		case nil:
		case *sinks.PartitionError:
			named[tp{x.Topic, x.Partition}] = true
		case interface{ Unwrap() []error }:
			for _, c := range x.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			walk(x.Unwrap())
		}
	}
	walk(err)
	if len(named) == 0 {
		return nil, batches
	}
	for _, b := range batches {
		if named[tp{b.Topic, b.Partition}] {
			failed = append(failed, b)
		} else {
			done = append(done, b)
		}
	}
	return done, failed
}

// size counts the records of batches and their keys' and values' bytes.
func size(batches []*sinks.Batch) (records, bytes int) {
	for _, b := range batches {
		records += len(b.Records)
		for _, r := range b.Records {
			bytes += len(r.Key) + len(r.Value)
		}
	}
	return records, bytes
}

// aborted counts a transaction that did not commit and tells the hooks why.
func (p *Pipeline[W]) aborted(ctx context.Context, batches []*sinks.Batch, err error, start time.Time) {
	reason := abortReason(ctx, err)
	p.stats.abort(reason)
	if reason == AbortUnknownOutcome {
		p.stats.unknown.Add(1)
	}
	switch reason {
	case AbortShutdown:
	case AbortRebalance:
		p.setState(StateRebalancing, err)
	default:
		p.setState(StateRetrying, err)
	}
	if len(p.hooks.aborted) == 0 {
		return
	}
	records, _ := size(batches)
	if reason == AbortShutdown {
		err = nil
	}
	p.hooks.batchAborted(AbortInfo{Reason: reason, Records: records, Partitions: len(batches), Err: err,
		Start: start, Took: time.Since(start)})
}

// abortReason classifies why a transaction did not commit.
func abortReason(ctx context.Context, err error) AbortReason {
	var se *StageError
	switch {
	case ctx.Err() != nil:
		return AbortShutdown
	case errors.Is(err, sinks.ErrFenced):
		return AbortFenced
	case errors.As(err, &se):
		if errors.Is(se.Err, context.DeadlineExceeded) {
			return AbortTimeout
		}
		return AbortStageError
	case errors.Is(err, sinks.ErrOutcomeUnknown):
		return AbortUnknownOutcome
	case errors.Is(err, sinks.ErrTxnTimedOut):
		return AbortTimeout
	case errors.Is(err, sinks.ErrRevoked):
		return AbortRebalance
	case !sinks.IsRetryable(err) && !sinks.IsFatal(err):
		var (
			pe *sinks.ProduceError
			te *sinks.PartitionError
		)
		if errors.As(err, &pe) || errors.As(err, &te) {
			return AbortRefused
		}
	case errors.Is(err, context.DeadlineExceeded):
		return AbortTimeout
	}
	return AbortSinkError
}

// stageBudget is how long the Stage may take on one transaction's batches:
// 80% of the transaction timeout, leaving the rest for the commit.
func (p *Pipeline[W]) stageBudget() time.Duration { return p.cfg.txnTimeout * 4 / 5 }

// tooSlow turns the failure of a batch whose Stage ran out of its budget
// into a StageError that says so.
func (p *Pipeline[W]) tooSlow(batches []*sinks.Batch, err error) error {
	var se *StageError
	cause := err
	if errors.As(err, &se) {
		cause = se.Err // wrap what the StageError held, never the StageError itself (a cycle)
	} else {
		b := batches[0]
		se = &StageError{Topic: b.Topic, Partition: b.Partition, FirstOffset: b.FirstOffset(), LastOffset: b.LastOffset()}
		p.stats.stageErrs.Add(1) // safeProcess counted the others
	}
	if !errors.Is(cause, context.DeadlineExceeded) {
		cause = fmt.Errorf("%w (%w)", cause, context.DeadlineExceeded)
	}
	se.Err = fmt.Errorf("the stage ran past its budget of %v (80%% of the transaction timeout %v); lower MaxRecords or raise TransactionTimeout: %w",
		p.stageBudget(), p.cfg.txnTimeout, cause)
	return se
}

// process runs the stage on each batch, up to Concurrency at once; the first
// failure cancels the others. ctx carries the Stage budget. A Stage that
// ignores its context cannot hold Run hostage: once ctx ends (the budget
// passed, or Run is stopping) process logs the batches still running at once,
// waits a grace period (the commit's share of the transaction timeout) and
// then returns an error wrapping [ErrStageStuck] that names them. The
// transaction is then rolled back, and the stuck calls' writers refuse
// anything they write later.
func (p *Pipeline[W]) process(ctx context.Context, tx sinks.Txn[W], batches []*sinks.Batch) error {
	tr := &tracker{running: map[*sinks.Batch]time.Time{}}
	done := make(chan error, 1)
	go func() { done <- p.processAll(ctx, tx, batches, tr) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	stuck := tr.snapshot()
	grace := p.cfg.txnTimeout - p.stageBudget()
	for _, b := range stuck {
		p.log.Warn("the stage is still running after its context ended (budget passed or shutdown); it must return when ctx is done",
			"topic", b.Topic, "partition", b.Partition, "first", b.FirstOffset(), "last", b.LastOffset(),
			"cause", context.Cause(ctx), "grace", grace)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
	}
	stuck = tr.snapshot()
	if len(stuck) == 0 {
		return <-done // finished just now
	}
	b := stuck[0]
	p.stats.stageErrs.Add(1)
	return &StageError{
		Topic: b.Topic, Partition: b.Partition, FirstOffset: b.FirstOffset(), LastOffset: b.LastOffset(),
		Err: fmt.Errorf("%w: %d partition(s) still running %v after the context ended; the transaction was aborted: %w",
			ErrStageStuck, len(stuck), grace, context.Cause(ctx)),
	}
}

// tracker records which batches' Stage calls are running.
type tracker struct {
	mu      sync.Mutex
	running map[*sinks.Batch]time.Time
}

func (t *tracker) start(b *sinks.Batch) {
	t.mu.Lock()
	t.running[b] = time.Now()
	t.mu.Unlock()
}

func (t *tracker) end(b *sinks.Batch) {
	t.mu.Lock()
	delete(t.running, b)
	t.mu.Unlock()
}

// snapshot is the running batches, longest running first.
func (t *tracker) snapshot() []*sinks.Batch {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*sinks.Batch, 0, len(t.running))
	for b := range t.running {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return t.running[out[i]].Before(t.running[out[j]]) })
	return out
}

// processAll runs the stage on each batch, up to Concurrency at once.
func (p *Pipeline[W]) processAll(ctx context.Context, tx sinks.Txn[W], batches []*sinks.Batch, tr *tracker) error {
	call := func(ctx context.Context, b *sinks.Batch, w W) error {
		tr.start(b)
		defer tr.end(b)
		return p.safeProcess(ctx, b, w)
	}
	if len(batches) == 1 || p.cfg.concurrency == 1 {
		for _, b := range batches {
			if err := call(ctx, b, tx.Writer(b)); err != nil {
				return err
			}
		}
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		sem      = make(chan struct{}, p.cfg.concurrency)
		errOnce  sync.Once
		firstErr error
	)
	for _, b := range batches {
		w := tx.Writer(b)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := call(ctx, b, w); err != nil {
				errOnce.Do(func() { firstErr = err; cancel() })
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// safeProcess calls the stage, turning errors and panics into StageErrors.
func (p *Pipeline[W]) safeProcess(ctx context.Context, b *sinks.Batch, w W) (err error) {
	defer func() {
		if v := recover(); v != nil {
			p.stats.stageErrs.Add(1)
			err = &StageError{
				Topic: b.Topic, Partition: b.Partition,
				FirstOffset: b.FirstOffset(), LastOffset: b.LastOffset(),
				Panic: v, Stack: debug.Stack(),
				Err: fmt.Errorf("panic: %v", v),
			}
		}
	}()
	if err := p.stage.Process(ctx, b, w); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return err // cancelled because of another failure or shutdown
		}
		p.stats.stageErrs.Add(1)
		return &StageError{
			Topic: b.Topic, Partition: b.Partition,
			FirstOffset: b.FirstOffset(), LastOffset: b.LastOffset(),
			Err: err,
		}
	}
	return nil
}
