package pgsink

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Atomic runs fn in a savepoint of the batch's transaction: if fn fails, what
// it wrote is rolled back to the savepoint and the transaction goes on. It
// implements pipeline.Atomic, which pipeline.PerRecord needs to retry or
// dead-letter a single record.
func (w *Writer) Atomic(ctx context.Context, fn func(*Writer) error) error {
	if w.err != nil {
		return w.err
	}
	gctx, done, err := w.g.enter(ctx)
	if err != nil {
		return err
	}
	sp, err := w.tx.Begin(gctx) // a savepoint
	done()
	if err != nil {
		return fmt.Errorf("pgsink: beginning a savepoint: %w", err)
	}
	if ferr := fn(&Writer{b: w.b, tx: sp, g: w.g}); ferr != nil {
		gctx, done, gerr := w.g.enter(ctx)
		if gerr != nil {
			return errors.Join(ferr, gerr)
		}
		rerr := sp.Rollback(gctx)
		done()
		if rerr != nil {
			// The transaction cannot go on; the batch fails.
			return errors.Join(ferr, fmt.Errorf("pgsink: rolling back to the savepoint: %w", rerr))
		}
		return ferr
	}
	gctx, done, err = w.g.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := sp.Commit(gctx); err != nil { // releases the savepoint
		return fmt.Errorf("pgsink: releasing the savepoint: %w", err)
	}
	return nil
}

// DeadLetterDDL is the statement that creates a dead-letter table for
// [DeadLetterTable].
func DeadLetterDDL(table pgx.Identifier) string {
	return `CREATE TABLE IF NOT EXISTS ` + table.Sanitize() + ` (
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    kafka_offset bigint      NOT NULL,
    key          bytea,
    value        bytea,
    error        text        NOT NULL,
    attempts     integer     NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, kafka_offset)
)`
}

// DeadLetterTable returns a pipeline.DeadLetterFunc that inserts a record
// that kept failing into table (created with [DeadLetterDDL]) in the batch's
// transaction, with the error, its source topic, partition and offset and the
// attempts. The primary key makes a dead letter, like every effect, exactly
// once.
func DeadLetterTable(table pgx.Identifier) func(ctx context.Context, w *Writer, r *kgo.Record, cause error, attempts int) error {
	insert := `INSERT INTO ` + table.Sanitize() + ` (topic, partition, kafka_offset, key, value, error, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7)`
	return func(ctx context.Context, w *Writer, r *kgo.Record, cause error, attempts int) error {
		msg := "unknown error"
		if cause != nil {
			msg = cause.Error()
		}
		_, err := w.Exec(ctx, insert, r.Topic, r.Partition, r.Offset, r.Key, r.Value, msg, attempts)
		return err
	}
}
