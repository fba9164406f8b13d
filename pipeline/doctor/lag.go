package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// errNoAdmin is returned for a nil *kadm.Client.
var (
	errNoAdmin  = errors.New("doctor: no admin client: pass kadm.NewClient(kgoClient)")
	errNoClient = errors.New("doctor: no client: pass the *kgo.Client of the cluster (doctor.Dial makes one)")
)

// Committed holds a pipeline's committed offsets: topic -> partition -> the
// next offset to process (what Kafka's offset commit and exactly's
// Postgres offsets table both store). A partition that is absent has
// nothing committed.
type Committed map[string]map[int32]int64

// Set records offset as partition p of topic's committed offset.
func (c Committed) Set(topic string, p int32, offset int64) {
	if c[topic] == nil {
		c[topic] = map[int32]int64{}
	}
	c[topic][p] = offset
}

// KafkaCommitted reads group's committed offsets for topics (all of the
// group's topics when none are named) from Kafka with OffsetFetch.
func KafkaCommitted(ctx context.Context, adm *kadm.Client, group string, topics ...string) (Committed, error) {
	if group == "" {
		return nil, errors.New("doctor: no consumer group given: pass -group <the pipeline's group>")
	}
	if adm == nil {
		return nil, errNoAdmin
	}
	want := map[string]bool{}
	for _, t := range topics {
		want[t] = true
	}
	offs, err := adm.FetchOffsets(ctx, group)
	// The first request for a group can find its coordinator still being
	// elected (or __consumer_offsets being created): retry those until ctx
	// ends.
	for backoff := 50 * time.Millisecond; err != nil && kerr.IsRetriable(err); backoff = min(2*backoff, time.Second) {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("doctor: fetching committed offsets of group %q: %w (%w)", group, ctx.Err(), err)
		case <-time.After(backoff):
		}
		offs, err = adm.FetchOffsets(ctx, group)
	}
	if errors.Is(err, kerr.GroupIDNotFound) {
		return Committed{}, nil // a group that never committed
	}
	if err != nil {
		return nil, fmt.Errorf("doctor: fetching committed offsets of group %q: %w", group, err)
	}
	c := Committed{}
	var errs []error
	offs.Each(func(o kadm.OffsetResponse) {
		if len(want) > 0 && !want[o.Topic] {
			return
		}
		if o.Err != nil {
			errs = append(errs, fmt.Errorf("%s[%d]: %w", o.Topic, o.Partition, o.Err))
			return
		}
		if o.At >= 0 {
			c.Set(o.Topic, o.Partition, o.At)
		}
	})
	if len(errs) > 0 {
		return nil, fmt.Errorf("doctor: committed offsets of group %q: %w", group, errors.Join(errs...))
	}
	return c, nil
}

// PartitionLag is one partition's progress.
type PartitionLag struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Committed is the committed (next) offset, -1 when nothing is committed.
	Committed int64 `json:"committed"`
	// Start is the log start offset (the oldest record still kept).
	Start int64 `json:"start"`
	// End is the high watermark: one past the last replicated record.
	End int64 `json:"end"`
	// Stable is the last stable offset: below it no transaction is open,
	// so a read_committed consumer (the pipeline) can read only up to it.
	Stable int64 `json:"stable"`
	// Lag is End minus Committed (End minus Start when nothing is
	// committed), never negative: kadm's CalculateGroupLag definition.
	Lag int64 `json:"lag"`
	// Open is End minus Stable: records of transactions still open, or of
	// the open transaction that pins the partition.
	Open int64 `json:"open"`
	// PinnedFor is how long Stable has stayed at its value while below End,
	// as seen by a HangTracker; 0 without one.
	PinnedFor time.Duration `json:"pinned_for_ns"`
	// Hanging says Stable has been pinned longer than the tracker's limit:
	// an open transaction (a hanging one, or one of a producer with a long
	// timeout) blocks every read_committed consumer of this partition.
	Hanging bool `json:"hanging"`
	// Err is a failure to list this partition's offsets.
	Err string `json:"error,omitempty"`
}

// LagReport is a lag sample of one set of topics.
type LagReport struct {
	Group      string         `json:"group,omitempty"`
	Source     string         `json:"source"` // where the committed offsets came from
	At         time.Time      `json:"at"`
	Partitions []PartitionLag `json:"partitions"`
	// Total is the sum of Lag over partitions.
	Total int64 `json:"total_lag"`
}

// Hanging returns the partitions that are pinned by an open transaction for
// longer than the tracker's limit.
func (r LagReport) Hanging() []PartitionLag {
	var out []PartitionLag
	for _, p := range r.Partitions {
		if p.Hanging {
			out = append(out, p)
		}
	}
	return out
}

// JSON returns the report as indented JSON.
func (r LagReport) JSON() ([]byte, error) { return json.MarshalIndent(r, "", "  ") }

// WriteText renders the report as a table, followed by a warning line per
// hanging partition.
func (r LagReport) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tCOMMITTED\tEND(HWM)\tSTABLE(LSO)\tLAG\tOPEN\tPINNED\t")
	for _, p := range r.Partitions {
		c := fmt.Sprint(p.Committed)
		if p.Committed < 0 {
			c = "-"
		}
		pinned := "-"
		if p.PinnedFor > 0 {
			pinned = p.PinnedFor.Round(time.Millisecond).String()
		}
		if p.Err != "" {
			fmt.Fprintf(tw, "%s\t%d\t%s\terror: %s\t\t\t\t\t\n", p.Topic, p.Partition, c, p.Err)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%s\t\n", p.Topic, p.Partition, c, p.End, p.Stable, p.Lag, p.Open, pinned)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	label := r.Source
	if r.Group != "" {
		label = "group " + r.Group + ", offsets from " + r.Source
	}
	fmt.Fprintf(w, "total lag %d (%s, at %s)\n", r.Total, label, r.At.UTC().Format(time.RFC3339))
	for _, p := range r.Hanging() {
		fmt.Fprintf(w, "WARN %s[%d]: last stable offset %d has stayed behind the high watermark %d for %v: an open (hanging) transaction pins every read_committed consumer of this partition; check it with kafka-transactions.sh --bootstrap-server <brokers> find-hanging --topic %s --partition %d, and if it is hanging abort it with kafka-transactions.sh --bootstrap-server <brokers> abort --topic %s --partition %d --start-offset %d\n",
			p.Topic, p.Partition, p.Stable, p.End, p.PinnedFor.Round(time.Second), p.Topic, p.Partition, p.Topic, p.Partition, p.Stable)
	}
	return nil
}

// Lag lists the start, end (high watermark) and last stable offsets of
// every partition of topics and computes each partition's lag against
// committed — offsets from any source: KafkaCommitted for Kafka mode, or
// rows of exactly's Postgres offsets table. The lag itself is kadm's
// CalculateGroupLagWithStartOffsets. A topic that does not exist is an
// error naming it.
func Lag(ctx context.Context, adm *kadm.Client, committed Committed, topics ...string) (LagReport, error) {
	rep := LagReport{At: time.Now()}
	if adm == nil {
		return rep, errNoAdmin
	}
	if len(topics) == 0 {
		return rep, errors.New("doctor: no topics given for lag: pass -topics a,b")
	}
	list := func(what string, fn func(context.Context, ...string) (kadm.ListedOffsets, error)) (kadm.ListedOffsets, error) {
		lo, err := fn(ctx, topics...)
		if err != nil && len(lo) == 0 {
			return nil, fmt.Errorf("doctor: listing %s offsets of %s: %w", what, strings.Join(topics, ","), err)
		}
		for _, t := range topics {
			ps, ok := lo[t]
			if !ok {
				return nil, fmt.Errorf("doctor: topic %q does not exist (listing its %s offsets): check -topics", t, what)
			}
			if p, ok := ps[-1]; ok && errors.Is(p.Err, kerr.UnknownTopicOrPartition) {
				return nil, fmt.Errorf("doctor: topic %q does not exist (listing its %s offsets): check -topics", t, what)
			}
		}
		return lo, nil
	}
	starts, err := list("start", adm.ListStartOffsets)
	if err != nil {
		return rep, err
	}
	ends, err := list("end", adm.ListEndOffsets)
	if err != nil {
		return rep, err
	}
	stables, err := list("last stable", adm.ListCommittedOffsets)
	if err != nil {
		return rep, err
	}

	// Every partition gets a commit entry, -1 where nothing is committed,
	// so that kadm computes a lag for all of them.
	commits := kadm.OffsetResponses{}
	for _, t := range topics {
		commits[t] = map[int32]kadm.OffsetResponse{}
		for p := range ends[t] {
			at := int64(-1)
			if c, ok := committed[t][p]; ok {
				at = c
			}
			commits[t][p] = kadm.OffsetResponse{Offset: kadm.Offset{Topic: t, Partition: p, At: at, LeaderEpoch: -1}}
		}
	}
	gl := kadm.CalculateGroupLagWithStartOffsets(kadm.DescribedGroup{}, commits, starts, ends)
	for _, t := range topics {
		for p := range ends[t] {
			l, _ := gl.Lookup(t, p)
			st, _ := stables.Lookup(t, p)
			row := PartitionLag{Topic: t, Partition: p, Committed: l.Commit.At,
				Start: l.Start.Offset, End: l.End.Offset, Stable: st.Offset, Lag: l.Lag}
			err := l.Err
			if err == nil {
				err = st.Err
			}
			if err != nil {
				row.Err = err.Error()
			} else {
				row.Open = max(row.End-row.Stable, 0)
				rep.Total += row.Lag
			}
			rep.Partitions = append(rep.Partitions, row)
		}
	}
	sort.Slice(rep.Partitions, func(i, j int) bool {
		a, b := rep.Partitions[i], rep.Partitions[j]
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		return a.Partition < b.Partition
	})
	return rep, nil
}

// HangTracker follows lag samples over time and marks the partitions whose
// last stable offset stays at one value below the high watermark for longer
// than After. One open transaction is normal; a last stable offset that does
// not move for longer than any transaction may stay open (the pipeline's
// transaction timeout) means a hanging transaction, which blocks every
// read_committed consumer of the partition until it is aborted.
//
// A HangTracker is not safe for concurrent use.
type HangTracker struct {
	// After is how long a pinned last stable offset is tolerated. Use the
	// transaction timeout of the slowest transactional producer of the
	// topics (the pipeline's, by default).
	After time.Duration
	since map[tpKey]pin
}

type tpKey struct {
	topic string
	part  int32
}

type pin struct {
	stable int64
	at     time.Time
}

// NewHangTracker returns a tracker that flags partitions pinned longer than
// after.
func NewHangTracker(after time.Duration) *HangTracker {
	return &HangTracker{After: after, since: map[tpKey]pin{}}
}

// Observe updates the tracker with rep (taken at rep.At) and sets
// PinnedFor and Hanging on rep's partitions.
func (h *HangTracker) Observe(rep *LagReport) {
	if h.since == nil {
		h.since = map[tpKey]pin{}
	}
	seen := map[tpKey]bool{}
	for i := range rep.Partitions {
		p := &rep.Partitions[i]
		k := tpKey{p.Topic, p.Partition}
		seen[k] = true
		if p.Err != "" || p.Stable >= p.End {
			delete(h.since, k)
			continue
		}
		prev, ok := h.since[k]
		if !ok || prev.stable != p.Stable {
			// A new open transaction (or the first sample): start timing.
			h.since[k] = pin{stable: p.Stable, at: rep.At}
			prev = h.since[k]
		}
		p.PinnedFor = rep.At.Sub(prev.at)
		p.Hanging = h.After > 0 && p.PinnedFor > h.After
	}
	for k := range h.since {
		if !seen[k] {
			delete(h.since, k)
		}
	}
}

// Watch samples lag every interval until ctx ends, runs every sample through
// a HangTracker with limit after, and hands it to each. The first sample is
// taken at once. It returns the first error of sample or each, or ctx's
// error when ctx ends. Watch starts no goroutines.
func Watch(ctx context.Context, interval, after time.Duration, sample func(context.Context) (LagReport, error), each func(LagReport) error) error {
	if interval <= 0 {
		return fmt.Errorf("doctor: watch interval %v: give a positive interval, e.g. 5s", interval)
	}
	if sample == nil || each == nil {
		return errors.New("doctor: Watch needs a sample and an each function")
	}
	h := NewHangTracker(after)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rep, err := sample(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		h.Observe(&rep)
		if err := each(rep); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
