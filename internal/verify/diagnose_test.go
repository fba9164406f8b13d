package verify

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A read that timed out although nothing pins the partition (its last
// stable offset is at its end) was slow, and says so instead of blaming a
// transaction.
func TestDiagnoseASlowRead(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "out"))
	require.NoError(t, err)
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	require.NoError(t, cl.ProduceSync(context.Background(), &kgo.Record{Topic: "out", Value: []byte("v")}).FirstErr())

	got := diagnose(cl, "out", map[int32]stuckPartition{0: {next: 0, end: 1}})
	require.Equal(t, "; the last stable offsets have reached the ends (partition 0 at 1): the read was slow, not blocked; give it more time", got)
}
