package kmeta_test

import (
	"context"
	"net"
	"slices"
	"strconv"
	"sync"
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

	// An id the client does not know fails at once and counts as knowing
	// nothing.
	ghost := append(kadm.BrokerDetails{{NodeID: 99, Host: "127.0.0.1", Port: 1}}, bs...)
	require.Contains(t, kmeta.KnownBy(context.Background(), cl, ghost, []string{"a"}), "a")
}

// A broker that does not answer holds Ask up for AskTimeout, no longer; the
// others' answers stand. Ask reports which brokers lag. Broker 2 is a black
// hole here: the client's connections to it are accepted and never answered.
func TestAStalledBrokerCostsAskTimeout(t *testing.T) {
	c, brokers := testkit.Cluster(t, 1, "a")
	bs := testkit.LagMetadata(t, c, "a", func(node int32) bool { return node == 1 })
	var stalled string
	for _, b := range bs {
		if b.NodeID == 2 {
			stalled = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
		}
	}
	require.NotEmpty(t, stalled)
	hole := blackHole(t)
	var d net.Dialer
	cl, err := kgo.NewClient(kgo.SeedBrokers(slices.DeleteFunc(slices.Clone(brokers), func(a string) bool { return a == stalled })...),
		kgo.Dialer(func(ctx context.Context, network, host string) (net.Conn, error) {
			if host == stalled {
				host = hole
			}
			return d.DialContext(ctx, network, host)
		}))
	require.NoError(t, err)
	defer cl.Close()
	_, err = kadm.NewClient(cl).BrokerMetadata(context.Background())
	require.NoError(t, err)

	start := time.Now()
	ans := kmeta.Ask(context.Background(), cl, bs, []string{"a", "nope"})
	took := time.Since(start)
	t.Logf("Ask took %v", took)
	require.GreaterOrEqual(t, took, kmeta.AskTimeout-50*time.Millisecond, "it waited for the stalled broker")
	require.Less(t, took, 3*kmeta.AskTimeout, "but no longer than its bound")
	require.Len(t, ans, 2, "brokers 0 and 1 answered, 2 did not")
	require.Equal(t, int32(0), ans.Known()["a"].Node)
	require.Equal(t, map[int32][]string{1: {"a"}}, ans.Lacking([]string{"a"}))
}

// blackHole listens on a port that accepts connections and never answers
// them, until the test ends.
func blackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}
