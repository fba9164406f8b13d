package verify

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// stuckPartition is a partition a timed-out read did not finish: it had
// read up to next, short of end.
type stuckPartition struct{ next, end int64 }

// diagnose says why a read of topic timed out with stuck partitions short of
// their end, as a suffix to the timeout's message ("; ..."). If the last
// stable offsets have reached the ends, the read was only slow. Otherwise
// an open transaction pins them, seen from both sides: the transaction
// coordinators (ListTransactions, DescribeTransactions) and the partitions'
// leaders (DescribeProducers), asked before and after the coordinators so
// that a transaction that merely ended and began again in between is not
// taken for a hanging one.
func diagnose(cl *kgo.Client, topic string, stuck map[int32]stuckPartition) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	parts := make([]int32, 0, len(stuck))
	for p := range stuck {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	var b strings.Builder
	lso, err := Listed(adm.ListCommittedOffsets(ctx, topic))
	if err != nil {
		fmt.Fprintf(&b, "; listing the last stable offsets failed: %v; an open transaction may pin them", err)
	} else {
		var pinned, readable []string
		for _, p := range parts {
			if at := lso[p]; at < stuck[p].end {
				pinned = append(pinned, fmt.Sprintf("partition %d at %d", p, at))
			} else {
				readable = append(readable, fmt.Sprintf("partition %d at %d", p, at))
			}
		}
		if len(pinned) == 0 {
			return fmt.Sprintf("; the last stable offsets have reached the ends (%s): the read was slow, not blocked; give it more time", strings.Join(readable, ", "))
		}
		fmt.Fprintf(&b, "; an open transaction may pin the last stable offset (%s)", strings.Join(pinned, ", "))
	}
	before, _ := leaderOpen(ctx, adm, topic, stuck)
	coord, openIDs, cerr := coordinatorOpen(ctx, adm, topic)
	after, lerr := leaderOpen(ctx, adm, topic, stuck)
	b.WriteString(explainOpen(topic, coord, openIDs, cerr, before, after, lerr))
	return b.String()
}

// Listed turns listed offsets (kadm ListEndOffsets, ListCommittedOffsets…)
// into partition -> offset, or the listing's error.
func Listed(l kadm.ListedOffsets, err error) (map[int32]int64, error) {
	if err == nil {
		err = l.Error()
	}
	if err != nil {
		return nil, err
	}
	m := map[int32]int64{}
	l.Each(func(o kadm.ListedOffset) { m[o.Partition] = o.Offset })
	return m, nil
}

// coordinatorOpen returns the transactions the coordinators list as not
// complete that wrote to topic (or that could not be described), as
// "id state epoch e since t (timeout d)", and the producer ids of every
// transaction they list as not complete.
func coordinatorOpen(ctx context.Context, adm *kadm.Client, topic string) (open []string, producers map[int64]bool, err error) {
	all, err := adm.ListTransactions(ctx, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	producers = map[int64]bool{}
	var ids []string
	for _, t := range all.Sorted() {
		if t.State != "CompleteCommit" && t.State != "CompleteAbort" && t.State != "Empty" && t.State != "Dead" {
			ids = append(ids, t.TxnID)
			producers[t.ProducerID] = true
		}
	}
	if len(ids) == 0 {
		return nil, producers, nil
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
	return open, producers, nil
}

// leaderOpen returns the producers that the leaders of topic's stuck
// partitions hold a transaction open for that began at or below where the
// read stopped (a later one cannot have stopped it), and what could not
// be described.
func leaderOpen(ctx context.Context, adm *kadm.Client, topic string, stuck map[int32]stuckPartition) ([]kadm.DescribedProducer, error) {
	set := kadm.TopicsSet{}
	for p := range stuck {
		set.Add(topic, p)
	}
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
			if s, ok := stuck[d.Partition]; ok && d.CurrentTxnStartOffset >= 0 && d.CurrentTxnStartOffset <= s.next {
				open = append(open, d)
			}
		}
	})
	sort.Slice(open, func(i, j int) bool { return open[i].Less(&open[j]) })
	if len(errs) > 0 {
		slices.Sort(errs)
		return open, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return open, nil
}

// explainOpen renders what the coordinators (coord, openIDs, cerr) and the
// partition leaders (before and after the coordinators; lerr) said. A
// producer that the leader held open both times at the same epoch and start
// offset, and that no coordinator listed as open in between, is a suspected
// hanging transaction: it would pin the partition for good.
func explainOpen(topic string, coord []string, openIDs map[int64]bool, cerr error, before, after []kadm.DescribedProducer, lerr error) string {
	var b strings.Builder
	switch {
	case cerr != nil:
		fmt.Fprintf(&b, "; listing the transactions failed: %v", cerr)
	case len(coord) > 0:
		b.WriteString("; open: " + strings.Join(coord, ", "))
	}
	held := func(d kadm.DescribedProducer) string {
		return fmt.Sprintf("producer %d, epoch %d, on partition %d since offset %d", d.ProducerID, d.ProducerEpoch, d.Partition, d.CurrentTxnStartOffset)
	}
	seenBefore := map[string]bool{}
	for _, d := range before {
		seenBefore[held(d)] = true
	}
	var suspects, others []string
	var commands []string
	for _, d := range after {
		if cerr == nil && seenBefore[held(d)] && !openIDs[d.ProducerID] {
			suspects = append(suspects, held(d))
			commands = append(commands, fmt.Sprintf("kafka-transactions.sh --bootstrap-server <brokers> abort --topic %s --partition %d --start-offset %d", topic, d.Partition, d.CurrentTxnStartOffset))
		} else {
			others = append(others, held(d))
		}
	}
	if len(suspects) > 0 {
		fmt.Fprintf(&b, "; possibly a hanging transaction: the partition leader holds a transaction open that no coordinator lists as open (%s). A hanging transaction never ends by itself and pins every read_committed consumer of the partition; confirm with kafka-transactions.sh --bootstrap-server <brokers> find-hanging --topic %s, then abort it: %s. (A transaction whose id this client may not describe looks the same.)",
			strings.Join(suspects, "; "), topic, strings.Join(commands, "; "))
	}
	if len(others) > 0 {
		b.WriteString("; the partition leader holds a transaction open: " + strings.Join(others, "; "))
	}
	switch {
	case lerr != nil:
		fmt.Fprintf(&b, "; describing the partitions' producers failed: %v", lerr)
	case len(after) > 0:
	case cerr == nil && len(coord) == 0:
		b.WriteString("; neither the coordinators nor the partition leaders list a transaction open on it now: it ended just as the read gave up (read again)")
	case cerr == nil:
		b.WriteString("; the partition leaders hold no transaction open where the read stopped (the open ones above did not stop it)")
	}
	return b.String()
}
