package pipeline

import (
	"errors"
	"fmt"
)

var (
	// ErrRunning is returned by Run when the pipeline is already running.
	ErrRunning = errors.New("pipeline: Run called while already running")

	// ErrStageStuck means a Stage call did not return within a grace
	// period after its context ended (its budget passed, or Run was
	// stopping): the Stage ignores its context. Its transaction was
	// aborted and Run went on (counting the failure toward StageRetries)
	// or, when stopping, returned. The stuck goroutine is left behind, and
	// what it writes later is refused. Make the Stage return when ctx is
	// done.
	ErrStageStuck = errors.New("pipeline: the stage ignores its context")
)

// StageError is a Stage failure that stopped Run: a panic, or an error that
// persisted through every retry. The batch it names was not committed; a
// restart resumes at FirstOffset.
type StageError struct {
	Topic       string
	Partition   int32
	FirstOffset int64
	LastOffset  int64
	Attempts    int    // how many times the batch was tried
	Panic       any    // the recovered value if the Stage panicked
	Stack       []byte // the stack of the panic
	Err         error
}

func (e *StageError) Error() string {
	if e.Panic != nil {
		return fmt.Sprintf("pipeline: stage panicked on %s[%d] offsets %d-%d: %v (nothing of this batch was committed)",
			e.Topic, e.Partition, e.FirstOffset, e.LastOffset, e.Panic)
	}
	return fmt.Sprintf("pipeline: stage failed on %s[%d] offsets %d-%d after %d attempts: %v (nothing of this batch was committed)",
		e.Topic, e.Partition, e.FirstOffset, e.LastOffset, e.Attempts, e.Err)
}

func (e *StageError) Unwrap() error { return e.Err }
