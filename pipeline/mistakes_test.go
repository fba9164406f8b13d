package pipeline_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// Each common mistake ends in an error from Run that names the thing and
// the fix, within seconds, with the underlying cause in the error's chain
// (issue 9). Durations are asserted loosely: the CI machine is busy.
func TestMistakesFailFastAndSayWhy(t *testing.T) {
	_, brokers := testkit.Cluster(t, 2, "in", "out")
	testkit.Produce(t, brokers, "in", 10)
	const startTimeout = 3 * time.Second
	for _, tc := range []struct {
		name    string
		brokers []string
		stage   pipeline.Stage[kw]
		opts    []pipeline.Opt
		within  time.Duration
		is      []error // errors.Is must hold for each
		text    []string
		check   func(t *testing.T, err error)
	}{{
		name:    "unreachable broker",
		brokers: []string{"127.0.0.1:1"},
		stage:   copyStage("out"),
		// StartTimeout is honoured, the backoff between attempts included.
		within: startTimeout + time.Second,
		is:     []error{syscall.ECONNREFUSED},
		text:   []string{"could not start within 3s", "127.0.0.1:1", "connection refused", "check pipeline.Brokers"},
		check: func(t *testing.T, err error) {
			var se *pipeline.StartError
			require.ErrorAs(t, err, &se)
			require.Equal(t, "127.0.0.1:1", se.Addr)
		},
	}, {
		name:  "input topic does not exist",
		stage: copyStage("out"),
		opts:  []pipeline.Opt{pipeline.Topics("in-typo")},
		// No broker knows it for missingTopicGrace (2s): a topic
		// created a moment ago would have appeared by then.
		within: 6 * time.Second,
		is:     []error{sinks.ErrPermanent, kerr.UnknownTopicOrPartition},
		text:   []string{`input topic "in-typo" does not exist`, "create it", "pipeline.Topics", "MissingTopicsWarn"},
		check: func(t *testing.T, err error) {
			var me *sinks.MissingError
			require.ErrorAs(t, err, &me)
			require.Equal(t, "in-typo", me.Name)
			require.False(t, sinks.IsRetryable(err))
		},
	}, {
		name:  "output topic does not exist",
		stage: copyStage("out-typo"),
		// kgo gives up on an unknown topic after 4 metadata answers
		// (~1s); Run stops at once, not after StageRetries.
		within: 10 * time.Second,
		is:     []error{sinks.ErrPermanent, kerr.UnknownTopicOrPartition},
		text:   []string{`output topic "out-typo" does not exist`, "create it", "never creates topics"},
		check: func(t *testing.T, err error) {
			var pe *sinks.ProduceError
			require.ErrorAs(t, err, &pe)
			require.Equal(t, "out-typo", pe.Topic)
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			bs := brokers
			if tc.brokers != nil {
				bs = tc.brokers
			}
			var logs syncBuffer
			opts := append([]pipeline.Opt{
				pipeline.StartTimeout(startTimeout),
				pipeline.Backoff(50*time.Millisecond, 5*time.Second), // the default maximum: the wait must not overrun StartTimeout
				pipeline.Logger(slog.New(slog.NewTextHandler(&logs, nil))),
			}, tc.opts...)
			p := newPipeline(t, bs, tc.stage, "w1", opts...)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := time.Now()
			err := p.Run(ctx)
			took := time.Since(start)
			t.Logf("after %v: %v", took, err)
			require.Error(t, err)
			require.Less(t, took, tc.within, "Run took too long to report %v", err)
			for _, target := range tc.is {
				require.True(t, errors.Is(err, target), "errors.Is(err, %v) is false for %v", target, err)
			}
			for _, s := range tc.text {
				require.Contains(t, err.Error(), s)
			}
			if tc.check != nil {
				tc.check(t, err)
			}
			require.Zero(t, p.Stats().CommittedRecords)
			// The user who set a logger sees the start and the stop.
			require.Contains(t, logs.String(), "pipeline starting")
		})
	}
	require.Equal(t, int64(10), lag(t, brokers, "in", "g"), "nothing may have been committed")
}

// With MissingTopicsWarn a missing input topic is a WARN line, and the
// pipeline consumes the topic once it exists.
func TestMissingInputTopicWarns(t *testing.T) {
	c, brokers := testkit.Cluster(t, 1, "out")
	var logs syncBuffer
	p := newPipeline(t, brokers, copyStage("out"), "w1",
		pipeline.MissingInputTopics(pipeline.MissingTopicsWarn),
		pipeline.Logger(slog.New(slog.NewTextHandler(&logs, nil))))
	stop, done := run(p)
	testkit.WaitFor(t, 10*time.Second, "the WARN line", func() bool {
		return strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "input topic does not exist")
	})
	select {
	case err := <-done:
		t.Fatalf("Run returned: %v", err)
	default:
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	_, err = kadm.NewClient(cl).CreateTopic(context.Background(), 1, 1, nil, "in")
	require.NoError(t, err)
	testkit.Produce(t, brokers, "in", 10)
	testkit.WaitFor(t, 30*time.Second, "the topic created later consumed", func() bool { return committed(p) == 10 })
	require.NoError(t, stop())
	_ = c
}

// The lifecycle is logged at INFO: start (brokers, group, topics,
// instance), partitions assigned and revoked, stop with the reason.
func TestLifecycleIsLogged(t *testing.T) {
	_, brokers := testkit.Cluster(t, 2, "in", "out")
	testkit.Produce(t, brokers, "in", 10)
	var logs syncBuffer
	p := newPipeline(t, brokers, copyStage("out"), "w1",
		pipeline.Logger(slog.New(slog.NewTextHandler(&logs, nil))))
	stop, _ := run(p)
	testkit.WaitFor(t, 30*time.Second, "all committed", func() bool { return committed(p) == 10 })
	require.NoError(t, stop())
	out := logs.String()
	t.Log(out)
	for _, line := range []string{
		`level=INFO msg="pipeline starting" group=g instance=w1 brokers=`,
		`topics=[in]`,
		`level=INFO msg="pipeline started`,
		`level=INFO msg="partitions assigned" group=g instance=w1 sink=kafka partitions="map[in:[0 1]]"`,
		`level=INFO msg="partitions revoked"`,
		`level=INFO msg="pipeline stopped" group=g instance=w1 committed_records=10`,
		`reason="context done"`,
	} {
		require.Contains(t, out, line)
	}
}

// A typed middleware chained onto a stage of another writer type fails each
// batch with an error naming both types instead of panicking.
func TestTypedMiddlewareOnTheWrongWriter(t *testing.T) {
	mw := pipeline.Typed(func(next pipeline.Stage[string]) pipeline.Stage[string] { return next })
	s := pipeline.Chain(copyStage("out"), mw, pipeline.Timeout(time.Second))
	err := s.Process(context.Background(), &sinks.Batch{Topic: "in"}, &kafkasink.Writer{})
	require.ErrorContains(t, err, "a middleware for writers of type string was chained onto a stage whose writer is a *kafkasink.Writer")
}
