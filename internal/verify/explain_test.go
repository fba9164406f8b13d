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
	next := []kadm.DescribedProducer{{Topic: "out", Partition: 2, ProducerID: 25, ProducerEpoch: 3, CurrentTxnStartOffset: 62}}
	const ongoing = "t Ongoing epoch 2 since 10:00:00.000 (timeout 1m0s)"
	const heldText = "producer 25, epoch 2, on partition 2 since offset 62"
	for _, c := range []struct {
		name          string
		coord         []string
		openIDs       map[int64]bool
		cerr          error
		before, after []kadm.DescribedProducer
		lerr          error
		want          string
	}{
		{"possibly hanging: the leader holds it twice, no coordinator lists it", nil, nil, nil, held, held, nil,
			"; possibly a hanging transaction: the partition leader holds a transaction open that no coordinator lists as open (" + heldText + "). A hanging transaction never ends by itself and pins every read_committed consumer of the partition; confirm with kafka-transactions.sh --bootstrap-server <brokers> find-hanging --topic out, then abort it: kafka-transactions.sh --bootstrap-server <brokers> abort --topic out --partition 2 --start-offset 62. (A transaction whose id this client may not describe looks the same.)"},
		{"not hanging: the coordinator lists its producer as open (under another topic's name)", nil, map[int64]bool{25: true}, nil, held, held, nil,
			"; the partition leader holds a transaction open: " + heldText},
		{"not hanging: a new epoch between the two looks", nil, nil, nil, next, held, nil,
			"; the partition leader holds a transaction open: " + heldText},
		{"not hanging: the leader only held it after the coordinators were asked", nil, nil, nil, nil, held, nil,
			"; the partition leader holds a transaction open: " + heldText},
		{"open on both sides", []string{ongoing}, map[int64]bool{25: true}, nil, held, held, nil,
			"; open: " + ongoing + "; the partition leader holds a transaction open: " + heldText},
		{"ended just as the read gave up", nil, map[int64]bool{}, nil, nil, nil, nil,
			"; neither the coordinators nor the partition leaders list a transaction open on it now: it ended just as the read gave up (read again)"},
		{"open elsewhere", []string{ongoing}, map[int64]bool{7: true}, nil, nil, nil, nil,
			"; open: " + ongoing + "; the partition leaders hold no transaction open where the read stopped (the open ones above did not stop it)"},
		{"listing failed: never called hanging", nil, nil, errors.New("boom"), held, held, nil,
			"; listing the transactions failed: boom; the partition leader holds a transaction open: " + heldText},
		{"describing failed: what was found is kept", nil, nil, nil, held, held, errors.New("partition 3: NOT_LEADER_OR_FOLLOWER"),
			"; possibly a hanging transaction: the partition leader holds a transaction open that no coordinator lists as open (" + heldText + "). A hanging transaction never ends by itself and pins every read_committed consumer of the partition; confirm with kafka-transactions.sh --bootstrap-server <brokers> find-hanging --topic out, then abort it: kafka-transactions.sh --bootstrap-server <brokers> abort --topic out --partition 2 --start-offset 62. (A transaction whose id this client may not describe looks the same.); describing the partitions' producers failed: partition 3: NOT_LEADER_OR_FOLLOWER"},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, explainOpen("out", c.coord, c.openIDs, c.cerr, c.before, c.after, c.lerr))
		})
	}
}
