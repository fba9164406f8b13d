package pgsink

import (
	"context"
	"errors"
	"regexp"

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
	g   *guard // shared by the writer and its Atomic sub-writers
}

// Batch is the batch this writer writes the effects of.
func (w *Writer) Batch() *sinks.Batch { return w.b }

// Tx is the batch's transaction. Use it for any SQL: queries, upserts,
// savepoints (tx.Begin), large objects. It is nil only if the writer was
// asked for a batch its transaction does not cover; Exec, CopyFrom and SendBatch
// then return that error. Unlike the writer's own methods, calls through Tx
// are not guarded: a Stage that may outlive its budget (it ignores its
// context) must write through Exec, CopyFrom and SendBatch, which refuse to
// touch the connection once the transaction ended. Never keep Tx().Conn().
func (w *Writer) Tx() pgx.Tx { return w.tx }

// Exec runs sql with args in the batch's transaction. An error that a
// table does not exist (42P01, 3F000) comes wrapped in a [*sinks.MissingError]
// naming it: permanent, so Run stops at the first batch instead of retrying
// it StageRetries times.
func (w *Writer) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if w.err != nil {
		return pgconn.CommandTag{}, w.err
	}
	ctx, done, err := w.g.enter(ctx)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer done()
	tag, err := w.tx.Exec(ctx, sql, args...)
	return tag, missing(err)
}

// CopyFrom bulk-loads rows into table with the COPY protocol, in the
// batch's transaction: the fastest way to write thousands of rows (see
// [pgx.CopyFromRows] and [pgx.CopyFromSlice]). A missing table is a
// [*sinks.MissingError], as for Exec.
func (w *Writer) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, rows pgx.CopyFromSource) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	ctx, done, err := w.g.enter(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	n, err := w.tx.CopyFrom(ctx, table, columns, rows)
	if err != nil && table != nil {
		return n, missingTable(err, table.Sanitize())
	}
	return n, err
}

// missing makes "relation does not exist" from the Stage's SQL permanent
// (a *sinks.MissingError): the same batch fails the same way until someone
// creates the table, so Run returns at once instead of after StageRetries.
func missing(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "3F000") {
		return missingTable(err, "")
	}
	return err
}

// relationRE finds the name in Postgres' `relation "x" does not exist`.
var relationRE = regexp.MustCompile(`relation "([^"]+)"`)

// missingTable is missing for a table whose name is known.
func missingTable(err error, name string) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || (pe.Code != "42P01" && pe.Code != "3F000") {
		return err
	}
	if name == "" {
		name = pe.TableName
		if m := relationRE.FindStringSubmatch(pe.Message); name == "" && m != nil {
			name = m[1]
		}
		if name == "" {
			return err
		}
		name = `"` + name + `"`
	}
	return &sinks.MissingError{Kind: "table", Name: name, Err: err,
		Fix: "create it before the pipeline starts (the sink creates only its offsets table)"}
}

// SendBatch sends the queued queries of b in one round trip, in the
// batch's transaction. Close the results before the Stage returns.
func (w *Writer) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if w.err != nil {
		return errBatchResults{err: w.err}
	}
	ctx, done, err := w.g.enter(ctx)
	if err != nil {
		return errBatchResults{err: err}
	}
	return &guardedResults{BatchResults: w.tx.SendBatch(ctx, b), release: done}
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
