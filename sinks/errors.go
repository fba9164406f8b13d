package sinks

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
)

// The error vocabulary of exactly. Every package of the framework — the
// pipeline, the Kafka transaction session (txn), the Kafka and Postgres
// sinks — returns these sentinels and types, and [IsRetryable] and
// [IsFatal] are the one place where a failure is classified.
var (
	// ErrAborted means a transaction, or in Postgres mode one partition's
	// part of it, was rolled back for a reason that is not the Stage's
	// fault: partitions were revoked, the group moved on, another owner
	// already committed the batch (a zombie was fenced off a partition),
	// the database or a broker failed mid-transaction, or the outcome of a
	// commit was unknown and resolved as not committed. The batches that did
	// not commit are polled again from their committed offsets. Retryable.
	ErrAborted = errors.New("sinks: transaction aborted")

	// ErrRevoked is the [ErrAborted] of a rebalance: the transaction's
	// partitions were revoked or lost, the group's generation moved on, or
	// another owner already committed past the batch. Errors that wrap it
	// wrap ErrAborted too. Retryable.
	ErrRevoked = fmt.Errorf("%w: partitions were revoked or moved to another owner", ErrAborted)

	// ErrTxnTimedOut is the [ErrAborted] of a transaction that was open
	// longer than the transaction timeout, so the broker aborted it (and
	// bumped the producer epoch: the broker answers PRODUCER_FENCED or
	// INVALID_PRODUCER_EPOCH, as it does to a zombie). With no successor in
	// sight the session is re-created and the pipeline goes on. Retryable.
	ErrTxnTimedOut = fmt.Errorf("%w: the transaction timed out", ErrAborted)

	// ErrOutcomeUnknown marks a commit whose outcome the sink could not
	// confirm (a timeout, a lost response) and had to settle: the Kafka
	// sink re-creates its session, whose InitProducerID aborts the
	// transaction if it was still open, and resumes from the committed
	// offsets; the Postgres sink asks the database (pg_xact_status, the
	// offsets row). Whatever the outcome, nothing is lost or applied twice.
	// Retryable.
	ErrOutcomeUnknown = errors.New("sinks: commit outcome unknown")

	// ErrFenced means a newer instance took this instance's place (the
	// same instance id, a newer producer epoch of its transactional id):
	// this instance is a zombie and must stop. It comes wrapped in a
	// [*FatalError].
	ErrFenced = errors.New("sinks: fenced by a newer instance")

	// ErrPermanent marks a condition that retrying cannot heal and that is
	// not the fault of one batch: a topic or table the pipeline needs does
	// not exist, a table lacks a column. Nothing of the failed transaction
	// committed. [IsRetryable] is false for it and Run returns it at once
	// (see [IsPermanent]) instead of retrying until StartTimeout or
	// forever. The error wrapping it names the resource and the fix; a
	// [*MissingError] is the usual form.
	ErrPermanent = errors.New("sinks: permanent error")
)

// MissingError is a topic or table the pipeline needs that does not exist:
// an input topic, an output topic the Stage produced to, the offsets table.
// It is permanent (errors.Is(err, [ErrPermanent]) is true): exactly never
// creates topics or tables itself, so waiting does not help. Kind says what
// is missing, Name names it, Fix says what to do, and Err is the cause as
// the broker or database reported it (it may be nil).
type MissingError struct {
	Kind string // "input topic", "output topic", "offsets table"
	Name string // the topic, or the quoted table name
	Fix  string // what to do about it
	Err  error  // the underlying cause, for errors.Is / errors.As
}

// Error names the missing resource and the fix.
func (e *MissingError) Error() string {
	msg := fmt.Sprintf("%s %s does not exist: %s", e.Kind, quoteName(e.Name), e.Fix)
	if e.Err != nil {
		msg += " (" + e.Err.Error() + ")"
	}
	return msg
}

// Unwrap returns Err.
func (e *MissingError) Unwrap() error { return e.Err }

// Is makes a MissingError match [ErrPermanent].
func (e *MissingError) Is(target error) bool { return target == ErrPermanent }

// quoteName quotes a topic name; a table name comes quoted already.
func quoteName(s string) string {
	if len(s) > 0 && s[0] == '"' {
		return s
	}
	return fmt.Sprintf("%q", s)
}

// IsPermanent reports whether err is a condition that retrying cannot heal
// (it wraps [ErrPermanent]): a missing topic or table. Run returns such
// errors at once. A permanent error is neither retryable nor fatal: the
// instance did nothing wrong and may be started again once the cause is
// fixed.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// FatalError is a failure after which the instance cannot go on: it was
// fenced by a successor, or it is not authorized. Op says what it was doing
// and ID names the instance (its transactional id in Kafka mode, its group
// instance id in Postgres mode).
type FatalError struct {
	Op  string
	ID  string
	Err error
}

// Error names what failed, for which instance, and why.
func (e *FatalError) Error() string {
	return fmt.Sprintf("fatal error during %s (instance %q): %v", e.Op, e.ID, e.Err)
}

// Unwrap returns Err.
func (e *FatalError) Unwrap() error { return e.Err }

// ProduceError is a record the Stage wrote that Kafka refused (too large,
// unknown topic, not authorized). The transaction it belonged to was
// aborted; nothing of it is visible.
type ProduceError struct {
	Topic string
	Err   error
}

// Error names the topic and why Kafka refused the record.
func (e *ProduceError) Error() string {
	return fmt.Sprintf("sinks: producing to topic %q: %v", e.Topic, e.Err)
}

// Unwrap returns Err.
func (e *ProduceError) Unwrap() error { return e.Err }

// PartitionError is the failure of one partition's part of a commit (the
// Postgres sink commits each partition on its own). Nothing of that
// partition's batch was committed — its effects and its offset rolled back
// together — and its position is back at its committed offset, so the batch
// is polled again. Err says why; an Err wrapping [ErrAborted] is not the
// Stage's fault.
type PartitionError struct {
	Topic       string
	Partition   int32
	FirstOffset int64
	LastOffset  int64
	Err         error
}

// Error names the partition and the offsets that did not commit, and why.
func (e *PartitionError) Error() string {
	return fmt.Sprintf("%s[%d] offsets %d-%d not committed: %v",
		e.Topic, e.Partition, e.FirstOffset, e.LastOffset, e.Err)
}

// Unwrap returns Err.
func (e *PartitionError) Unwrap() error { return e.Err }

// ConfigError is a configuration value that a constructor (pipeline.New,
// pgsink.New) refused. It never connects to anything to find out.
type ConfigError struct {
	Option string // the option, package-qualified: "pipeline.MaxRecords"
	Value  any    // the offending value
	Reason string // why it is refused and what to do instead
}

// Error names the option, the value and why it was refused.
func (e *ConfigError) Error() string {
	return fmt.Sprintf("exactly: invalid %s %v: %s", e.Option, e.Value, e.Reason)
}

// IsRetryable reports whether a failed transaction leaves the pipeline free
// to go on: nothing of it committed and its batches will be polled again,
// and trying again can succeed. It is false for fatal errors ([IsFatal]) and
// for refusals — a record Kafka refused, a partition whose output the
// database refused — even when other partitions of the same transaction
// aborted for retryable reasons: the same batch would fail the same way, so
// the pipeline counts it against StageRetries. It is false for permanent
// errors ([IsPermanent]) too.
func IsRetryable(err error) bool {
	if err == nil || IsFatal(err) || IsPermanent(err) || refused(err) {
		return false
	}
	return retryable(err)
}

// retryable is the rule for one cause, without looking for refusals.
func retryable(err error) bool {
	switch {
	case errors.Is(err, ErrPermanent):
		return false
	case errors.Is(err, ErrAborted), errors.Is(err, ErrOutcomeUnknown):
		return true
	case errors.Is(err, context.Canceled):
		return false
	}
	return kerr.IsRetriable(err) || errors.Is(err, context.DeadlineExceeded)
}

// refused reports whether any *ProduceError or *PartitionError in err's tree
// failed for a reason that is not retryable.
func refused(err error) bool {
	switch e := err.(type) {
	case nil:
		return false
	case *ProduceError:
		return !retryable(e.Err)
	case *PartitionError:
		return !retryable(e.Err)
	case interface{ Unwrap() []error }:
		for _, c := range e.Unwrap() {
			if refused(c) {
				return true
			}
		}
		return false
	case interface{ Unwrap() error }:
		return refused(e.Unwrap())
	}
	return false
}

// IsFatal reports whether err means the instance must stop: it was fenced by
// a newer instance, or it is not authorized. Fatal errors are never retried;
// Run returns them.
func IsFatal(err error) bool {
	var fe *FatalError
	if errors.As(err, &fe) {
		return true
	}
	switch {
	case errors.Is(err, ErrFenced),
		errors.Is(err, kerr.ProducerFenced),
		errors.Is(err, kerr.InvalidProducerEpoch),
		errors.Is(err, kerr.FencedInstanceID),
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed),
		errors.Is(err, kerr.GroupAuthorizationFailed),
		errors.Is(err, kerr.TopicAuthorizationFailed),
		errors.Is(err, kerr.ClusterAuthorizationFailed),
		errors.Is(err, kerr.SaslAuthenticationFailed),
		errors.Is(err, kerr.InvalidTransactionTimeout):
		return true
	}
	return false
}
