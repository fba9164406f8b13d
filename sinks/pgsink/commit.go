package pgsink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/exactlyonce/exactly/sinks"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// resolveBudget bounds the resolution of a commit whose outcome was unknown.
// It runs even if the commit's context is done: leaving the outcome
// unresolved costs a re-read before the partition commits again, never
// correctness.
const resolveBudget = 5 * time.Second

// pgTxn is one pipeline transaction: a Postgres transaction per partition.
type pgTxn struct {
	s       *pgSession
	parts   []*pgPart
	byBatch map[*sinks.Batch]*pgPart
	done    bool
}

// pgPart is one partition's batch in a pgTxn.
type pgPart struct {
	b           *sinks.Batch
	k           topicPart
	first, last int64
	ptx         *partTx
	w           *Writer

	// valid: the batch continues the partition's committed offset in
	// the session's current view (epoch); skip says why not.
	valid     bool
	skip      error
	epoch     uint64
	expectRow bool  // a row exists: the compare-and-set is an UPDATE
	expect    int64 // its next_offset
}

// Writer implements [sinks.Txn].
func (t *pgTxn) Writer(b *sinks.Batch) *Writer {
	pp := t.byBatch[b]
	if pp == nil || pp.w == nil {
		err := errors.New("pgsink: Writer called with a batch its transaction does not cover")
		if b != nil {
			err = fmt.Errorf("pgsink: Writer called with a batch (%s[%d]) its transaction does not cover", b.Topic, b.Partition)
		}
		return &Writer{b: b, err: err}
	}
	return pp.w
}

// pgResult is the outcome of one partition's commit.
type pgResult struct {
	committed bool
	err       error // why it did not commit
	unknown   bool  // the outcome could not be resolved
	// The row as re-read after a failed compare-and-set or a resolved
	// unknown outcome, if known.
	known  bool
	hasRow bool
	next   int64
}

// Commit implements [sinks.Txn]: it commits each partition's transaction, with
// its offset compare-and-set, concurrently. It returns nil only if all
// committed; otherwise the joined [*sinks.PartitionError]s of those that did not.
func (t *pgTxn) Commit(ctx context.Context) error {
	if t.done {
		return errors.New("pgsink: Commit after the transaction ended")
	}
	t.done = true
	results := make([]pgResult, len(t.parts))
	var wg sync.WaitGroup
	for i, pp := range t.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = t.commitPart(ctx, pp)
		}()
	}
	wg.Wait()
	return t.s.settle(t.parts, results)
}

func (t *pgTxn) commitPart(ctx context.Context, pp *pgPart) pgResult {
	s, p := t.s, t.s.p
	if !pp.valid {
		pp.ptx.end(ctx)
		return pgResult{err: skipped(pp.skip)}
	}
	if !s.ledger.ownsSince(pp.k, pp.epoch) {
		pp.ptx.end(ctx)
		return pgResult{err: fmt.Errorf("%w: %w", sinks.ErrRevoked, errNotOwned)}
	}
	pp.ptx.g.close() // the Stage is done with the connection; a call that outlived it is refused
	tx := pp.ptx.tx
	var (
		xid string
		err error
	)
	if pp.expectRow {
		err = tx.QueryRow(ctx, p.sql.update, s.cfg.Group, pp.k.topic, pp.k.partition, pp.expect, pp.last+1).Scan(&xid)
	} else {
		err = tx.QueryRow(ctx, p.sql.insert, s.cfg.Group, pp.k.topic, pp.k.partition, pp.last+1).Scan(&xid)
	}
	if err != nil {
		pp.ptx.end(ctx)
		if errors.Is(err, pgx.ErrNoRows) {
			r := pgResult{err: fmt.Errorf("%w: %w", sinks.ErrRevoked, errFencedByOwner)}
			r.known, r.hasRow, r.next = s.readOffset(ctx, pp.k)
			s.log.Info("offset compare-and-set lost: another owner moved the partition on; batch dropped",
				"topic", pp.k.topic, "partition", pp.k.partition, "first", pp.first, "last", pp.last,
				"expected_row", pp.expectRow, "expected_next", pp.expect, "stored_next", r.next)
			return r
		}
		return pgResult{err: classifyPgErr("updating the offset", err)}
	}
	err = tx.Commit(ctx)
	pp.ptx.ended = true
	pp.ptx.release(ctx)
	if err == nil {
		return pgResult{committed: true}
	}
	if notCommitted(err) {
		return pgResult{err: classifyPgErr("committing", err)}
	}
	s.log.Warn("commit outcome unknown; resolving it from the database",
		"topic", pp.k.topic, "partition", pp.k.partition, "first", pp.first, "last", pp.last, "err", err)
	return s.resolve(ctx, pp, xid, err)
}

// skipped is the error of a part that Begin found could not commit.
func skipped(why error) error {
	if errors.Is(why, errUnknownOutcome) {
		return fmt.Errorf("%w: %w: %w", sinks.ErrAborted, sinks.ErrOutcomeUnknown, why)
	}
	return fmt.Errorf("%w: %w", sinks.ErrRevoked, why)
}

// notCommitted reports whether a failed COMMIT certainly did not commit: the
// server answered with an error (other than one that ends the connection,
// which may come after the commit record was written), or the transaction
// had already failed. Anything else is resolved from the database.
//
// pgconn.SafeToRetry is deliberately not consulted: when the connection
// drops after COMMIT was sent, pgx v5.12 can report a "conn closed" error
// that claims SafeToRetry (MultiResultReader.NextResult drops the read
// error and the next read fails on the now-closed connection), though the
// commit may well have landed.
func notCommitted(err error) bool {
	if errors.Is(err, pgx.ErrTxCommitRollback) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		sev := pe.SeverityUnlocalized
		if sev == "" {
			sev = pe.Severity
		}
		return sev != "FATAL" && sev != "PANIC"
	}
	return false
}

// classifyPgErr wraps errors that leave the batch to be retried (a
// serialization failure, a deadlock, a lost connection) in sinks.ErrAborted.
func classifyPgErr(op string, err error) error {
	if errors.Is(err, pgx.ErrTxCommitRollback) {
		return fmt.Errorf("%s: the transaction had failed before COMMIT (did the Stage ignore an error of a statement?): %w", op, err)
	}
	if pgRetryable(err) {
		return fmt.Errorf("%w: %s: %w", sinks.ErrAborted, op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// pgRetryable reports whether err is transient: a serialization failure
// (40001), a deadlock (40P01), a lock or statement timeout, the server
// shutting down or ending the session, or a connection-level failure.
func pgRetryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "40"), // transaction rollback: 40001, 40P01
			strings.HasPrefix(pe.Code, "08"), // connection exception
			strings.HasPrefix(pe.Code, "57"), // operator intervention: 57P01 admin shutdown, 57014 canceled
			strings.HasPrefix(pe.Code, "53"), // insufficient resources: too many connections
			pe.Code == "55P03",               // lock_not_available
			pe.Code == "25P03":               // idle_in_transaction_session_timeout
			return true
		}
		return false
	}
	// Not an answer of the server: the connection failed or timed out, and
	// the transaction died with it.
	return !errors.Is(err, context.Canceled)
}

// resolve settles a commit whose outcome is unknown by asking the server
// what became of the transaction (pg_xact_status) and re-reading the
// offsets row; it never guesses. A transaction still running (its backend
// has not noticed the lost connection) is waited for and, after a while,
// terminated, so it cannot commit later unnoticed.
func (s *pgSession) resolve(ctx context.Context, pp *pgPart, xid string, cause error) pgResult {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resolveBudget)
	defer cancel()
	bo := s.p.newBackoff()
	running := 0
	for {
		status, ok, err := s.p.xactStatus(rctx, xid)
		if err == nil {
			switch {
			case ok && status == "committed":
				s.log.Info("commit outcome resolved: committed", "topic", pp.k.topic, "partition", pp.k.partition, "xid", xid)
				return pgResult{committed: true}
			case ok && status == "aborted":
				r := pgResult{err: unknownOutcome(fmt.Sprintf("commit outcome was unknown (%v); resolved: not committed", cause), cause)}
				r.known, r.hasRow, r.next = s.readOffset(rctx, pp.k)
				s.log.Info("commit outcome resolved: not committed", "topic", pp.k.topic, "partition", pp.k.partition, "xid", xid)
				return r
			case ok: // "in progress"
				running++
				if running >= 3 && pp.ptx.pid != 0 {
					if _, kerr := s.p.pool.Exec(rctx, s.p.sql.kill, pp.ptx.pid, xid); kerr != nil {
						s.log.Debug("terminating the backend of an unresolved commit", "err", kerr)
					}
				}
			default:
				// Too old for the server to know: the offsets row
				// decides. It moved to last+1 only if the batch
				// committed (here or by another owner: either way
				// its effects are in exactly once).
				if known, hasRow, next := s.readOffset(rctx, pp.k); known {
					if hasRow && next == pp.last+1 {
						return pgResult{committed: true}
					}
					return pgResult{err: unknownOutcome(fmt.Sprintf("commit outcome was unknown (%v); resolved: not committed", cause), cause),
						known: true, hasRow: hasRow, next: next}
				}
			}
		} else {
			s.log.Debug("resolving an unknown commit outcome", "err", err)
		}
		if !bo.Wait(rctx) {
			break
		}
	}
	s.log.Warn("commit outcome still unknown; the partition's offset will be re-read before it commits again",
		"topic", pp.k.topic, "partition", pp.k.partition, "xid", xid)
	return pgResult{unknown: true, err: unknownOutcome(fmt.Sprintf("%v: %v", errUnknownOutcome, cause), cause)}
}

// unknownOutcome is the error of a commit whose outcome was unknown and was
// resolved (or will be, from the offsets row) as not committed.
func unknownOutcome(msg string, cause error) error {
	return fmt.Errorf("%w: %w: %s: %w", sinks.ErrAborted, sinks.ErrOutcomeUnknown, msg, cause)
}

// readOffset reads a partition's row; known is false if it could not.
func (s *pgSession) readOffset(ctx context.Context, k topicPart) (known, hasRow bool, next int64) {
	err := s.p.pool.QueryRow(ctx, s.p.sql.loadOne, s.cfg.Group, k.topic, k.partition).Scan(&next)
	switch {
	case err == nil:
		return true, true, next
	case errors.Is(err, pgx.ErrNoRows):
		return true, false, 0
	default:
		s.log.Debug("re-reading a partition's offset", "topic", k.topic, "partition", k.partition, "err", err)
		return false, false, 0
	}
}

// settle applies the partitions' outcomes to the session: positions of the
// committed partitions stay after their batches; the others are rewound to
// their stored offsets.
func (s *pgSession) settle(parts []*pgPart, results []pgResult) error {
	errs, seeks, mirrored, rowGone := s.ledger.settle(parts, results, s.mirror != nil)
	for _, pp := range rowGone {
		s.log.Warn("the partition's offsets row disappeared; resuming at the batch",
			"topic", pp.k.topic, "partition", pp.k.partition, "first", pp.first)
	}
	s.seek(seeks)
	if mirrored != nil {
		s.mirror.add(mirrored)
	}
	return errors.Join(errs...)
}

// Rollback implements [sinks.Txn].
func (t *pgTxn) Rollback(ctx context.Context) error {
	if t.done {
		return nil
	}
	t.done = true
	var wg sync.WaitGroup
	for _, pp := range t.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pp.ptx.end(ctx)
		}()
	}
	wg.Wait()
	t.s.seek(t.s.ledger.rewind(t.parts))
	return nil
}
