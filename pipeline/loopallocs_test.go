package pipeline_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
)

// recycleSink is a sink without Kafka whose Poll hands out records it built
// once, so that what a run allocates is the loop's own work: collect,
// process, runTxn. Each poll returns up to max records over parts
// partitions, as kgo does (one fetch, capped slices); Commit counts
// records and cancels the run once it saw total.
type recycleSink struct {
	parts  int
	recs   [][]*kgo.Record // per partition
	pos    []int
	total  int64
	seen   atomic.Int64
	cancel context.CancelFunc
}

func newRecycleSink(parts, perPart int, total int64) *recycleSink {
	s := &recycleSink{parts: parts, recs: make([][]*kgo.Record, parts), pos: make([]int, parts), total: total}
	for p := range parts {
		for i := range perPart {
			s.recs[p] = append(s.recs[p], &kgo.Record{Topic: "in", Partition: int32(p), Offset: int64(i), Key: []byte("k"), Value: make([]byte, 100)})
		}
	}
	return s
}

func (s *recycleSink) Open(context.Context, sinks.SessionConfig) (sinks.Session[*fakeWriter], error) {
	return s, nil
}

func (s *recycleSink) Poll(ctx context.Context, limit int) (kgo.Fetches, error) {
	if ctx.Err() != nil {
		return nil, nil
	}
	ps := make([]kgo.FetchPartition, 0, s.parts)
	per := max(1, limit/s.parts)
	for p := 0; p < s.parts && limit > 0; p++ {
		n := min(per, limit, len(s.recs[p])-s.pos[p])
		if n == 0 {
			s.pos[p] = 0
			n = min(per, limit)
		}
		rs := s.recs[p][s.pos[p] : s.pos[p]+n : s.pos[p]+n]
		s.pos[p] += n
		limit -= n
		ps = append(ps, kgo.FetchPartition{Partition: int32(p), Records: rs})
	}
	return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "in", Partitions: ps}}}}, nil
}

func (s *recycleSink) Begin(_ context.Context, batches []*sinks.Batch) (sinks.Txn[*fakeWriter], error) {
	return &recycleTxn{s: s, batches: batches}, nil
}

func (s *recycleSink) Close(context.Context) error { return nil }

type recycleTxn struct {
	s       *recycleSink
	batches []*sinks.Batch
}

func (t *recycleTxn) Writer(b *sinks.Batch) *fakeWriter { return &fakeWriter{b: b} }

func (t *recycleTxn) Commit(context.Context) error {
	n := 0
	for _, b := range t.batches {
		n += len(b.Records)
	}
	if t.s.seen.Add(int64(n)) >= t.s.total {
		t.s.cancel()
	}
	return nil
}

func (t *recycleTxn) Rollback(context.Context) error { return nil }

// BenchmarkLoopAllocs measures the loop's own heap allocations and CPU per
// record (collect, process, runTxn and a Stage that touches each record),
// without Kafka: what exactly adds per record on top of the client.
// Reports allocs/rec, B/rec and ns/rec.
func BenchmarkLoopAllocs(b *testing.B) {
	const total = 1_000_000
	var allocs, bytes, recs float64
	var took time.Duration
	for b.Loop() {
		s := newRecycleSink(6, 20_000, total)
		var touched atomic.Int64
		stage := pipeline.StageFunc[*fakeWriter](func(_ context.Context, bt *sinks.Batch, _ *fakeWriter) error {
			n := 0
			for _, r := range bt.Records {
				n += len(r.Value)
			}
			touched.Add(int64(n))
			return nil
		})
		p, err := pipeline.New(s, stage, pipeline.Brokers("127.0.0.1:1"), pipeline.Group("g"), pipeline.Topics("in"), pipeline.InstanceID("i"))
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		s.cancel = cancel
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		start := time.Now()
		err = p.Run(ctx)
		took += time.Since(start)
		runtime.ReadMemStats(&m1)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		allocs += float64(m1.Mallocs - m0.Mallocs)
		bytes += float64(m1.TotalAlloc - m0.TotalAlloc)
		recs += float64(s.seen.Load())
	}
	b.ReportMetric(allocs/recs, "allocs/rec")
	b.ReportMetric(bytes/recs, "B/rec")
	b.ReportMetric(float64(took.Nanoseconds())/recs, "ns/rec")
	b.ReportMetric(0, "ns/op")
}
