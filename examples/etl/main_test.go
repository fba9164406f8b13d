package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunEmbedded(t *testing.T) {
	cfg := defaultConfig()
	cfg.records = 5000
	cfg.instances = 3
	cfg.batch = 700
	cfg.timeout = 2 * time.Minute
	cfg.log = io.Discard
	var out bytes.Buffer
	res, err := run(context.Background(), cfg, &out)
	require.NoError(t, err, out.String())
	require.True(t, res.ok(), "%s\n%s", res.line(), out.String())
	require.Equal(t, 5000, res.in)
	require.Equal(t, res.in, res.out+res.dead)
	require.Positive(t, res.dead)
	require.Regexp(t, `^exactly-once verified: in=5000 out=\d+ dead=\d+ duplicates=0 missing=0$`, res.line())
	// Three instances joining one group abort a transaction or two; the
	// summary says why.
	if strings.Contains(out.String(), "aborted (nothing") {
		require.Contains(t, out.String(), "× rebalance: partitions moved")
	}
}

// ctrl-C says "interrupted", not that -timeout passed, and stops the run
// promptly: while producing the input and while processing it.
func TestInterrupted(t *testing.T) {
	for _, tc := range []struct {
		name, after, want string
		records           int
	}{
		{"producing", "", "interrupted while producing the input", 2_000_000},
		{"processing", "progress: ", "interrupted while processing", 500_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.records = tc.records
			cfg.log = io.Discard
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var cancelled atomic.Int64 // UnixNano of the ctrl-C
			interrupt := func() { cancelled.CompareAndSwap(0, time.Now().UnixNano()); cancel() }
			w := &cancelOn{match: tc.after, cancel: interrupt}
			if tc.after == "" {
				time.AfterFunc(300*time.Millisecond, interrupt)
			}
			_, err := run(ctx, cfg, w)
			require.NotZero(t, cancelled.Load(), "the run ended before the interrupt: %v", err)
			took := time.Since(time.Unix(0, cancelled.Load()))
			t.Logf("%v after the interrupt: %v", took, err)
			require.ErrorContains(t, err, tc.want)
			require.ErrorIs(t, err, context.Canceled)
			require.NotContains(t, err.Error(), "timeout")
			require.Less(t, took, 5*time.Second, "ctrl-C took too long to stop the run")
		})
	}
}

// cancelOn cancels when a line it is written contains match.
type cancelOn struct {
	mu     sync.Mutex
	match  string
	cancel func()
	buf    bytes.Buffer
}

func (c *cancelOn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.match != "" && bytes.Contains(p, []byte(c.match)) {
		c.cancel()
	}
	return c.buf.Write(p)
}

func TestConfigErrorsNameTheFlag(t *testing.T) {
	for _, mut := range []func(*config){
		func(c *config) { c.records = 0 },
		func(c *config) { c.partitions = -1 },
		func(c *config) { c.instances = 0 },
		func(c *config) { c.malformedPct = 101 },
		func(c *config) { c.sink = "redis" },
		func(c *config) { c.batch = 0 },
	} {
		cfg := defaultConfig()
		mut(&cfg)
		_, err := run(context.Background(), cfg, io.Discard)
		require.Error(t, err)
		require.Regexp(t, `^-\w+ `, err.Error())
	}
}
