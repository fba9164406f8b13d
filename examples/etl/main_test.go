package main

import (
	"bytes"
	"context"
	"io"
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
