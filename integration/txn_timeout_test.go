package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/txn"
)

// On Apache Kafka: a transaction open longer than its timeout is aborted by
// the broker, which bumps the epoch and answers the late commit as it answers
// a zombie. With no successor, the session must report a retryable timeout
// (or an unknown outcome), never a fatal fence, and commit the records again
// on its re-created client.
func TestBrokerTimeoutIsNotAFenceOnApacheKafka(t *testing.T) {
	brokers := Brokers(t)
	t.Logf("Apache Kafka %s", BrokerVersion(t, brokers))
	ctx := context.Background()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	name := fmt.Sprintf("txn-timeout-%d", time.Now().UnixNano())
	in, out, group := name+"-in", name+"-out", name
	_, err = adm.CreateTopics(ctx, 1, 1, nil, in, out)
	require.NoError(t, err)
	defer adm.DeleteTopics(context.Background(), in, out) //nolint:errcheck // best effort
	testkit.Produce(t, brokers, in, 20)

	s, err := txn.Open(ctx, txn.Config{
		ClientOpts: []kgo.Opt{kgo.SeedBrokers(brokers...), kgo.TransactionTimeout(time.Second)},
		ConsumerOpts: []kgo.Opt{kgo.ConsumerGroup(group), kgo.ConsumeTopics(in), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.SessionTimeout(45 * time.Second), kgo.InstanceID("a")},
		TransactionalID: group + ":a",
		LeaveOnClose:    true,
	})
	require.NoError(t, err)
	defer s.Close(context.Background()) //nolint:errcheck // best effort

	poll := func() []*kgo.Record {
		for {
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			fs, err := s.Poll(pctx, 1000)
			cancel()
			require.NoError(t, err)
			if rs := fs.Records(); len(rs) > 0 {
				return rs
			}
			require.NoError(t, pctx.Err(), "nothing polled")
		}
	}
	rs := poll()
	require.NoError(t, s.Begin(ctx))
	for _, r := range rs {
		s.Produce(ctx, testkit.CopyRecord(out, r), nil)
	}
	require.NoError(t, s.Flush(ctx))
	// The broker aborts it within its cleanup interval (10 s by default):
	// the output's last stable offset then reaches its high watermark.
	testkit.WaitFor(t, 60*time.Second, "the broker to abort the timed-out transaction", func() bool {
		hwm, err1 := adm.ListEndOffsets(ctx, out)
		lso, err2 := adm.ListCommittedOffsets(ctx, out)
		if err1 != nil || err2 != nil {
			return false
		}
		h, ok1 := hwm.Lookup(out, 0)
		l, ok2 := lso.Lookup(out, 0)
		return ok1 && ok2 && h.Err == nil && l.Err == nil && h.Offset > int64(len(rs)) && l.Offset == h.Offset
	})
	err = s.End(ctx, true)
	t.Logf("End after the broker's abort: %v", err)
	require.Error(t, err)
	require.False(t, sinks.IsFatal(err), "a timeout reported as fatal: %v", err)
	require.True(t, sinks.IsRetryable(err), "%v", err)

	// Everything is polled again and commits once.
	var got int
	for got < 20 {
		rs := poll()
		require.NoError(t, s.Begin(ctx))
		for _, r := range rs {
			s.Produce(ctx, testkit.CopyRecord(out, r), nil)
		}
		require.NoError(t, s.End(ctx, true))
		got += len(rs)
	}
	rep, err := verify.Check(ctx, verify.Options{ClientOpts: []kgo.Opt{kgo.SeedBrokers(brokers...)}, Input: in, Outputs: []string{out}, SourceOf: verify.SourceFromHeaders})
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep)
	require.Equal(t, 20, rep.TotalOut())
}
