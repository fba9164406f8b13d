package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/exactlyonce/exactly/sinks"
)

// Stage is the business logic of a pipeline: it turns one partition's batch
// of input records into effects written through w, the sink's writer
// ([*kafkasink.Writer] in Kafka mode, [*pgsink.Writer] in Postgres
// mode).
//
// A Stage sees a batch of one partition, not one record, for three reasons:
// it can write its effects in bulk (one CopyFrom for thousands of rows in
// Postgres, pipelined produces in Kafka); the per-call cost is paid once per
// batch; and, since a batch never mixes partitions, the pipeline runs the
// batches of different partitions concurrently while order within a
// partition is kept by construction.
//
// The contract:
//
//   - Process may be called again with the same records: when a batch's
//     transaction aborts (the Stage failed on some partition, a rebalance
//     revoked partitions, a commit's outcome was unknown), the effects written
//     through w are discarded with it and the batch is polled again. Effects
//     written anywhere else (an HTTP call, a file) are not undone: keep them
//     idempotent or move them behind a sink.
//   - Returning an error aborts the whole transaction, retried with backoff;
//     after [StageRetries] failures in a row Run returns a [*StageError].
//     For a record that can never succeed, write it to a dead-letter topic or
//     table through w and return nil instead.
//   - A panic is recovered, aborts the transaction, and makes Run return a
//     [*StageError] with the panic value and stack: a panic is a bug, and
//     retrying a bug commits nothing good.
//   - Process is called concurrently for batches of different partitions,
//     never for two batches of the same partition at once.
//   - ctx is cancelled when Run stops or another partition's Stage failed;
//     return promptly, nothing will be committed.
type Stage[W any] interface {
	Process(ctx context.Context, b *sinks.Batch, w W) error
}

// StageFunc adapts a function to a [Stage].
type StageFunc[W any] func(ctx context.Context, b *sinks.Batch, w W) error

// Process calls f.
func (f StageFunc[W]) Process(ctx context.Context, b *sinks.Batch, w W) error { return f(ctx, b, w) }

// Middleware wraps a Stage with behaviour of its own.
type Middleware[W any] func(Stage[W]) Stage[W]

// Chain wraps s in mws; the first middleware is the outermost.
func Chain[W any](s Stage[W], mws ...Middleware[W]) Stage[W] {
	for i := len(mws) - 1; i >= 0; i-- {
		s = mws[i](s)
	}
	return s
}

// Timeout is middleware that bounds each Process call. A batch whose Stage
// takes longer than d fails with an error naming its partition and offsets,
// and its transaction aborts: a Stage must finish well inside the
// transaction timeout.
func Timeout[W any](d time.Duration) Middleware[W] {
	return func(next Stage[W]) Stage[W] {
		return StageFunc[W](func(ctx context.Context, b *sinks.Batch, w W) error {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			err := next.Process(ctx, b, w)
			if err != nil && ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("stage exceeded its %v timeout: %w", d, err)
			}
			return err
		})
	}
}

// Observe is middleware that calls fn after each Process call with the
// batch, how long it took and its error. Use it for metrics and logs.
func Observe[W any](fn func(b *sinks.Batch, took time.Duration, err error)) Middleware[W] {
	return func(next Stage[W]) Stage[W] {
		return StageFunc[W](func(ctx context.Context, b *sinks.Batch, w W) error {
			start := time.Now()
			err := next.Process(ctx, b, w)
			fn(b, time.Since(start), err)
			return err
		})
	}
}
