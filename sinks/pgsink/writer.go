package pgsink

import (
	"context"

	"github.com/exactlyonce/exactly/sinks"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Writer is how a Stage writes its effects in Postgres mode: through
// the transaction of its batch's partition, which also carries the
// partition's offset update. Everything written through it commits together
// with the offsets, or not at all.
//
// A Writer is used by one goroutine at a time (the pipeline calls
// the Stage once per batch); writers of different batches have different
// transactions and connections and may be used concurrently. Do not commit
// or roll back the transaction yourself, and close every pgx.Rows before the
// Stage returns. Effects written anywhere else than through the writer (the
// pool directly, an HTTP call) are not part of the transaction.
type Writer struct {
	b   *sinks.Batch
	tx  pgx.Tx
	err error
}

// Batch is the batch this writer writes the effects of.
func (w *Writer) Batch() *sinks.Batch { return w.b }

// Tx is the batch's transaction. Use it for any SQL: queries, upserts,
// savepoints (tx.Begin), large objects. It is nil only if the writer was
// asked for a batch its transaction does not cover; Exec, CopyFrom and SendBatch
// then return that error.
func (w *Writer) Tx() pgx.Tx { return w.tx }

// Exec runs sql with args in the batch's transaction.
func (w *Writer) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if w.err != nil {
		return pgconn.CommandTag{}, w.err
	}
	return w.tx.Exec(ctx, sql, args...)
}

// CopyFrom bulk-loads rows into table with the COPY protocol, in the
// batch's transaction: the fastest way to write thousands of rows (see
// [pgx.CopyFromRows] and [pgx.CopyFromSlice]).
func (w *Writer) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, rows pgx.CopyFromSource) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	return w.tx.CopyFrom(ctx, table, columns, rows)
}

// SendBatch sends the queued queries of b in one round trip, in the
// batch's transaction. Close the results before the Stage returns.
func (w *Writer) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if w.err != nil {
		return errBatchResults{err: w.err}
	}
	return w.tx.SendBatch(ctx, b)
}

// errBatchResults is the BatchResults of a writer that has no transaction.
// The embedded interface is nil: every method is overridden.
type errBatchResults struct {
	pgx.BatchResults
	err error
}

func (r errBatchResults) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, r.err }
func (r errBatchResults) Query() (pgx.Rows, error)         { return nil, r.err }
func (r errBatchResults) QueryRow() pgx.Row                { return errRow{r.err} }
func (r errBatchResults) Close() error                     { return r.err }
func (r errBatchResults) Tx() pgx.Tx                       { return nil }

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
