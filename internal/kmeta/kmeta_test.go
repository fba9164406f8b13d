package kmeta_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/exactlyonce/exactly/internal/kmeta"
	"github.com/exactlyonce/exactly/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A topic one broker lacks is known by another; a topic no broker has is
// absent; a broker the client cannot reach (here: an id no broker has)
// knows nothing and does not hold the answer up past AskTimeout.
func TestKnownBy(t *testing.T) {
	c, brokers := testkit.Cluster(t, 2, "a")
	bs := testkit.LagMetadata(t, c, "a", func(node int32) bool { return node == 0 })
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	_, err = kadm.NewClient(cl).BrokerMetadata(context.Background())
	require.NoError(t, err)

	known := kmeta.KnownBy(context.Background(), cl, bs, []string{"a", "nope"})
	require.Len(t, known, 1)
	require.NotEqual(t, int32(0), known["a"].Node, "broker 0 lags: it cannot be the one that knows")
	require.Len(t, known["a"].Detail.Partitions, 2)
	require.NoError(t, known["a"].Detail.Err)

	onlyLaggard := kadm.BrokerDetails{bs[0]}
	require.Equal(t, int32(0), onlyLaggard[0].NodeID)
	require.Empty(t, kmeta.KnownBy(context.Background(), cl, onlyLaggard, []string{"a"}))

	start := time.Now()
	ghost := append(kadm.BrokerDetails{{NodeID: 99, Host: "127.0.0.1", Port: 1}}, bs...)
	known = kmeta.KnownBy(context.Background(), cl, ghost, []string{"a", "nope"})
	require.Contains(t, known, "a")
	require.Less(t, time.Since(start), kmeta.AskTimeout+5*time.Second)
}
