// Package backoff is the one retry delay of the framework: exponential from
// a minimum to a maximum, with jitter, waited on contexts. The pipeline's
// retry loop and the Postgres sink's own queries both use it.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is an exponential delay with jitter. Not safe for concurrent use;
// each retry loop owns one.
type Backoff struct {
	min, max, cur time.Duration
}

// New returns a Backoff from minDelay to maxDelay. Callers validate that
// 0 < minDelay <= maxDelay.
func New(minDelay, maxDelay time.Duration) *Backoff {
	return &Backoff{min: minDelay, max: maxDelay, cur: minDelay}
}

// Reset starts the delays again from the minimum.
func (b *Backoff) Reset() { b.cur = b.min }

// Next returns the delay to wait now, between half and all of the current
// one, and doubles the current one up to the maximum.
func (b *Backoff) Next() time.Duration {
	d := b.cur/2 + rand.N(b.cur/2+1)
	b.cur = min(b.cur*2, b.max)
	return d
}

// Wait waits the next delay. It returns false, early, when ctx or any of
// also is done.
func (b *Backoff) Wait(ctx context.Context, also ...context.Context) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	var done2 <-chan struct{}
	if len(also) > 0 {
		done2 = also[0].Done()
	}
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-done2:
		return false
	}
}

// Sleep waits d. It returns false, early, when ctx is done.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
