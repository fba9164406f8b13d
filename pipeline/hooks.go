package pipeline

import (
	"time"
)

// Hook is a value that implements one or more of the Hook* interfaces below,
// found by type assertion when the pipeline is built (franz-go's kgo.Hook
// works the same way). A metrics or tracing adapter implements the ones it
// needs; the pipeline itself depends on no metrics library. Pass hooks with
// the [Hooks] option.
//
// Hooks are called synchronously from Run's goroutine, in the order they
// were given: keep them fast and never block in them. A hook must not call
// back into the pipeline.
type Hook any

// HookBatchCommitted is called after every committed transaction.
type HookBatchCommitted interface {
	OnBatchCommitted(CommitInfo)
}

// HookBatchAborted is called after every transaction that did not commit,
// with the reason. Nothing of it is visible; its records are polled again
// (or, for a Stage that keeps failing, Run returns).
type HookBatchAborted interface {
	OnBatchAborted(AbortInfo)
}

// HookPolled is called for every batch collected, before its transaction
// begins: the records that came in.
type HookPolled interface {
	OnPolled(PollInfo)
}

// PollInfo describes one collected batch.
type PollInfo struct {
	Records    int
	Bytes      int
	Partitions int
	Took       time.Duration // from the first poll to the batch being complete
}

// CommitInfo describes one committed transaction.
type CommitInfo struct {
	Records    int           // input records the transaction covered
	Bytes      int           // their keys and values
	Partitions int           // partitions it covered
	Outputs    int           // records the Stage produced (Kafka mode; 0 where the sink does not count)
	Start      time.Time     // when the batch's first poll began
	Took       time.Duration // from the first poll of the batch to the end of the commit
	Stage      time.Duration // the Stage calls, from the first start to the last end
	Commit     time.Duration // the commit alone
	// Offsets are the next offsets the transaction committed, per topic
	// and partition: where each partition resumes.
	Offsets map[string]map[int32]int64
}

// AbortReason says why a transaction did not commit.
type AbortReason string

// The reasons a transaction aborts.
const (
	// AbortRebalance: partitions were revoked or lost, or another owner
	// already committed past the batch.
	AbortRebalance AbortReason = "rebalance"
	// AbortStageError: the Stage returned an error or panicked.
	AbortStageError AbortReason = "stage_error"
	// AbortRefused: the sink refused the Stage's output (a record Kafka
	// refused, a row the database refused).
	AbortRefused AbortReason = "refused"
	// AbortTimeout: the Stage ran past its budget, or the transaction
	// timed out.
	AbortTimeout AbortReason = "timeout"
	// AbortFenced: a newer instance fenced this one.
	AbortFenced AbortReason = "fenced"
	// AbortUnknownOutcome: the commit's outcome was unknown and was
	// settled as not committed (or could not be settled yet).
	AbortUnknownOutcome AbortReason = "unknown_outcome"
	// AbortShutdown: Run's context ended while the transaction was open.
	AbortShutdown AbortReason = "shutdown"
	// AbortSinkError: the sink failed for another reason (a broker or the
	// database unreachable mid-transaction).
	AbortSinkError AbortReason = "sink_error"
)

// AbortInfo describes one transaction that did not commit.
type AbortInfo struct {
	Reason     AbortReason
	Records    int // input records the transaction covered
	Bytes      int // their keys and values
	Partitions int
	Err        error         // the cause; nil for AbortShutdown
	Start      time.Time     // when the batch's first poll began
	Took       time.Duration // from the first poll to the abort
}

// Hooks adds hooks (see [Hook]). A value that implements none of the Hook*
// interfaces is refused by New.
func Hooks(hs ...Hook) Opt {
	return opt(func(c *config) { c.hooks = append(c.hooks, hs...) })
}

// hooks is the set of hooks, sorted by interface once at New.
type hooks struct {
	committed []HookBatchCommitted
	aborted   []HookBatchAborted
	state     []HookStateChanged
	polled    []HookPolled
}

// add sorts h into the set; false if h implements no hook interface.
func (hs *hooks) add(h Hook) bool {
	ok := false
	if x, is := h.(HookBatchCommitted); is {
		hs.committed = append(hs.committed, x)
		ok = true
	}
	if x, is := h.(HookBatchAborted); is {
		hs.aborted = append(hs.aborted, x)
		ok = true
	}
	if x, is := h.(HookStateChanged); is {
		hs.state = append(hs.state, x)
		ok = true
	}
	if x, is := h.(HookPolled); is {
		hs.polled = append(hs.polled, x)
		ok = true
	}
	return ok
}

func (hs *hooks) batchCommitted(ci CommitInfo) {
	for _, h := range hs.committed {
		h.OnBatchCommitted(ci)
	}
}

func (hs *hooks) batchAborted(ai AbortInfo) {
	for _, h := range hs.aborted {
		h.OnBatchAborted(ai)
	}
}

func (hs *hooks) batchPolled(pi PollInfo) {
	for _, h := range hs.polled {
		h.OnPolled(pi)
	}
}

// commitFunc adapts the OnCommit option to a hook.
type commitFunc func(CommitInfo)

func (f commitFunc) OnBatchCommitted(ci CommitInfo) { f(ci) }
