package verify

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
)

// What a timed-out read says when the coordinators and the partition
// leaders disagree, and when they fail to answer.
func TestExplainOpen(t *testing.T) {
	held := []kadm.DescribedProducer{{Topic: "out", Partition: 2, ProducerID: 25, ProducerEpoch: 2, CurrentTxnStartOffset: 62}}
	for _, c := range []struct {
		name   string
		coord  []string
		cerr   error
		leader []kadm.DescribedProducer
		lerr   error
		want   string
	}{
		{"hanging: only the leader holds it", nil, nil, held, nil,
			"; a hanging transaction: the partition leader holds a transaction open that no coordinator lists (producer 25, epoch 2, on partition 2 since offset 62), so it will not end by itself; abort it with kafka-transactions.sh --bootstrap-server <brokers> abort --topic out --partition 2 --start-offset 62"},
		{"open on both sides", []string{"t Ongoing epoch 2 since 10:00:00.000 (timeout 1m0s)"}, nil, held, nil,
			"; open: t Ongoing epoch 2 since 10:00:00.000 (timeout 1m0s); the partition leader holds a transaction open: producer 25, epoch 2, on partition 2 since offset 62"},
		{"ended while the read waited", nil, nil, nil, nil,
			"; neither the coordinators nor the partition leaders list a transaction open on it now: it ended while the read waited (read again)"},
		{"open elsewhere", []string{"t Ongoing epoch 2 since 10:00:00.000 (timeout 1m0s)"}, nil, nil, nil,
			"; open: t Ongoing epoch 2 since 10:00:00.000 (timeout 1m0s); the partition leaders hold no transaction open on the partitions (the open ones above may not have written to them)"},
		{"listing failed: never called hanging", nil, errors.New("boom"), held, nil,
			"; listing the transactions failed: boom; the partition leader holds a transaction open: producer 25, epoch 2, on partition 2 since offset 62"},
		{"describing failed", nil, nil, nil, errors.New("partition 2: NOT_LEADER_OR_FOLLOWER"),
			"; describing the partitions' producers failed: partition 2: NOT_LEADER_OR_FOLLOWER"},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, explainOpen("out", c.coord, c.cerr, c.leader, c.lerr))
		})
	}
}
