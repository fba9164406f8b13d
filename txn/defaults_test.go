package txn

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The session's clients refresh metadata within MetadataMinAge of a
// retriable produce error (CONCURRENT_TRANSACTIONS, NOT_LEADER), not after
// franz-go's default 5 s (see MetadataMinAge and, on Apache Kafka,
// integration's TestBackToBackTransactionsAreNotDelayed); a user's own
// kgo.MetadataMinAge wins.
func TestSessionRefreshesMetadataSoonAfterAnError(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"))
	require.NoError(t, err)
	defer c.Close()
	open := func(extra ...kgo.Opt) *Session {
		s, err := Open(context.Background(), Config{
			ClientOpts:      append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, extra...),
			ConsumerOpts:    []kgo.Opt{kgo.ConsumerGroup("g"), kgo.ConsumeTopics("in")},
			TransactionalID: "g:a",
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		return s
	}
	minAge := func(s *Session) time.Duration {
		d, _ := s.gts.Client().OptValue(kgo.MetadataMinAge).(time.Duration)
		return d
	}
	require.Equal(t, MetadataMinAge, minAge(open()))
	require.Less(t, MetadataMinAge, time.Second)
	require.Equal(t, 2*time.Second, minAge(open(kgo.MetadataMinAge(2*time.Second))), "the user's option must win")
}

// The retry backoff grows from ~100 ms and never passes MaxRetryBackoff
// (plus jitter), so the first retry after a failover is at most ~1 s late.
func TestRetryBackoffIsCappedAtASecond(t *testing.T) {
	require.InDelta(t, float64(100*time.Millisecond), float64(RetryBackoff(1)), float64(21*time.Millisecond))
	prev := time.Duration(0)
	for fails := 1; fails <= 50; fails++ {
		d := RetryBackoff(fails)
		require.LessOrEqual(t, d, MaxRetryBackoff*12/10, "fails=%d", fails)
		if fails <= 4 {
			require.Greater(t, d, prev*3/4, "fails=%d: the backoff should grow", fails)
		}
		prev = d
	}
	require.GreaterOrEqual(t, RetryBackoff(30), MaxRetryBackoff*8/10)
}
