package pipeline_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
)

// drySink holds avail records of one partition; a poll takes up to max of
// them, and once they are gone a poll waits for its context, as kgo's does
// when nothing is fetched. It records, per commit, how many polls had waited
// before it.
type drySink struct {
	mu      sync.Mutex
	avail   int
	next    int64
	waited  int
	commits chan drySinkCommit
}

type drySinkCommit struct{ records, waitedBefore int }

// earlyDrySink is a drySink whose session asks for batches that end when
// nothing more is fetched, as the Postgres sink's does.
type earlyDrySink struct{ *drySink }

func (s earlyDrySink) Open(context.Context, sinks.SessionConfig) (sinks.Session[*fakeWriter], error) {
	return s, nil
}

func (earlyDrySink) EndBatchWhenDrained() bool { return true }

func (s *drySink) Open(context.Context, sinks.SessionConfig) (sinks.Session[*fakeWriter], error) {
	return s, nil
}

func (s *drySink) Poll(ctx context.Context, limit int) (kgo.Fetches, error) {
	s.mu.Lock()
	if s.avail == 0 {
		s.waited++
		s.mu.Unlock()
		<-ctx.Done()
		return nil, nil
	}
	var rs []*kgo.Record
	for range min(limit, s.avail) {
		rs = append(rs, &kgo.Record{Topic: "in", Partition: 0, Offset: s.next, Value: []byte("v")})
		s.next++
	}
	s.avail -= len(rs)
	s.mu.Unlock()
	return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "in", Partitions: []kgo.FetchPartition{{Partition: 0, Records: rs}}}}}}, nil
}

func (s *drySink) Begin(_ context.Context, batches []*sinks.Batch) (sinks.Txn[*fakeWriter], error) {
	return &dryTxn{s: s, batches: batches}, nil
}

func (s *drySink) Close(context.Context) error { return nil }

type dryTxn struct {
	s       *drySink
	batches []*sinks.Batch
}

func (t *dryTxn) Writer(b *sinks.Batch) *fakeWriter { return &fakeWriter{b: b} }

func (t *dryTxn) Commit(context.Context) error {
	n := 0
	for _, b := range t.batches {
		n += len(b.Records)
	}
	t.s.mu.Lock()
	c := drySinkCommit{records: n, waitedBefore: t.s.waited}
	t.s.mu.Unlock()
	t.s.commits <- c
	return nil
}

func (t *dryTxn) Rollback(context.Context) error { return nil }

// For a session that asks for it (the Postgres sink's), a batch at least half
// of MaxRecords ends as soon as a poll takes everything fetched so far (it
// returned fewer records than it asked for): it does not wait MaxWait for
// more, so the client's next fetch overlaps the Stage and the commit. A
// smaller batch still waits for more, up to MaxWait, and so does every batch
// of a session that does not ask for it (Kafka mode).
func TestHalfFullBatchEndsWhenNothingMoreIsFetched(t *testing.T) {
	for _, tc := range []struct {
		name      string
		early     bool
		avail     int
		mustWait  bool
		maxRecord int
	}{
		{"half full: no wait", true, 60, false, 100},
		{"less than half: waits for more", true, 40, true, 100},
		{"full: no wait", true, 100, false, 100},
		{"not asked for: half full waits", false, 60, true, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &drySink{avail: tc.avail, commits: make(chan drySinkCommit, 4)}
			var sink sinks.Sink[*fakeWriter] = s
			if tc.early {
				sink = earlyDrySink{s}
			}
			p, err := pipeline.New[*fakeWriter](sink, pipeline.StageFunc[*fakeWriter](func(context.Context, *sinks.Batch, *fakeWriter) error { return nil }),
				pipeline.Brokers("127.0.0.1:1"), pipeline.Group("g"), pipeline.Topics("in"), pipeline.InstanceID("a"),
				pipeline.MaxRecords(tc.maxRecord), pipeline.MaxWait(50*time.Millisecond))
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			defer func() {
				cancel()
				require.NoError(t, <-done)
			}()
			select {
			case c := <-s.commits:
				require.Equal(t, tc.avail, c.records, "the first transaction holds every record there was")
				if tc.mustWait {
					require.Positive(t, c.waitedBefore, "a batch below half of MaxRecords committed without waiting for more")
				} else {
					require.Zero(t, c.waitedBefore, "the batch waited for records although it was half full and nothing more was fetched")
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no transaction committed")
			}
		})
	}
}
