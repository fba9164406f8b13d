package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/sinks"
)

// ErrCaughtUp is the cause of the context that [Pipeline.RunUntilCaughtUp]
// cancels once the group has committed everything that was available when
// it started; Run's stop line in the log names it.
var ErrCaughtUp = errors.New("pipeline: caught up with the input")

// caughtUpInterval is how often RunUntilCaughtUp compares the committed
// offsets with the end offsets it took at start.
const caughtUpInterval = 100 * time.Millisecond

// RunUntilCaughtUp runs the pipeline like [Pipeline.Run] until the group
// has committed every record that was in the input topics when it started,
// then stops it and returns nil: for batch jobs, backfills and tests.
//
// At start it takes the end offsets of the input topics as a read_committed
// consumer sees them (the last stable offsets, kadm's ListCommittedOffsets),
// then, every 100ms, compares them with the group's committed offsets: the
// sink's own when it implements [sinks.OffsetReader] (the Postgres sink's
// offsets table), the group's offsets in Kafka otherwise. Records written
// after the start may or may not be processed before it stops; they are
// never lost, the next run resumes after the last commit. An input written by
// transactional producers ends with a commit marker that no consumer ever
// commits past; a partition whose only remaining offsets are such markers
// (or aborted records) counts as caught up.
//
// It returns Run's error if Run stops first, and an error wrapping the
// context's error if ctx ends before the group caught up (nothing is lost:
// what was committed stays committed). Other instances of the group may
// share the work; each stops once the whole group caught up.
func (p *Pipeline[W]) RunUntilCaughtUp(ctx context.Context) error {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	caught := make(chan struct{})
	checkerDone := make(chan struct{})
	go func() {
		defer close(checkerDone)
		if p.waitCaughtUp(rctx) {
			close(caught)
			cancel(ErrCaughtUp)
		}
	}()
	err := p.Run(rctx)
	cancel(nil)
	<-checkerDone
	select {
	case <-caught:
		return err
	default:
	}
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("pipeline: interrupted before the group caught up with the input: %w", context.Cause(ctx))
	}
	return nil
}

// waitCaughtUp reports true once the group committed everything up to the
// end offsets taken when it started, false when ctx ends first.
func (p *Pipeline[W]) waitCaughtUp(ctx context.Context) bool {
	cl, err := kgo.NewClient(p.cfg.connOpts()...)
	if err != nil {
		return false // Run fails the same way and says why
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	tick := time.NewTicker(caughtUpInterval)
	defer tick.Stop()
	var ends map[string]map[int32]int64
	for {
		if ends == nil {
			// Run reports unreachable brokers and missing topics;
			// here a failure only means "not yet".
			ends, err = endOffsets(ctx, adm, p.cfg.topics)
			if err != nil {
				ends = nil
			}
		}
		if ends != nil {
			done, err := p.caughtUp(ctx, adm, ends)
			if err != nil && ctx.Err() == nil {
				p.log.Warn("checking whether the group caught up; retrying", "err", err)
			}
			if done {
				p.log.Info("the group caught up with the input it had at start; stopping")
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// endOffsets are the last stable offsets of topics' partitions.
func endOffsets(ctx context.Context, adm *kadm.Client, topics []string) (map[string]map[int32]int64, error) {
	lo, err := adm.ListCommittedOffsets(ctx, topics...)
	if err == nil {
		err = lo.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("pipeline: listing the end offsets of %v: %w", topics, err)
	}
	ends := make(map[string]map[int32]int64)
	lo.Each(func(o kadm.ListedOffset) {
		if ends[o.Topic] == nil {
			ends[o.Topic] = make(map[int32]int64)
		}
		ends[o.Topic][o.Partition] = o.Offset
	})
	return ends, nil
}

// committedOffsets are the group's committed offsets, from the sink when it
// keeps them, from Kafka otherwise.
func (p *Pipeline[W]) committedOffsets(ctx context.Context, adm *kadm.Client) (map[string]map[int32]int64, error) {
	if or, ok := any(p.sink).(sinks.OffsetReader); ok {
		return or.CommittedOffsets(ctx, p.cfg.group, p.cfg.topics)
	}
	return kafkaCommitted(ctx, adm, p.cfg.group)
}

// kafkaCommitted are group's committed offsets in Kafka.
func kafkaCommitted(ctx context.Context, adm *kadm.Client, group string) (map[string]map[int32]int64, error) {
	offs, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("pipeline: fetching the committed offsets of group %q: %w", group, err)
	}
	out := make(map[string]map[int32]int64)
	offs.Each(func(o kadm.OffsetResponse) {
		if o.At < 0 {
			return
		}
		if out[o.Topic] == nil {
			out[o.Topic] = make(map[int32]int64)
		}
		out[o.Topic][o.Partition] = o.At
	})
	return out, nil
}

// caughtUp compares the committed offsets with ends. A partition whose
// committed offset is short of its end is probed: if nothing but control
// records (transaction markers) lie in between, it is caught up too.
func (p *Pipeline[W]) caughtUp(ctx context.Context, adm *kadm.Client, ends map[string]map[int32]int64) (bool, error) {
	committed, err := p.committedOffsets(ctx, adm)
	if err != nil {
		return false, err
	}
	behind := map[string]map[int32]kgo.Offset{}
	for t, ps := range ends {
		for part, end := range ps {
			at, ok := committed[t][part]
			if !ok {
				at = 0
			}
			if end <= 0 || at >= end {
				continue
			}
			if behind[t] == nil {
				behind[t] = map[int32]kgo.Offset{}
			}
			behind[t][part] = kgo.NewOffset().At(at)
		}
	}
	if len(behind) == 0 {
		return true, nil
	}
	// Probe only when everything left could be markers: one record
	// short per partition at most would be the usual case, but aborted
	// transactions leave longer runs, so probe whatever is behind.
	return p.onlyMarkers(ctx, behind, ends)
}

// onlyMarkers reports whether the partitions in from hold nothing but
// control records (transaction markers) between their offset in from and
// their end in ends, as a read_committed consumer sees them. It reads them
// with a short-lived consumer that keeps control records.
func (p *Pipeline[W]) onlyMarkers(ctx context.Context, from map[string]map[int32]kgo.Offset, ends map[string]map[int32]int64) (bool, error) {
	opts := append(p.cfg.connOpts(),
		kgo.ConsumePartitions(from),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return false, err
	}
	defer cl.Close()
	pending := 0
	for _, ps := range from {
		pending += len(ps)
	}
	// Records below the end exist, so a fetch answers at once; the bound
	// only keeps a dead broker from holding the check.
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	seen := map[tp]bool{}
	for pending > 0 {
		fs := cl.PollFetches(pctx)
		if pctx.Err() != nil {
			return false, nil // not known yet: check again
		}
		if err := fs.Err0(); err != nil {
			return false, err
		}
		dataBelowEnd := false
		fs.EachRecord(func(r *kgo.Record) {
			k := tp{r.Topic, r.Partition}
			end := ends[r.Topic][r.Partition]
			if seen[k] {
				return
			}
			if r.Offset >= end {
				// Past the end with no data below it: only markers and
				// aborted records lay in between. (A transaction that
				// aborted after the ends were taken leaves its marker
				// here, and its records never reach this consumer.)
				seen[k] = true
				pending--
				return
			}
			if !r.Attrs.IsControl() {
				dataBelowEnd = true
				return
			}
			if r.Offset >= end-1 {
				seen[k] = true
				pending--
			}
		})
		if dataBelowEnd {
			return false, nil
		}
	}
	return true, nil
}

// Lag returns how many records of topics group has not committed yet: the
// sum over their partitions of the last stable offset (the end as a
// read_committed consumer sees it) minus the group's committed offset in
// Kafka. It is Kafka's view: in Postgres mode it relies on the sink's
// mirror of the offsets to the group (pgsink.MirrorToKafka, on by default).
// An input written by transactional producers keeps a lag of one per
// partition after everything was processed (the last commit marker); use
// [Pipeline.RunUntilCaughtUp] to wait for a group to catch up.
func Lag(ctx context.Context, adm *kadm.Client, group string, topics ...string) (int64, error) {
	if len(topics) == 0 {
		return 0, errors.New("pipeline: Lag: no topics given")
	}
	ends, err := endOffsets(ctx, adm, topics)
	if err != nil {
		return 0, err
	}
	committed, err := kafkaCommitted(ctx, adm, group)
	if err != nil {
		return 0, err
	}
	var lag int64
	for t, ps := range ends {
		for part, end := range ps {
			if at := committed[t][part]; end > at {
				lag += end - at
			}
		}
	}
	return lag, nil
}
