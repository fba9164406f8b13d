package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/exactlyonce/exactly/sinks"
)

// runTxn runs the stage on batches inside one transaction and commits it.
func (p *Pipeline[W]) runTxn(ctx context.Context, sess sinks.Session[W], batches []*sinks.Batch, start time.Time) error {
	// A transaction, once begun, is ended on a context that outlives a
	// cancelled ctx, with a budget of its own: abandoning it half-way would
	// leave the client in an unknown state.
	endCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), p.cfg.txnTimeout)
	}

	tx, err := sess.Begin(ctx, batches)
	if err != nil {
		p.aborted(ctx, batches, err, start) // polled, never begun: the hooks hear of it too
		return err
	}
	// The transaction's budget counts from its start: the Stage gets 80%
	// of the transaction timeout and the commit what is left of it, so
	// that the two together never outlast the timeout after which the
	// broker aborts the transaction under us. It starts once Begin
	// returned: Begin may wait (a re-opened Kafka session waits for its
	// fence, seconds after a broker failure), and the broker's clock starts
	// only at the transaction's first write.
	txStart := time.Now()
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
		records := 0
		for _, b := range done {
			records += len(b.Records)
		}
		p.stats.records.Add(int64(records))
		p.stats.txns.Add(1)
		if err == nil {
			p.setState(StateRunning, nil)
		}
		if len(p.hooks.committed) > 0 {
			// Bytes only for the hooks: a pass over every record
			// (2% of the loop's CPU at 100 B records).
			records, bytes := size(done)
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
	records, bytes := size(batches)
	if reason == AbortShutdown {
		err = nil
	}
	p.hooks.batchAborted(AbortInfo{Reason: reason, Records: records, Bytes: bytes, Partitions: len(batches), Err: err,
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
