package doctor

import (
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestNoPostgresDependency: the doctor package is Kafka-only, so programs
// that check a Kafka-mode pipeline do not link the Postgres driver.
func TestNoPostgresDependency(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "github.com/twmb/franz-go/pkg/kadm")
	require.NotContains(t, string(out), "jackc", "pipeline/doctor must not import pgx")
}

// fake starts a kfake cluster of n brokers, closed when the test ends, and
// returns it with an admin client on it.
func fake(t *testing.T, n int, opts ...kfake.Opt) (*kfake.Cluster, *kadm.Client, []string) {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(n)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return c, admOf(t, cl), c.ListenAddrs()
}

// clientOf maps the admin clients fake and realKafka return to their kgo
// clients, for Check, which takes the kgo client.
var clientOf sync.Map // *kadm.Client -> *kgo.Client

// admOf returns an admin client on cl that kcl maps back to cl.
func admOf(t *testing.T, cl *kgo.Client) *kadm.Client {
	adm := kadm.NewClient(cl)
	clientOf.Store(adm, cl)
	t.Cleanup(func() { clientOf.Delete(adm) })
	return adm
}

// kcl returns the kgo client under adm.
func kcl(t *testing.T, adm *kadm.Client) *kgo.Client {
	t.Helper()
	cl, ok := clientOf.Load(adm)
	require.True(t, ok, "the admin client was not made by fake or realKafka")
	return cl.(*kgo.Client)
}

// ctxT is a context bounded for one test step.
func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// create creates topic with partitions, rf and configs ("k=v").
func create(t *testing.T, adm *kadm.Client, topic string, partitions int32, rf int16, kv ...string) {
	t.Helper()
	cfg := map[string]*string{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		cfg[k] = &v
	}
	r, err := adm.CreateTopic(ctxT(t), partitions, rf, cfg, topic)
	require.NoError(t, err)
	require.NoError(t, r.Err, "creating %s: %s", topic, r.ErrMessage)
}
