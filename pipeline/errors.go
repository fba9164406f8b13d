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

// DataLossError is records of an input partition that disappeared before the
// pipeline processed them: the broker truncated the partition (an unclean
// leader election, a replica that lost unflushed data), retention deleted
// records the group had not reached, or the topic was re-created. The client
// reset the partition to ResetTo. Under the default DataLoss policy Run
// stops with it (inside a *sinks.FatalError) rather than commit past the gap
// silently; nothing after the gap was committed.
type DataLossError struct {
	Topic      string
	Partition  int32
	ConsumedTo int64 // where the pipeline was
	ResetTo    int64 // where the broker's log now lets it go on
	Err        error // kgo's *ErrDataLoss
}

// Error names the partition and the gap, and the two ways on.
func (e *DataLossError) Error() string {
	return fmt.Sprintf("pipeline: data loss on %s[%d]: the pipeline was at offset %d, the partition now resumes at %d; "+
		"records were lost before the pipeline processed them (check unclean.leader.election.enable, min.insync.replicas and retention: exactly doctor). "+
		"To accept the loss and go on, restart with pipeline.DataLoss(pipeline.DataLossContinue), or move the group's offset: %v",
		e.Topic, e.Partition, e.ConsumedTo, e.ResetTo, e.Err)
}

// Unwrap returns Err.
func (e *DataLossError) Unwrap() error { return e.Err }
