package chaos

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKafkaProxyDropsEndTxn runs a transactional producer through the
// KafkaProxy on an in-process cluster: every request must reach the broker
// (the producer works through it), every second EndTxn answer must be
// dropped, and OnRequest must see the EndTxn requests with the broker they
// went to.
func TestKafkaProxyDropsEndTxn(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	require.NoError(t, err)
	defer c.Close()
	var seen atomic.Int64
	p := &KafkaProxy{Targets: c.ListenAddrs(), DropEndTxnEvery: 2, OnRequest: func(target int, key int16) {
		if key == apiEndTxn && target == 0 {
			seen.Add(1)
		}
	}}
	addrs, err := p.Listen()
	require.NoError(t, err)
	defer p.Close()
	require.Len(t, addrs, 1)

	var direct atomic.Int64
	dial := func(ctx context.Context, network, host string) (net.Conn, error) {
		if host == p.Targets[0] {
			host = addrs[0]
		} else {
			direct.Add(1)
		}
		return (&net.Dialer{}).DialContext(ctx, network, host)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Targets...), kgo.Dialer(dial), kgo.TransactionalID("tx"),
		kgo.DefaultProduceTopic("t"), kgo.RequestRetries(10))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const txns = 4
	for i := range txns {
		require.NoError(t, cl.BeginTransaction())
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Value: []byte{byte(i)}}).FirstErr())
		// A dropped answer closes the connection: the client retries the
		// EndTxn (the broker answers a retried commit as done) or fails.
		_ = cl.EndTransaction(ctx, kgo.TryCommit)
	}
	require.GreaterOrEqual(t, p.EndTxns(), int64(txns))
	require.GreaterOrEqual(t, p.Dropped(), int64(1))
	require.Equal(t, p.EndTxns()/2, p.Dropped(), "every second EndTxn answer is dropped")
	require.Equal(t, p.EndTxns(), seen.Load(), "OnRequest sees every EndTxn")
	require.Zero(t, direct.Load(), "no connection bypassed the proxy")
}

func TestStartupParam(t *testing.T) {
	msg := []byte("\x00\x00\x00\x2a\x00\x03\x00\x00user\x00exactly\x00application_name\x00chaos-x-w1\x00\x00")
	require.Equal(t, "chaos-x-w1", startupParam(msg, "application_name"))
	require.Equal(t, "exactly", startupParam(msg, "user"))
	require.Equal(t, "", startupParam(msg, "database"))
	require.Equal(t, "", startupParam(msg[:6], "user"))
}
