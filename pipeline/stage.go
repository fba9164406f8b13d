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

// Middleware wraps a Stage with behaviour of its own. It works for every
// writer type, so
//
//	pipeline.Chain(stage, pipeline.Timeout(time.Second), pipeline.Observe(fn))
//
// compiles without spelling the writer type: inside a Middleware the writer
// is an any that the next Stage passes on untouched. A middleware that needs
// the writer's type (to write through it) is written as a
// func(Stage[W]) Stage[W] and adapted with [Typed].
type Middleware func(next Stage[any]) Stage[any]

// Chain wraps s in mws; the first middleware is the outermost.
func Chain[W any](s Stage[W], mws ...Middleware) Stage[W] {
	if len(mws) == 0 {
		return s
	}
	var e Stage[any] = erased[W]{s}
	for i := len(mws) - 1; i >= 0; i-- {
		e = mws[i](e)
	}
	return typed[W]{e}
}

// Typed adapts a middleware that needs the writer's type to a [Middleware].
// The result must only be chained onto a Stage[W] of the same W; on another
// one each Process call fails with an error naming both types.
func Typed[W any](mw func(next Stage[W]) Stage[W]) Middleware {
	return func(next Stage[any]) Stage[any] { return erased[W]{mw(typed[W]{next})} }
}

// erased is a Stage[W] seen as a Stage[any].
type erased[W any] struct{ s Stage[W] }

func (e erased[W]) Process(ctx context.Context, b *sinks.Batch, w any) error {
	tw, ok := w.(W)
	if !ok && w != nil {
		var want W
		return fmt.Errorf("pipeline: a middleware for writers of type %T was chained onto a stage whose writer is a %T", want, w)
	}
	return e.s.Process(ctx, b, tw)
}

// typed is a Stage[any] seen as a Stage[W].
type typed[W any] struct{ s Stage[any] }

func (t typed[W]) Process(ctx context.Context, b *sinks.Batch, w W) error {
	return t.s.Process(ctx, b, w)
}

// Timeout is middleware that bounds each Process call. A batch whose Stage
// takes longer than d fails with an error naming its partition and offsets,
// and its transaction aborts: a Stage must finish well inside the
// transaction timeout.
func Timeout(d time.Duration) Middleware {
	return func(next Stage[any]) Stage[any] {
		return StageFunc[any](func(ctx context.Context, b *sinks.Batch, w any) error {
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
func Observe(fn func(b *sinks.Batch, took time.Duration, err error)) Middleware {
	return func(next Stage[any]) Stage[any] {
		return StageFunc[any](func(ctx context.Context, b *sinks.Batch, w any) error {
			start := time.Now()
			err := next.Process(ctx, b, w)
			fn(b, time.Since(start), err)
			return err
		})
	}
}
