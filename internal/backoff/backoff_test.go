package backoff

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNextDoublesWithJitterUpToMax(t *testing.T) {
	b := New(10*time.Millisecond, 40*time.Millisecond)
	for _, cur := range []time.Duration{10, 20, 40, 40} {
		d := b.Next()
		require.GreaterOrEqual(t, d, cur*time.Millisecond/2)
		require.LessOrEqual(t, d, cur*time.Millisecond)
	}
	b.Reset()
	require.LessOrEqual(t, b.Next(), 10*time.Millisecond)
}

func TestWaitEndsWithEitherContext(t *testing.T) {
	b := New(time.Hour, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.False(t, b.Wait(ctx))
	require.False(t, b.Wait(context.Background(), ctx))
	require.True(t, New(time.Nanosecond, time.Nanosecond).Wait(context.Background()))
}

func TestSleepEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.False(t, Sleep(ctx, time.Hour))
	require.True(t, Sleep(context.Background(), time.Nanosecond))
}
