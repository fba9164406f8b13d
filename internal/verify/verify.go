// Package verify is the independent exactly-once verifier used by the
// example ETL and the tests. It knows nothing of the pipeline: it reads the
// input and output topics with read_committed consumers from the start to the
// end and checks that every input record's effect is in the outputs exactly
// once, in order per partition.
package verify

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/exactlyonce/exactly/sinks/kafkasink"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Source names an input record.
type Source struct {
	Topic     string
	Partition int32
	Offset    int64
}

func (s Source) String() string { return fmt.Sprintf("%s[%d]@%d", s.Topic, s.Partition, s.Offset) }

// Report is what the verifier found.
type Report struct {
	In              int            // input records
	Out             map[string]int // output records per output topic
	Duplicates      int            // output records whose source was already seen
	Missing         int            // input records with no output
	Unknown         int            // output records whose source is not an input record
	OrderViolations int            // per output partition and source partition, source offsets not increasing
	Problems        []string       // the first few problems, for humans
}

// OK reports whether the outputs are exact.
func (r Report) OK() bool {
	return r.Duplicates == 0 && r.Missing == 0 && r.Unknown == 0 && r.OrderViolations == 0
}

// TotalOut is the number of output records over all output topics.
func (r Report) TotalOut() int {
	n := 0
	for _, v := range r.Out {
		n += v
	}
	return n
}

func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "in=%d out=%v duplicates=%d missing=%d unknown=%d order_violations=%d",
		r.In, r.Out, r.Duplicates, r.Missing, r.Unknown, r.OrderViolations)
	for _, p := range r.Problems {
		b.WriteString("\n  ")
		b.WriteString(p)
	}
	return b.String()
}

// Options configures Check.
type Options struct {
	ClientOpts []kgo.Opt // connection options: kgo.SeedBrokers, TLS, SASL
	Input      string    // the input topic
	Outputs    []string  // the output topics (outputs and dead letters)
	// SourceOf tells which input record an output record came from.
	SourceOf func(*kgo.Record) (Source, error)
	// Timeout bounds reading each topic to its end; a partition whose
	// end cannot be reached (an open transaction pins its last stable
	// offset) fails the check. Default 60s.
	Timeout time.Duration
}

const maxProblems = 10

// Check reads the input and the outputs to their ends and compares them.
func Check(ctx context.Context, o Options) (Report, error) {
	if o.Timeout == 0 {
		o.Timeout = time.Minute
	}
	in, err := ReadAll(ctx, o.ClientOpts, o.Input, o.Timeout)
	if err != nil {
		return Report{}, err
	}
	inputs := make([]Source, len(in))
	for i, r := range in {
		inputs[i] = Source{r.Topic, r.Partition, r.Offset}
	}
	var outputs []Output
	var bad []string
	counts := map[string]int{}
	for _, topic := range o.Outputs {
		out, err := ReadAll(ctx, o.ClientOpts, topic, o.Timeout)
		if err != nil {
			return Report{}, err
		}
		counts[topic] = len(out)
		for _, r := range out {
			src, err := o.SourceOf(r)
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s[%d]@%d: %v", r.Topic, r.Partition, r.Offset, err))
				continue
			}
			outputs = append(outputs, Output{Where: topic, Domain: r.Partition, Source: src})
		}
	}
	rep := Compare(inputs, outputs)
	for t, n := range counts {
		rep.Out[t] = n
	}
	rep.Unknown += len(bad)
	rep.Problems = append(bad[:min(len(bad), maxProblems)], rep.Problems...)
	if len(rep.Problems) > maxProblems {
		rep.Problems = rep.Problems[:maxProblems]
	}
	return rep, nil
}

// Output is one effect as the verifier sees it: where it is (a topic or a
// table), its ordering domain there (an output partition; 0 for a table
// read in insertion order), and the input record it came from. Outputs are
// given to Compare in the order they were written within each (Where,
// Domain).
type Output struct {
	Where  string
	Domain int32
	Source Source
}

// Compare checks outputs against inputs: each input exactly once over all
// outputs, no output without an input, and, within each ordering domain,
// the outputs of one input partition in increasing offset order.
func Compare(inputs []Source, outputs []Output) Report {
	rep := Report{In: len(inputs), Out: map[string]int{}}
	problem := func(format string, args ...any) {
		if len(rep.Problems) < maxProblems {
			rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
		}
	}
	seen := make(map[Source]int, len(inputs))
	for _, s := range inputs {
		seen[s] = 0
	}
	type key struct {
		where   string
		domain  int32
		srcPart int32
	}
	last := map[key]int64{}
	for _, o := range outputs {
		rep.Out[o.Where]++
		src := o.Source
		n, ok := seen[src]
		if !ok {
			rep.Unknown++
			problem("%s[%d] names source %v, which is not an input record", o.Where, o.Domain, src)
			continue
		}
		seen[src] = n + 1
		if n > 0 {
			rep.Duplicates++
			problem("duplicate: source %v appears again in %s[%d]", src, o.Where, o.Domain)
			continue
		}
		k := key{o.Where, o.Domain, src.Partition}
		if prev, ok := last[k]; ok && src.Offset <= prev {
			rep.OrderViolations++
			problem("order: in %s[%d] source %v comes after source offset %d", o.Where, o.Domain, src, prev)
		}
		last[k] = src.Offset
	}
	var missing []Source
	for s, n := range seen {
		if n == 0 {
			missing = append(missing, s)
		}
	}
	rep.Missing = len(missing)
	sort.Slice(missing, func(i, j int) bool {
		if missing[i].Partition != missing[j].Partition {
			return missing[i].Partition < missing[j].Partition
		}
		return missing[i].Offset < missing[j].Offset
	})
	for _, s := range missing {
		problem("missing: no output for %v", s)
	}
	return rep
}

// ReadAll reads every committed data record of topic, from the start to the
// end offsets as they are when it starts, with a read_committed consumer.
// Control records (transaction markers) are read to track progress but not
// returned. If an open transaction keeps a partition's last stable offset
// below its end, ReadAll fails after timeout and says which partition.
func ReadAll(ctx context.Context, clientOpts []kgo.Opt, topic string, timeout time.Duration) ([]*kgo.Record, error) {
	adm, err := kgo.NewClient(clientOpts...)
	if err != nil {
		return nil, err
	}
	ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, topic)
	adm.Close()
	if err != nil {
		return nil, fmt.Errorf("verify: listing end offsets of %q: %w", topic, err)
	}
	if err := ends.Error(); err != nil {
		return nil, fmt.Errorf("verify: listing end offsets of %q: %w", topic, err)
	}
	want := map[int32]int64{} // partition -> end offset, until reached
	endOf := map[int32]int64{}
	parts := map[int32]kgo.Offset{}
	ends.Each(func(lo kadm.ListedOffset) {
		if lo.Offset > 0 {
			want[lo.Partition] = lo.Offset
			endOf[lo.Partition] = lo.Offset
			parts[lo.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(want) == 0 {
		return nil, nil
	}
	// On Apache Kafka the markers of a transaction that just ended can
	// land after the end offsets were listed; a short fetch wait keeps the
	// reader from idling kgo's default 5s until they do. clientOpts may
	// override it.
	opts := append(append([]kgo.Opt{kgo.FetchMaxWait(250 * time.Millisecond)}, clientOpts...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	next := map[int32]int64{}
	var out []*kgo.Record
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if parent.Err() != nil {
			return nil, fmt.Errorf("verify: reading %q: %w", topic, context.Cause(parent))
		}
		if ctx.Err() != nil {
			var at []string
			stuck := map[int32]stuckPartition{}
			for p, end := range want {
				at = append(at, fmt.Sprintf("partition %d at %d of %d", p, next[p], end))
				stuck[p] = stuckPartition{next: next[p], end: end}
			}
			sort.Strings(at)
			return nil, fmt.Errorf("verify: reading %q to its end timed out after %v (%s)%s", topic, timeout, strings.Join(at, ", "), diagnose(cl, topic, stuck))
		}
		for _, fe := range fs.Errors() {
			if !errors.Is(fe.Err, context.DeadlineExceeded) && !errors.Is(fe.Err, context.Canceled) {
				return nil, fmt.Errorf("verify: reading %q partition %d: %w", fe.Topic, fe.Partition, fe.Err)
			}
		}
		fs.EachRecord(func(r *kgo.Record) {
			end := endOf[r.Partition]
			// A read_committed reader never receives aborted records, so
			// the first record it gets at or past the end can be the
			// marker of a transaction that aborted after the end offsets
			// were listed (Apache Kafka answers EndTxn before it writes
			// the markers): reaching the end or passing it both finish
			// the partition.
			if r.Offset+1 >= end {
				delete(want, r.Partition)
			}
			if r.Offset >= end {
				return // written after the read began
			}
			next[r.Partition] = r.Offset + 1
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
		})
	}
	return out, nil
}

// SourceFromHeaders reads an output record's source from the headers that
// kafkasink.DeadLetterRecord writes (and that the examples and tests write on
// their outputs): exactly.source.topic, .partition and .offset.
func SourceFromHeaders(r *kgo.Record) (Source, error) {
	var (
		src  Source
		have int
	)
	for _, h := range r.Headers {
		var err error
		switch h.Key {
		case kafkasink.HeaderSourceTopic:
			src.Topic = string(h.Value)
		case kafkasink.HeaderSourcePartition:
			var p int64
			p, err = strconv.ParseInt(string(h.Value), 10, 32)
			src.Partition = int32(p)
		case kafkasink.HeaderSourceOffset:
			src.Offset, err = strconv.ParseInt(string(h.Value), 10, 64)
		default:
			continue
		}
		if err != nil {
			return Source{}, fmt.Errorf("header %s=%q: %w", h.Key, h.Value, err)
		}
		have++
	}
	if have < 3 {
		return Source{}, errors.New("source headers missing")
	}
	return src, nil
}

// GroupLag is how many records of topic the consumer group has not
// committed: the sum over partitions of the end offset minus the group's
// committed offset (0 where it has none).
func GroupLag(ctx context.Context, adm *kadm.Client, topic, group string) (int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, err
	}
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return 0, err
	}
	var lag int64
	ends.Each(func(lo kadm.ListedOffset) {
		at := int64(0)
		if c, ok := offs.Lookup(lo.Topic, lo.Partition); ok && c.Err == nil && c.At > 0 {
			at = c.At
		}
		lag += lo.Offset - at
	})
	return lag, nil
}
