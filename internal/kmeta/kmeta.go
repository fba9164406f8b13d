// Package kmeta answers whether topics exist on a cluster whose brokers'
// metadata can lag one another: Kafka's metadata is only eventually
// consistent across brokers, and a broker that has not applied the
// controller's record of a topic created a moment ago (it has just
// restarted, or is short of CPU) answers UNKNOWN_TOPIC_OR_PARTITION for it.
// The pipeline's start check and the doctor's loss-risk check ask every
// broker before they call a topic missing.
package kmeta

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// AskTimeout bounds each broker's answer in KnownBy: a broker that is down
// or black-holed cannot hold the caller up longer.
const AskTimeout = time.Second

// Known is a topic that a broker knows: the broker and its answer.
type Known struct {
	Node   int32
	Detail kadm.TopicDetail
}

// IsUnknownTopic reports whether err says that a topic does not exist.
func IsUnknownTopic(err error) bool {
	return errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.UnknownTopicID)
}

// Missing returns the topics md lacks or answers as unknown, in order.
func Missing(md kadm.Metadata, topics []string) []string {
	var out []string
	for _, t := range topics {
		if td, ok := md.Topics[t]; !ok || IsUnknownTopic(td.Err) {
			out = append(out, t)
		}
	}
	return out
}

// KnownBy asks each of brokers, at once, for the metadata of topics and
// returns the topics some broker knows, each with the answer of one broker
// that does. An answer without an error, or with a retriable one other than
// an unknown topic (LEADER_NOT_AVAILABLE: the topic exists), counts; an
// authorization error says nothing. A broker that does not answer within
// AskTimeout, or fails, knows nothing. It returns when every broker has
// answered or every topic is known; no goroutine outlives it. The request
// never creates a topic (AllowAutoTopicCreation is false).
func KnownBy(ctx context.Context, cl *kgo.Client, brokers kadm.BrokerDetails, topics []string) map[string]Known {
	return ask(ctx, cl, brokers, topics, true).Known()
}

// Answers is what each broker that answered said of some topics.
type Answers map[int32]map[string]kadm.TopicDetail // node -> the topics it knows

// Ask is KnownBy that waits for every broker's answer (each bounded by
// AskTimeout), for a caller that wants to know which brokers lag.
func Ask(ctx context.Context, cl *kgo.Client, brokers kadm.BrokerDetails, topics []string) Answers {
	return ask(ctx, cl, brokers, topics, false)
}

// Known returns the topics some broker knows, each with the answer of one
// that does: an answer without an error if there is one, else the
// lowest-numbered broker's.
func (a Answers) Known() map[string]Known {
	known := map[string]Known{}
	for _, node := range slices.Sorted(maps.Keys(a)) {
		for t, td := range a[node] {
			if k, ok := known[t]; !ok || k.Detail.Err != nil && td.Err == nil {
				known[t] = Known{Node: node, Detail: td}
			}
		}
	}
	return known
}

// Lacking returns, for each broker that answered and does not know all of
// topics, the ones it does not know.
func (a Answers) Lacking(topics []string) map[int32][]string {
	lacks := map[int32][]string{}
	for node, has := range a {
		for _, t := range topics {
			if _, ok := has[t]; !ok {
				lacks[node] = append(lacks[node], t)
			}
		}
	}
	return lacks
}

// Request is a Metadata request for topics that never creates one.
func Request(topics []string) *kmsg.MetadataRequest {
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	return req
}

func ask(ctx context.Context, cl *kgo.Client, brokers kadm.BrokerDetails, topics []string, stopWhenKnown bool) Answers {
	actx, cancel := context.WithTimeout(ctx, AskTimeout)
	defer cancel()
	var (
		mu    sync.Mutex
		ans   = Answers{}
		known = map[string]bool{}
		wg    sync.WaitGroup
	)
	for _, b := range brokers {
		wg.Add(1)
		go func(node int32) {
			defer wg.Done()
			resp, err := Request(topics).RequestWith(actx, cl.Broker(int(node)))
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			has := map[string]kadm.TopicDetail{}
			for _, rt := range resp.Topics {
				if rt.Topic == nil || !slices.Contains(topics, *rt.Topic) {
					continue
				}
				terr := kerr.ErrorForCode(rt.ErrorCode)
				if terr == nil || kerr.IsRetriable(terr) && !IsUnknownTopic(terr) {
					has[*rt.Topic] = detail(rt, terr)
					known[*rt.Topic] = true
				}
			}
			ans[node] = has
			if stopWhenKnown && len(known) == len(topics) {
				cancel()
			}
		}(b.NodeID)
	}
	wg.Wait()
	return ans
}

// detail is kadm's form of one topic of a metadata answer.
func detail(rt kmsg.MetadataResponseTopic, err error) kadm.TopicDetail {
	td := kadm.TopicDetail{Topic: *rt.Topic, ID: kadm.TopicID(rt.TopicID), IsInternal: rt.IsInternal,
		Partitions: make(kadm.PartitionDetails, len(rt.Partitions)), Err: err}
	for _, p := range rt.Partitions {
		td.Partitions[p.Partition] = kadm.PartitionDetail{
			Topic: *rt.Topic, Partition: p.Partition, Leader: p.Leader, LeaderEpoch: p.LeaderEpoch,
			Replicas: p.Replicas, ISR: p.ISR, OfflineReplicas: p.OfflineReplicas, Err: kerr.ErrorForCode(p.ErrorCode),
		}
	}
	return td
}
