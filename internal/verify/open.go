package verify

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// openTransactions says, for a read of topic that timed out with parts
// short of their end, which transactions hold them open, from both sides:
// the transaction coordinators (ListTransactions, DescribeTransactions) and
// the partitions' leaders (DescribeProducers). The two disagree in the
// cases that matter: a transaction the leader holds open but no
// coordinator lists is hanging and never ends by itself; one that neither
// lists any more ended while the read waited.
func openTransactions(cl *kgo.Client, topic string, parts []int32) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	coord, cerr := coordinatorOpen(ctx, adm, topic)
	leader, lerr := leaderOpen(ctx, adm, topic, parts)
	return explainOpen(topic, coord, cerr, leader, lerr)
}

// coordinatorOpen lists the transactions the coordinators report as not
// complete that wrote to topic (or that could not be described), as
// "id state epoch e since t (timeout d)".
func coordinatorOpen(ctx context.Context, adm *kadm.Client, topic string) (open []string, err error) {
	listed, err := adm.ListTransactions(ctx, nil, nil)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, t := range listed.Sorted() {
		if t.State != "CompleteCommit" && t.State != "CompleteAbort" && t.State != "Empty" && t.State != "Dead" {
			ids = append(ids, t.TxnID)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	described, derr := adm.DescribeTransactions(ctx, ids...)
	for _, id := range ids {
		d, ok := described[id]
		if derr != nil || !ok || d.Err != nil {
			open = append(open, id+" (not described)")
			continue
		}
		if _, touches := d.Topics[topic]; !touches && len(d.Topics) > 0 {
			continue
		}
		open = append(open, fmt.Sprintf("%s %s epoch %d since %s (timeout %v)", id, d.State, d.ProducerEpoch,
			time.UnixMilli(d.StartTimestamp).UTC().Format("15:04:05.000"), time.Duration(d.TimeoutMillis)*time.Millisecond))
	}
	return open, nil
}

// leaderOpen returns the producers that the leaders of topic's parts report
// with a transaction open on them.
func leaderOpen(ctx context.Context, adm *kadm.Client, topic string, parts []int32) ([]kadm.DescribedProducer, error) {
	if len(parts) == 0 {
		return nil, nil
	}
	set := kadm.TopicsSet{}
	set.Add(topic, parts...)
	described, err := adm.DescribeProducers(ctx, set)
	if err != nil {
		return nil, err
	}
	var open []kadm.DescribedProducer
	var errs []string
	described.EachPartition(func(p kadm.DescribedProducersPartition) {
		if p.Err != nil {
			errs = append(errs, fmt.Sprintf("partition %d: %v", p.Partition, p.Err))
		}
		for _, d := range p.ActiveProducers {
			if d.CurrentTxnStartOffset >= 0 {
				open = append(open, d)
			}
		}
	})
	slices.SortFunc(open, func(a, b kadm.DescribedProducer) int {
		if a.Less(&b) {
			return -1
		}
		if b.Less(&a) {
			return 1
		}
		return 0
	})
	if len(errs) > 0 {
		slices.Sort(errs)
		return open, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return open, nil
}

// explainOpen renders what openTransactions found, as a suffix to the
// timeout's message ("; ...").
func explainOpen(topic string, coord []string, cerr error, leader []kadm.DescribedProducer, lerr error) string {
	var b strings.Builder
	switch {
	case cerr != nil:
		fmt.Fprintf(&b, "; listing the transactions failed: %v", cerr)
	case len(coord) > 0:
		b.WriteString("; open: " + strings.Join(coord, ", "))
	}
	held := make([]string, 0, len(leader))
	for _, d := range leader {
		held = append(held, fmt.Sprintf("producer %d, epoch %d, on partition %d since offset %d", d.ProducerID, d.ProducerEpoch, d.Partition, d.CurrentTxnStartOffset))
	}
	switch {
	case lerr != nil:
		fmt.Fprintf(&b, "; describing the partitions' producers failed: %v", lerr)
	case len(leader) > 0 && cerr == nil && len(coord) == 0:
		d := leader[0]
		fmt.Fprintf(&b, "; a hanging transaction: the partition leader holds a transaction open that no coordinator lists (%s), so it will not end by itself; abort it with kafka-transactions.sh --bootstrap-server <brokers> abort --topic %s --partition %d --start-offset %d",
			strings.Join(held, ", "), topic, d.Partition, d.CurrentTxnStartOffset)
	case len(leader) > 0:
		b.WriteString("; the partition leader holds a transaction open: " + strings.Join(held, ", "))
	case cerr == nil && len(coord) == 0:
		b.WriteString("; neither the coordinators nor the partition leaders list a transaction open on it now: it ended while the read waited (read again)")
	case cerr == nil:
		b.WriteString("; the partition leaders hold no transaction open on the partitions (the open ones above may not have written to them)")
	}
	return b.String()
}
