package verify

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A read that an open transaction keeps from its end names the transaction.
func TestTimedOutReadNamesTheOpenTransaction(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "out"))
	require.NoError(t, err)
	defer c.Close()
	ctx := context.Background()
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}

	plain, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	defer plain.Close()
	require.NoError(t, plain.ProduceSync(ctx, &kgo.Record{Topic: "out", Value: []byte("committed")}).FirstErr())

	tx, err := kgo.NewClient(append(opts, kgo.TransactionalID("stuck-txn"), kgo.TransactionTimeout(time.Minute))...)
	require.NoError(t, err)
	defer tx.Close()
	require.NoError(t, tx.BeginTransaction())
	require.NoError(t, tx.ProduceSync(ctx, &kgo.Record{Topic: "out", Value: []byte("open")}).FirstErr())

	_, err = ReadAll(ctx, opts, "out", 2*time.Second)
	require.Error(t, err)
	require.Contains(t, err.Error(), "an open transaction may pin the last stable offset")
	require.Contains(t, err.Error(), "open: stuck-txn Ongoing")
}
