package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/sinks"
)

// pollSize is how many records the next poll of a batch may take, so that
// the batch stays within MaxRecords and MaxBytes. kgo bounds a poll by count
// only, so the count comes from the largest record (key and value) seen so
// far. While the pipeline is young (its first learnPolls polls) a batch's
// polls also grow from one record, doubling, because the first records may be
// smaller than the ones that follow. A batch exceeds MaxBytes by less than
// one record, unless a record larger than any seen before arrives in its
// last poll.
func (p *Pipeline[W]) pollSize(n, size int, chunk *int) int {
	if p.maxSeen == 0 {
		return 1 // nothing seen yet: learn the size from one record
	}
	want := min(p.cfg.maxRecords-n, max(1, (p.cfg.maxBytes-size)/p.maxSeen))
	if p.learnt < learnPolls {
		p.learnt++
		*chunk = max(1, min(want, *chunk*2))
		return *chunk
	}
	return want
}

// earlyEnder is implemented by sessions whose commit is cheap next to a
// fetch round trip (the Postgres sink's: one COMMIT per partition, a few ms):
// for them a batch half full goes to the Stage when a poll finds nothing more
// fetched, rather than wait for the next fetch. Kafka-mode sessions do not:
// a Kafka transaction costs several broker round trips (tens of ms on the
// bench broker), and more, smaller transactions could not be shown to pay
// for the fetch wait they save (docs/PERFORMANCE.md, 2026-12-01).
type earlyEnder interface{ EndBatchWhenDrained() bool }

// learnPolls is how many polls size their batches cautiously (see pollSize).
const learnPolls = 64

// collect polls one batch per partition, bounded by MaxRecords, MaxBytes
// and MaxWait after the first record. For a session that asks for it
// ([earlyEnder]), a batch at least half full by count or bytes also ends
// when a poll finds nothing more fetched (see the loop).
func (p *Pipeline[W]) collect(ctx context.Context, sess sinks.Session[W]) ([]*sinks.Batch, error) {
	var (
		batches []*sinks.Batch
		index   = map[tp]int{}
		n, size int
		timer   *time.Timer
	)
	// waitCtx ends MaxWait after the first record arrived.
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	chunk := 0 // records asked for by the last poll
	es, early := sess.(earlyEnder)
	early = early && es.EndBatchWhenDrained()
	for n < p.cfg.maxRecords && size < p.cfg.maxBytes {
		want := p.pollSize(n, size, &chunk)
		fs, err := sess.Poll(waitCtx, want)
		if err != nil {
			if n > 0 && !sinks.IsFatal(err) {
				// Never drop what was polled: a later commit
				// would move the offsets past it.
				break
			}
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		for _, fe := range fs.Errors() {
			if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
				continue
			}
			if errors.Is(fe.Err, kgo.ErrClientClosed) {
				return nil, fmt.Errorf("pipeline: client closed while polling: %w", fe.Err)
			}
			if err := p.fetchError(fe); err != nil {
				// Nothing of this poll is begun or committed: Run
				// returns and the session closes.
				return nil, err
			}
		}
		got := 0
		fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
			if len(ftp.Records) == 0 {
				return
			}
			got += len(ftp.Records)
			k := tp{ftp.Topic, ftp.Partition}
			i, ok := index[k]
			if !ok {
				i = len(batches)
				index[k] = i
				batches = append(batches, &sinks.Batch{Topic: ftp.Topic, Partition: ftp.Partition})
			}
			if b := batches[i]; b.Records == nil {
				// The partition's first records of the batch: keep
				// kgo's slice instead of copying it. Capped, so a
				// later append copies instead of writing past it.
				b.Records = ftp.Records[:len(ftp.Records):len(ftp.Records)]
			} else {
				b.Records = append(b.Records, ftp.Records...)
			}
			for _, r := range ftp.Records {
				rs := len(r.Key) + len(r.Value)
				size += rs
				if rs > p.maxSeen {
					p.maxSeen = rs
				}
			}
			n += len(ftp.Records)
		})
		if n > 0 && timer == nil {
			timer = time.AfterFunc(p.cfg.maxWait, cancel)
		}
		if waitCtx.Err() != nil {
			break
		}
		if early && got > 0 && got < want && (2*n >= p.cfg.maxRecords || 2*size >= p.cfg.maxBytes) {
			// The poll took everything fetched so far, so the client
			// is fetching more now. Half a batch is enough to
			// amortise a cheap commit: it goes to the Stage instead
			// of waiting for that fetch, which then overlaps the
			// Stage and the commit rather than delaying both (the
			// client fetches nothing while records are buffered).
			break
		}
	}
	return batches, nil
}

// fetchError decides what a partition's fetch error means: authorization
// failures and, by default, data loss stop the pipeline with a fatal error
// that says what to change; everything else kgo retries itself, so it is
// logged and the loop goes on.
func (p *Pipeline[W]) fetchError(fe kgo.FetchError) error {
	var dl *kgo.ErrDataLoss
	switch {
	case errors.Is(fe.Err, kerr.TopicAuthorizationFailed):
		return &sinks.FatalError{Op: "fetch", ID: p.cfg.instanceID, Err: fmt.Errorf(
			"not authorized to read topic %q (grant the principal Read on it): %w", fe.Topic, fe.Err)}
	case errors.Is(fe.Err, kerr.GroupAuthorizationFailed):
		return &sinks.FatalError{Op: "fetch", ID: p.cfg.instanceID, Err: fmt.Errorf(
			"not authorized for consumer group %q (grant the principal Read on the group): %w", p.cfg.group, fe.Err)}
	case sinks.IsFatal(fe.Err):
		return &sinks.FatalError{Op: "fetch", ID: p.cfg.instanceID, Err: fmt.Errorf("topic %q partition %d: %w", fe.Topic, fe.Partition, fe.Err)}
	case errors.As(fe.Err, &dl):
		loss := &DataLossError{Topic: dl.Topic, Partition: dl.Partition, ConsumedTo: dl.ConsumedTo, ResetTo: dl.ResetTo, Err: fe.Err}
		if p.cfg.dataLoss == DataLossContinue {
			p.stats.dataLoss.Add(1)
			p.log.Error("data loss: records the pipeline had not processed are gone from the topic; going on from where the consumer was reset (DataLoss policy: continue)",
				"topic", dl.Topic, "partition", dl.Partition, "consumed_to", dl.ConsumedTo, "reset_to", dl.ResetTo, "err", fe.Err)
			return nil
		}
		return &sinks.FatalError{Op: "fetch", ID: p.cfg.instanceID, Err: loss}
	}
	p.log.Warn("fetch error; the client retries it", "topic", fe.Topic, "partition", fe.Partition, "err", fe.Err)
	return nil
}

type tp struct {
	topic     string
	partition int32
}
