package sinks_test

import (
	"errors"
	"fmt"

	"github.com/exactlyonce/exactly/sinks"
)

// A missing topic or table is permanent: not retried, returned at once,
// with its name and the fix.
func ExampleMissingError() {
	err := fmt.Errorf("pipeline: %w", &sinks.MissingError{Kind: "input topic", Name: "ordres",
		Fix: "create it (exactly never creates topics) or fix pipeline.Topics"})
	fmt.Println(err)
	fmt.Println(sinks.IsPermanent(err), sinks.IsRetryable(err), sinks.IsFatal(err), errors.Is(err, sinks.ErrPermanent))
	// Output:
	// pipeline: input topic "ordres" does not exist: create it (exactly never creates topics) or fix pipeline.Topics
	// true false false true
}
