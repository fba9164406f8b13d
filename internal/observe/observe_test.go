package observe_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/exactlyonce/exactly/internal/observe"
	"github.com/exactlyonce/exactly/internal/testkit"
	"github.com/exactlyonce/exactly/pipeline/doctor"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func admin(t *testing.T, brokers []string) *kadm.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// Offsets never move back; only partitions a commit was seen of are
// reported; a sample is reused for MaxAge.
func TestLagFromObservedOffsets(t *testing.T) {
	_, brokers := testkit.Cluster(t, 3, "in")
	testkit.Produce(t, brokers, "in", 300)
	s, err := observe.NewLagSampler(observe.LagConfig{Admin: admin(t, brokers), MaxAge: time.Hour})
	require.NoError(t, err)
	ctx := context.Background()

	s.Known("g")
	rep := s.Sample(ctx)
	require.NoError(t, rep.Err)
	require.Empty(t, rep.Groups["g"].Partitions, "nothing committed, no topic known yet")

	s.Observe("g", map[string]map[int32]int64{"in": {0: 5, 1: 7}})
	s.Observe("g", map[string]map[int32]int64{"in": {0: 3}}) // an instance behind: ignored
	rep = s.Sample(ctx)
	require.Empty(t, rep.Groups["g"].Partitions, "the sample of a moment ago is reused")

	s2, err := observe.NewLagSampler(observe.LagConfig{Admin: admin(t, brokers)})
	require.NoError(t, err)
	s2.Observe("g", map[string]map[int32]int64{"in": {0: 5, 1: 7}})
	s2.Observe("g", map[string]map[int32]int64{"in": {0: 3}})
	rep = s2.Sample(ctx)
	require.NoError(t, rep.Err)
	g := rep.Groups["g"]
	require.Len(t, g.Partitions, 2, "partition 2 is another process's")
	require.Equal(t, int64(5), g.Partitions[0].Committed)
	require.Equal(t, int64(7), g.Partitions[1].Committed)
	require.Equal(t, g.Partitions[0].End-5+g.Partitions[1].End-7, g.Total)
}

// With a Committed source every partition is reported, and its failure is
// the sample's error, naming the group.
func TestLagFromACommittedSource(t *testing.T) {
	_, brokers := testkit.Cluster(t, 3, "in")
	testkit.Produce(t, brokers, "in", 300)
	fail := true
	s, err := observe.NewLagSampler(observe.LagConfig{Admin: admin(t, brokers), Topics: []string{"in"}, MaxAge: time.Nanosecond,
		Committed: func(ctx context.Context, group string) (doctor.Committed, error) {
			if fail {
				return nil, errors.New("offsets table unreachable")
			}
			return doctor.Committed{"in": {0: 1}}, nil
		}})
	require.NoError(t, err)
	s.Known("g")
	rep := s.Sample(context.Background())
	require.ErrorContains(t, rep.Err, `group "g"`)
	require.ErrorContains(t, rep.Err, "offsets table unreachable")
	fail = false
	rep = s.Sample(context.Background())
	require.NoError(t, rep.Err)
	require.Len(t, rep.Groups["g"].Partitions, 3)
	var total int64
	for _, p := range rep.Groups["g"].Partitions {
		total += p.End
	}
	require.Equal(t, int64(300), total)
	require.Equal(t, total-1, rep.Groups["g"].Total, "lag counts every partition, uncommitted ones from their start")
}

func TestNeedsAnAdmin(t *testing.T) {
	_, err := observe.NewLagSampler(observe.LagConfig{})
	require.Error(t, err)
}
