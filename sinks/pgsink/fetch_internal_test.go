package pgsink

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/sinks"
)

func TestConsumerFetchesTwoMiBPerPartitionUnlessTold(t *testing.T) {
	value := func(cfg sinks.SessionConfig) int32 {
		cl, err := kgo.NewClient(append(consumerClientOpts(cfg), kgo.SeedBrokers("127.0.0.1:1"))...)
		require.NoError(t, err)
		defer cl.Close()
		return cl.OptValue(kgo.FetchMaxPartitionBytes).(int32)
	}
	require.EqualValues(t, FetchMaxPartitionBytes, value(sinks.SessionConfig{}))
	require.EqualValues(t, 512<<10, value(sinks.SessionConfig{ClientOpts: []kgo.Opt{kgo.FetchMaxPartitionBytes(512 << 10)}}))
}
