// Package testkit holds what the tests of several packages share: an
// in-process kfake cluster, an input producer, a copy stage that records
// where each output came from, and the verifier wiring.
package testkit

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// Cluster starts an in-process kfake cluster of three brokers with topics of
// the given partitions, closed when the test ends.
func Cluster(t testing.TB, partitions int32, topics ...string) (*kfake.Cluster, []string) {
	t.Helper()
	c, err := kfake.NewCluster(
		kfake.NumBrokers(3),
		kfake.SeedTopics(partitions, topics...),
		kfake.GroupMinSessionTimeout(100*time.Millisecond),
	)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()
}

// Produce writes n records to topic, keys k0..k(n-1), spread over its
// partitions by key, with an idempotent producer, and waits for all acks.
func Produce(t testing.TB, brokers []string, topic string, n int) {
	t.Helper()
	// A fresh topic may be missing from the first metadata answer of a
	// real broker; without a short MetadataMinAge the client waits 5s
	// before it asks again.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic), kgo.MetadataMinAge(100*time.Millisecond))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make(chan error, 1)
	for i := range n {
		r := &kgo.Record{Key: []byte("k" + strconv.Itoa(i)), Value: []byte(fmt.Sprintf("value-%d", i))}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		})
	}
	require.NoError(t, cl.Flush(ctx))
	select {
	case err := <-errs:
		require.NoError(t, err)
	default:
	}
}

// CopyRecord returns the output of src for topic out: the same key and
// value, with headers naming the source.
func CopyRecord(out string, src *kgo.Record) *kgo.Record {
	return &kgo.Record{Topic: out, Key: src.Key, Value: src.Value, Headers: kafkasink.AppendSourceHeaders(nil, src)}
}

// Verify checks that out holds exactly one copy of each record of in, in
// order per partition, and fails the test with the report otherwise.
func Verify(t testing.TB, brokers []string, in string, outs ...string) verify.Report {
	t.Helper()
	rep, err := verify.Check(context.Background(), verify.Options{
		ClientOpts: []kgo.Opt{kgo.SeedBrokers(brokers...)},
		Input:      in,
		Outputs:    outs,
		SourceOf:   verify.SourceFromHeaders,
		Timeout:    time.Minute,
	})
	require.NoError(t, err)
	require.True(t, rep.OK(), "verifier: %v", rep)
	t.Logf("verifier: %v", rep)
	return rep
}

// WaitFor polls cond every 10ms until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}
