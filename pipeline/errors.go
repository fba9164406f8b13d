package pipeline

import (
	"errors"
	"fmt"
	"strings"
	"time"
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

// StartError is Run's error when the first session could not be opened
// within StartTimeout: the brokers did not answer, or kept failing. Err is
// the error of the last attempt that says more than "deadline exceeded";
// Cause, when set, is the last failed connection attempt (to Addr) as the
// dialer reported it, so errors.Is(err, syscall.ECONNREFUSED) and
// errors.As(err, **net.DNSError) work on a StartError.
type StartError struct {
	Timeout time.Duration // StartTimeout
	Brokers []string      // the seed brokers (empty when set through ClientOpts)
	Addr    string        // the broker of the last failed dial, if any
	Cause   error         // the last failed dial, if any
	Err     error         // the last attempt's error
}

// Error names the brokers, the last cause and what to check.
func (e *StartError) Error() string {
	brokers := any(e.Brokers)
	if len(e.Brokers) == 0 {
		brokers = "from ClientOpts"
	}
	msg := fmt.Sprintf("pipeline: could not start within %v (StartTimeout; brokers %v)", e.Timeout, brokers)
	if e.Cause != nil {
		msg += fmt.Sprintf(": cannot connect to broker %s: %v; check pipeline.Brokers, that the brokers run and that this host reaches them", e.Addr, e.Cause)
		if e.Err != nil && !strings.Contains(e.Err.Error(), e.Cause.Error()) {
			msg += fmt.Sprintf(" (last attempt: %v)", e.Err)
		}
		return msg
	}
	return fmt.Sprintf("%s: %v", msg, e.Err)
}

// Unwrap returns Cause and Err.
func (e *StartError) Unwrap() []error {
	var errs []error
	for _, err := range []error{e.Cause, e.Err} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
