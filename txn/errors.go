package txn

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
)

var (
	// ErrFenced means another producer with the same transactional id, or a
	// newer member of the consumer group, took over: this instance is a
	// zombie and must stop. It is returned wrapped in a [*FatalError].
	ErrFenced = errors.New("txn: fenced by a newer instance")

	// ErrRecreated means a transaction ended with an outcome the client
	// could not confirm (a timeout, a lost response, a broker error), so the
	// session discarded its producer and consumer and started new ones with
	// the same transactional id. The new producer's InitProducerID aborts
	// the old transaction if it was still open, and the new consumer starts
	// from the committed offsets, so nothing is lost or applied twice. The
	// error is retryable.
	ErrRecreated = errors.New("txn: transaction outcome unknown; session re-created")

	// ErrAborted means the transaction was aborted rather than committed,
	// for a reason that is not an error of the caller: partitions were
	// revoked or lost in a rebalance, the group generation moved on, or the
	// coordinator asked for an abort. Positions are back at the committed
	// offsets; the records will be polled again. Retryable.
	ErrAborted = errors.New("txn: transaction aborted")
)

// FatalError is an error after which the session cannot continue: the
// producer was fenced, or the client is not authorized. Op says what the
// session was doing.
type FatalError struct {
	Op              string
	TransactionalID string
	Err             error
}

func (e *FatalError) Error() string {
	return fmt.Sprintf("txn: fatal error during %s (transactional id %q): %v", e.Op, e.TransactionalID, e.Err)
}

func (e *FatalError) Unwrap() error { return e.Err }

// IsFatal reports whether err means the instance must stop: it was fenced,
// or it lacks authorization. Fatal errors are never retried by the
// framework; they are returned from Run.
func IsFatal(err error) bool {
	var fe *FatalError
	return errors.As(err, &fe) || isFatalKafka(err)
}

// IsRetryable reports whether the operation that returned err can be tried
// again on the same or a re-created session: aborts, re-creations, and
// Kafka errors that the protocol marks retriable.
func IsRetryable(err error) bool {
	if err == nil || IsFatal(err) {
		return false
	}
	if errors.Is(err, ErrAborted) || errors.Is(err, ErrRecreated) {
		return true
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	return kerr.IsRetriable(err) || errors.Is(err, context.DeadlineExceeded)
}

func isFatalKafka(err error) bool {
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

func classifyFatal(op, id string, err error) error {
	if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) || errors.Is(err, kerr.FencedInstanceID) {
		err = fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return &FatalError{Op: op, TransactionalID: id, Err: err}
}
