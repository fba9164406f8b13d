package sinks_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/exactlyonce/exactly/sinks"
)

func TestClassifiers(t *testing.T) {
	refusedPart := &sinks.PartitionError{Topic: "in", Partition: 1, Err: errors.New("duplicate key value violates unique constraint")}
	abortedPart := &sinks.PartitionError{Topic: "in", Partition: 0, Err: fmt.Errorf("%w: lost connection", sinks.ErrAborted)}
	tooLarge := &sinks.ProduceError{Topic: "out", Err: kerr.MessageTooLarge}
	for _, tc := range []struct {
		name             string
		err              error
		retryable, fatal bool
	}{
		{"nil", nil, false, false},
		{"aborted", sinks.ErrAborted, true, false},
		{"revoked", fmt.Errorf("x: %w", sinks.ErrRevoked), true, false},
		{"timed out", sinks.ErrTxnTimedOut, true, false},
		{"outcome unknown", sinks.ErrOutcomeUnknown, true, false},
		{"retriable kafka error", kerr.NotLeaderForPartition, true, false},
		{"deadline", context.DeadlineExceeded, true, false},
		{"canceled", context.Canceled, false, false},
		{"fenced", &sinks.FatalError{Op: "x", ID: "g:a", Err: sinks.ErrFenced}, false, true},
		{"producer fenced code", kerr.ProducerFenced, false, true},
		{"not authorized", kerr.TopicAuthorizationFailed, false, true},
		{"record refused", tooLarge, false, false},
		{"partition aborted", abortedPart, true, false},
		{"partition refused", refusedPart, false, false},
		// A refusal must not hide behind a sibling's retryable abort:
		// the same batch fails the same way, so it counts toward
		// StageRetries (joined errors used to answer "any part").
		{"refused joined with aborted", errors.Join(abortedPart, refusedPart), false, false},
		{"aborted joined with aborted", errors.Join(abortedPart, abortedPart), true, false},
		{"produce refusal joined with an abort", errors.Join(tooLarge, fmt.Errorf("%w: rebalance", sinks.ErrAborted)), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.retryable, sinks.IsRetryable(tc.err), "IsRetryable(%v)", tc.err)
			require.Equal(t, tc.fatal, sinks.IsFatal(tc.err), "IsFatal(%v)", tc.err)
		})
	}
}

func TestSentinelsWrapAborted(t *testing.T) {
	for _, e := range []error{sinks.ErrRevoked, sinks.ErrTxnTimedOut} {
		require.ErrorIs(t, e, sinks.ErrAborted)
	}
	require.NotErrorIs(t, sinks.ErrOutcomeUnknown, sinks.ErrAborted, "an unknown outcome may have committed")
}
