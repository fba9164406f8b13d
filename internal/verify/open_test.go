package verify_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/internal/verify"
)

// A read that an open transaction keeps from its end names the transaction.
func TestTimedOutReadNamesTheOpenTransaction(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "out")
	ctx := context.Background()
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	testkit.Produce(t, brokers, "out", 1)

	tx, err := kgo.NewClient(append(opts, kgo.TransactionalID("stuck-txn"), kgo.TransactionTimeout(time.Minute))...)
	require.NoError(t, err)
	defer tx.Close()
	require.NoError(t, tx.BeginTransaction())
	require.NoError(t, tx.ProduceSync(ctx, &kgo.Record{Topic: "out", Value: []byte("open")}).FirstErr())

	_, err = verify.ReadAll(ctx, opts, "out", 2*time.Second)
	require.Error(t, err)
	require.Contains(t, err.Error(), "an open transaction may pin the last stable offset")
	require.Contains(t, err.Error(), "open: stuck-txn Ongoing")
	require.Contains(t, err.Error(), "the partition leader holds a transaction open: producer", "the leader's side of the same transaction")
	require.Contains(t, err.Error(), "on partition 0 since offset 1")
}

// A read whose caller gives up reports that, not a timeout blamed on a
// transaction, and does not spend more time diagnosing.
func TestCancelledReadSaysSo(t *testing.T) {
	_, brokers := testkit.Cluster(t, 1, "out")
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	testkit.Produce(t, brokers, "out", 1)
	tx, err := kgo.NewClient(append(opts, kgo.TransactionalID("pinning"), kgo.TransactionTimeout(time.Minute))...)
	require.NoError(t, err)
	defer tx.Close()
	require.NoError(t, tx.BeginTransaction())
	require.NoError(t, tx.ProduceSync(context.Background(), &kgo.Record{Topic: "out", Value: []byte("open")}).FirstErr())

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	_, err = verify.ReadAll(ctx, opts, "out", time.Minute)
	require.ErrorIs(t, err, context.Canceled)
	require.NotContains(t, err.Error(), "timed out")
}
