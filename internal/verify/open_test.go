package verify_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/internal/verify"
)

// openTransaction starts a kfake cluster whose topic "out" holds one
// committed record, then opens a transaction of transactional id id that
// writes n more records to it, and returns the cluster, the reader's client
// options and the transactional client.
func openTransaction(t *testing.T, id string, n int) (*kfake.Cluster, []kgo.Opt, *kgo.Client) {
	t.Helper()
	c, brokers := testkit.Cluster(t, 1, "out")
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	testkit.Produce(t, brokers, "out", 1)
	tx, err := kgo.NewClient(append(opts, kgo.TransactionalID(id), kgo.TransactionTimeout(time.Minute))...)
	require.NoError(t, err)
	t.Cleanup(tx.Close)
	require.NoError(t, tx.BeginTransaction())
	for range n {
		require.NoError(t, tx.ProduceSync(context.Background(), &kgo.Record{Topic: "out", Value: []byte("open")}).FirstErr())
	}
	return c, opts, tx
}

// A read that an open transaction keeps from its end names the transaction.
func TestTimedOutReadNamesTheOpenTransaction(t *testing.T) {
	_, opts, _ := openTransaction(t, "stuck-txn", 1)
	_, err := verify.ReadAll(context.Background(), opts, "out", 2*time.Second)
	require.Error(t, err)
	require.Contains(t, err.Error(), "an open transaction may pin the last stable offset")
	require.Contains(t, err.Error(), "open: stuck-txn Ongoing")
	require.Contains(t, err.Error(), "the partition leader holds a transaction open: producer", "the leader's side of the same transaction")
	require.Contains(t, err.Error(), "on partition 0 since offset 1")
}

// A read whose caller gives up reports that, not a timeout blamed on a
// transaction, and does not spend more time diagnosing.
func TestCancelledReadSaysSo(t *testing.T) {
	_, opts, _ := openTransaction(t, "pinning", 1)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	_, err := verify.ReadAll(ctx, opts, "out", time.Minute)
	require.ErrorIs(t, err, context.Canceled)
	require.NotContains(t, err.Error(), "timed out")
}
