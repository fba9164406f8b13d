package testkit

import (
	"context"
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// LagMetadata makes the brokers of c for which lags reports true answer a
// Metadata request naming topic with UNKNOWN_TOPIC_OR_PARTITION, as a real
// broker does that has not yet applied the controller's record of a topic
// created a moment ago: Kafka's metadata is only eventually consistent
// across brokers. It returns the cluster's brokers, to map addresses to node
// ids.
func LagMetadata(t testing.TB, c *kfake.Cluster, topic string, lags func(node int32) bool) kadm.BrokerDetails {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	md, err := kadm.NewClient(cl).Metadata(context.Background())
	require.NoError(t, err)
	c.ControlKey(kmsg.Metadata.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.MetadataRequest)
		asks := false
		for _, rt := range req.Topics {
			asks = asks || rt.Topic != nil && *rt.Topic == topic
		}
		if !asks || !lags(c.CurrentNode()) {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		resp.ControllerID = md.Controller
		for _, b := range md.Brokers {
			rb := kmsg.NewMetadataResponseBroker()
			rb.NodeID, rb.Host, rb.Port = b.NodeID, b.Host, b.Port
			resp.Brokers = append(resp.Brokers, rb)
		}
		for _, rt := range req.Topics {
			st := kmsg.NewMetadataResponseTopic()
			st.Topic = rt.Topic
			st.ErrorCode = kerr.UnknownTopicOrPartition.Code
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return md.Brokers
}

// NodeAt returns the node id of the broker listening at addr.
func NodeAt(t testing.TB, brokers kadm.BrokerDetails, addr string) int32 {
	t.Helper()
	for _, b := range brokers {
		if net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))) == addr {
			return b.NodeID
		}
	}
	require.FailNow(t, "no broker listens at "+addr)
	return -1
}
