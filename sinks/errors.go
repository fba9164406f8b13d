package sinks

import (
	"errors"
	"fmt"

	"github.com/exactlyonce/exactly/txn"
)

var (
	// ErrAborted means a transaction, or in Postgres mode one partition's
	// part of it, was rolled back for a reason that is not the stage's
	// fault: partitions were revoked, the group moved on, another owner
	// already committed the batch (a zombie was fenced), or the outcome of
	// a commit was unknown and resolved as not committed. The batches that
	// did not commit will be polled again from their committed offsets.
	ErrAborted = errors.New("sinks: transaction aborted")

	// ErrFenced means this instance was replaced and must stop. It is fatal.
	ErrFenced = txn.ErrFenced

	// ErrOutcomeUnknown marks a commit whose outcome the sink could not
	// confirm and had to resolve: the Kafka sink re-created its producer
	// (whose InitProducerID aborts the transaction if it was still open)
	// and resumes from the committed offsets; the Postgres sink re-read
	// the offsets row. Errors that wrap it also wrap ErrAborted: whatever
	// the outcome, nothing is lost or applied twice.
	ErrOutcomeUnknown = txn.ErrRecreated
)

// ProduceError is a record the Stage wrote that Kafka refused (too large,
// unknown topic, not authorized). The transaction it belonged to was
// aborted; nothing of it is visible.
type ProduceError struct {
	Topic string
	Err   error
}

func (e *ProduceError) Error() string {
	return fmt.Sprintf("sinks: producing to topic %q: %v", e.Topic, e.Err)
}

func (e *ProduceError) Unwrap() error { return e.Err }

// IsRetryable reports whether a Commit error leaves the pipeline free to go
// on: the batches were not committed and will be polled again.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrAborted) {
		return true
	}
	return txn.IsRetryable(err)
}

// IsFatal reports whether err means the instance must stop.
func IsFatal(err error) bool { return txn.IsFatal(err) }
