package kafkasink

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Waiting for promises with a context that ends first leaves no goroutine
// behind (the WaitGroup-based wait it replaced did: one per Commit whose
// promises were still outstanding).
func TestPendingWaitLeavesNoGoroutine(t *testing.T) {
	var p pending
	p.add()
	for range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Microsecond)
		require.ErrorIs(t, p.wait(ctx), context.DeadlineExceeded)
		cancel()
	}
	goleak.VerifyNone(t) // retries until transient goroutines (timers) are gone

	done := make(chan error, 1)
	go func() { done <- p.wait(context.Background()) }()
	p.done()
	require.NoError(t, <-done)
	require.NoError(t, p.wait(context.Background()), "nothing pending")
}

// Promises complete on kgo's goroutines while Commit waits: wait returns
// exactly when the last one is done.
func TestPendingWaitUnderConcurrentDone(t *testing.T) {
	for range 50 {
		var p pending
		const n = 200
		for range n {
			p.add()
		}
		var left atomic.Int64
		left.Store(n)
		for range n {
			go func() { left.Add(-1); p.done() }()
		}
		require.NoError(t, p.wait(context.Background()))
		require.Zero(t, left.Load(), "wait returned before every promise was done")
	}
}
