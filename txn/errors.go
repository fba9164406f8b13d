package txn

import (
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/exactlyonce/exactly/sinks"
)

// The session returns the framework's error vocabulary (package sinks):
// [sinks.ErrAborted] when a commit became an abort, [sinks.ErrOutcomeUnknown]
// when the session had to be re-created, and a [*sinks.FatalError] wrapping
// [sinks.ErrFenced] or an authorization error when the instance must stop.
// [sinks.IsRetryable] and [sinks.IsFatal] classify them.

// classifyFatal wraps a fatal Kafka error of operation op.
func classifyFatal(op, id string, err error) error {
	if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) || errors.Is(err, kerr.FencedInstanceID) {
		err = fmt.Errorf("%w: %w", sinks.ErrFenced, err)
	}
	return &sinks.FatalError{Op: op, ID: id, Err: err}
}

// fencedBy is the fatal error of an instance whose place a newer one took:
// one sentence that says what happened and what to change, with the broker's
// answer in the chain.
func fencedBy(op, txnID, group, instance string, cause error) error {
	who := fmt.Sprintf("transactional id %q", txnID)
	if instance != "" {
		who = fmt.Sprintf("InstanceID %q in group %q", instance, group)
	}
	return &sinks.FatalError{Op: op, ID: txnID, Err: fmt.Errorf(
		"%w: another instance started with %s and took this one's place, so this one stopped; each running instance needs its own InstanceID: %w",
		sinks.ErrFenced, who, cause)}
}

// recreated is the error of an End whose outcome was unknown.
func recreated(err error) error {
	return fmt.Errorf("%w (the producer and consumer were discarded and re-created; the new producer's InitProducerID aborts the transaction if it was still open): %w",
		sinks.ErrOutcomeUnknown, err)
}
