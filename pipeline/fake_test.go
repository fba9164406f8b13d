package pipeline_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/sinks"
)

// fakeSink is a sink without Kafka, for tests of the loop's own logic: what
// Run does with each answer of a sink. Poll hands out the records of
// partitions 0..parts-1, n per poll, at increasing offsets; Commit and
// Rollback answer what the test set.
type fakeSink struct {
	parts  int32
	n      int
	commit func(batches []*sinks.Batch) error // nil: commit succeeds
	roll   func() error                       // nil: rollback succeeds
	// fetchErr, when set, is returned once as partition 0's fetch error,
	// with no records, by the first poll after the first commit.
	fetchErr error
	commits  atomic.Int64
	errSent  atomic.Bool

	mu     sync.Mutex
	next   map[int32]int64
	polls  atomic.Int64
	closed atomic.Bool
}

type fakeWriter struct{ b *sinks.Batch }

func (f *fakeSink) Open(context.Context, sinks.SessionConfig) (sinks.Session[*fakeWriter], error) {
	return f, nil
}

func (f *fakeSink) Poll(ctx context.Context, max int) (kgo.Fetches, error) {
	f.polls.Add(1)
	if ctx.Err() != nil {
		return nil, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.next == nil {
		f.next = map[int32]int64{}
	}
	if f.fetchErr != nil && f.commits.Load() > 0 && f.errSent.CompareAndSwap(false, true) {
		return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "in", Partitions: []kgo.FetchPartition{{Partition: 0, Err: f.fetchErr}}}}}}, nil
	}
	var ps []kgo.FetchPartition
	for i := range f.parts {
		p := (int32(f.polls.Load()) + i) % f.parts // start with another partition each poll
		var rs []*kgo.Record
		for range min(f.n, max) {
			rs = append(rs, &kgo.Record{Topic: "in", Partition: p, Offset: f.next[p], Value: []byte("0123456789")})
			f.next[p]++
		}
		max -= len(rs)
		ps = append(ps, kgo.FetchPartition{Partition: p, Records: rs})
	}
	return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "in", Partitions: ps}}}}, nil
}

func (f *fakeSink) Begin(_ context.Context, batches []*sinks.Batch) (sinks.Txn[*fakeWriter], error) {
	return &fakeTxn{f: f, batches: batches}, nil
}

func (f *fakeSink) Close(context.Context) error { f.closed.Store(true); return nil }

type fakeTxn struct {
	f       *fakeSink
	batches []*sinks.Batch
	done    bool
}

func (t *fakeTxn) Writer(b *sinks.Batch) *fakeWriter { return &fakeWriter{b: b} }

func (t *fakeTxn) Commit(context.Context) error {
	t.done = true
	defer t.f.commits.Add(1)
	if t.f.commit != nil {
		return t.f.commit(t.batches)
	}
	return nil
}

func (t *fakeTxn) Rollback(context.Context) error {
	if t.done {
		return nil
	}
	t.done = true
	if t.f.roll != nil {
		return t.f.roll()
	}
	return nil
}

// errDropped makes a kfake control function close the client's connection.
var errDropped = errors.New("connection dropped by the test")
