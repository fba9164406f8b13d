package pipeline

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/txn"
)

// Every client of the pipeline (the Postgres mode's consumer too, which is
// not a txn.Session) refreshes metadata soon after a retriable error instead
// of franz-go's 5 s (txn.MetadataMinAge says why); the user's own
// kgo.MetadataMinAge in ClientOpts wins.
func TestClientsRefreshMetadataSoonAfterAnError(t *testing.T) {
	minAge := func(c config) time.Duration {
		cl, err := kgo.NewClient(append(c.connOpts(), kgo.SeedBrokers("127.0.0.1:1"))...)
		require.NoError(t, err)
		defer cl.Close()
		d, _ := cl.OptValue(kgo.MetadataMinAge).(time.Duration)
		return d
	}
	require.Equal(t, txn.MetadataMinAge, minAge(config{}))
	require.Equal(t, 3*time.Second, minAge(config{clientOpts: []kgo.Opt{kgo.MetadataMinAge(3 * time.Second)}}))
}
