package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/sinks"
)

// RecordStage is business logic written one record at a time. Wrap it with
// [PerRecord] to get a Stage with a per-record error policy: retry a failing
// record, then dead-letter it inside the batch's transaction, or stop.
type RecordStage[W any] interface {
	ProcessRecord(ctx context.Context, r *kgo.Record, w W) error
}

// RecordFunc adapts a function to a [RecordStage].
type RecordFunc[W any] func(ctx context.Context, r *kgo.Record, w W) error

// ProcessRecord calls f.
func (f RecordFunc[W]) ProcessRecord(ctx context.Context, r *kgo.Record, w W) error {
	return f(ctx, r, w)
}

// DeadLetterFunc writes a record that kept failing to a dead-letter
// destination through the batch's writer, so it commits in the same
// transaction as the batch's other effects: kafkasink.DeadLetterTo writes a
// topic, pgsink.DeadLetterTable a table. attempts is how many times the
// record was tried.
type DeadLetterFunc[W any] func(ctx context.Context, w W, r *kgo.Record, cause error, attempts int) error

// RecordPolicy is what [PerRecord] does with a record whose processing fails.
// The zero value stops: the first failure fails the batch (its transaction
// aborts and is retried as a whole, and after StageRetries Run returns a
// *StageError naming the record).
type RecordPolicy[W any] struct {
	// Retries is how many times a failing record is tried again, within
	// the batch's transaction, before it is dead-lettered or stops the
	// batch. Each attempt's writes are all-or-nothing (see [Atomic]), so a
	// failed attempt leaves nothing behind.
	Retries int
	// Backoff is the delay before the first retry; it doubles with each
	// retry. It is spent inside the Stage's budget (80% of
	// TransactionTimeout), so keep it small. Default 10ms.
	Backoff time.Duration
	// DeadLetter, if set, receives a record that failed 1+Retries times,
	// and the batch goes on. Nil: the failure fails the batch.
	DeadLetter DeadLetterFunc[W]
}

// Atomic is implemented by writers that can make one record's writes
// all-or-nothing inside the batch's transaction: *kafkasink.Writer holds the
// records produced in fn back until fn succeeds; *pgsink.Writer runs fn in a
// savepoint. [PerRecord] needs it to retry or dead-letter a record whose
// attempt already wrote something.
//
// What the policy sees is what fn returns. In Kafka mode a record that Kafka
// itself refuses (too large, an unknown topic) is refused asynchronously, at
// commit, after PerRecord finished: that fails the whole batch (a refusal,
// counted against StageRetries), it is not dead-lettered. Keep outputs within
// the topic's max.message.bytes.
type Atomic[W any] interface {
	Atomic(ctx context.Context, fn func(W) error) error
}

// ErrNotAtomic means PerRecord was given a policy that retries or
// dead-letters, with a writer that does not implement [Atomic].
var ErrNotAtomic = errors.New("pipeline: PerRecord retries and dead-letters need a writer that implements pipeline.Atomic (kafkasink.Writer and pgsink.Writer do)")

// PerRecord turns a RecordStage into a Stage that processes a batch's
// records in order and applies policy to each record that fails. A record's
// effects, and its dead letter, commit with the batch or not at all.
func PerRecord[W any](s RecordStage[W], policy RecordPolicy[W]) Stage[W] {
	if policy.Backoff <= 0 {
		policy.Backoff = 10 * time.Millisecond
	}
	return StageFunc[W](func(ctx context.Context, b *sinks.Batch, w W) error {
		tolerant := policy.Retries > 0 || policy.DeadLetter != nil
		at, atomic := any(w).(Atomic[W])
		if tolerant && !atomic {
			return fmt.Errorf("%w (writer %T)", ErrNotAtomic, w)
		}
		for _, r := range b.Records {
			if !tolerant {
				if err := s.ProcessRecord(ctx, r, w); err != nil {
					return recordErr(r, 1, err)
				}
				continue
			}
			if err := processRecord(ctx, s, policy, at, r, w); err != nil {
				return err
			}
		}
		return nil
	})
}

func processRecord[W any](ctx context.Context, s RecordStage[W], policy RecordPolicy[W], at Atomic[W], r *kgo.Record, w W) error {
	delay := policy.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		err = at.Atomic(ctx, func(aw W) error { return s.ProcessRecord(ctx, r, aw) })
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt > policy.Retries {
			if policy.DeadLetter == nil {
				return recordErr(r, attempt, err)
			}
			if dlErr := policy.DeadLetter(ctx, w, r, err, attempt); dlErr != nil {
				return fmt.Errorf("dead-lettering record %s[%d]@%d (after %d attempts: %v): %w", r.Topic, r.Partition, r.Offset, attempt, err, dlErr)
			}
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		delay *= 2
	}
}

func recordErr(r *kgo.Record, attempts int, err error) error {
	return fmt.Errorf("record %s[%d]@%d failed (attempt %d): %w", r.Topic, r.Partition, r.Offset, attempts, err)
}
