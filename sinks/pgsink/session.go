package pgsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"

	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/txn"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// FetchMaxPartitionBytes is the most the session's consumer fetches from
// one partition per fetch (kgo.FetchMaxPartitionBytes) unless
// SessionConfig.ClientOpts sets it: 2 MiB, twice franz-go's default. A
// Postgres batch commits in a few milliseconds, so the loop mostly waits for
// fetches; with 2 MiB, `make bench` (1,000,000 records over 6 partitions,
// 5 rounds, 2026-12-01) moved 8% more rows per second at 100 B (median
// 903k against 835k) and 10% more at 1 KiB (221k against 201k), for 39 MB
// more peak RSS (141 MB).
const FetchMaxPartitionBytes = 2 << 20

// consumerClientOpts are the session consumer's options before the sink's
// own callbacks: its defaults, then cfg.ClientOpts (which override them),
// then cfg.ConsumerOpts.
func consumerClientOpts(cfg sinks.SessionConfig) []kgo.Opt {
	opts := make([]kgo.Opt, 0, 1+len(cfg.ClientOpts)+len(cfg.ConsumerOpts)+3)
	opts = append(opts, kgo.FetchMaxPartitionBytes(FetchMaxPartitionBytes))
	opts = append(opts, cfg.ClientOpts...)
	return append(opts, cfg.ConsumerOpts...)
}

// Open implements [sinks.Sink]. It checks that the offsets table exists and starts
// the session's consumer: a plain (non-transactional) group consumer built
// from cfg.ClientOpts and cfg.ConsumerOpts, whose partitions start at the
// offsets stored in Postgres. The sink sets kgo.AdjustFetchOffsetsFn,
// kgo.OnPartitionsRevoked and kgo.OnPartitionsLost itself, replacing any
// given in the options.
func (p *Sink) Open(ctx context.Context, cfg sinks.SessionConfig) (sinks.Session[*Writer], error) {
	if cfg.Group == "" {
		return nil, errors.New("pgsink: SessionConfig.Group is empty")
	}
	if err := p.checkTable(ctx); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &pgSession{
		p:      p,
		cfg:    cfg,
		log:    log.With("sink", "postgres"),
		ctx:    sctx,
		cancel: cancel,
		ledger: newLedger(),
	}
	if p.cfg.mirror {
		// Before the client: its callbacks may run before NewClient
		// returns. The mirror's goroutine starts once s.cl is set.
		s.mirror = newPgMirror(s)
	}
	cctx, cancelClient := context.WithCancel(context.Background())
	s.cancelClient = cancelClient
	opts := append(consumerClientOpts(cfg),
		kgo.WithContext(cctx), // see txn.CloseClient
		kgo.AdjustFetchOffsetsFn(s.adjust),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.disown(m, "revoked") }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.disown(m, "lost") }),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		cancel()
		cancelClient()
		if s.mirror != nil {
			s.mirror.cancel()
		}
		return nil, fmt.Errorf("pgsink: creating the consumer: %w", err)
	}
	s.cl = cl
	if s.mirror != nil {
		go s.mirror.run()
	}
	return s, nil
}

// pgSession is one session of the Postgres sink: a plain group consumer whose
// positions come from the offsets table, the ownership ledger that decides
// which polled records may commit, and the mirror of committed offsets to
// Kafka.
type pgSession struct {
	p      *Sink
	cfg    sinks.SessionConfig
	log    *slog.Logger
	cl     *kgo.Client
	ctx    context.Context // the session's lifetime
	cancel context.CancelFunc
	// cancelClient cancels cl's context (kgo.WithContext): txn.CloseClient.
	cancelClient context.CancelFunc
	mirror       *pgMirror
	ledger       *ledger
	fenced       atomic.Bool

	// Used only by the caller's goroutine.
	cur    *pgTxn
	closed bool

	warnedOverflow atomic.Bool
}

// adjust is the kgo.AdjustFetchOffsetsFn: it replaces the offsets kgo
// fetched from Kafka for newly assigned partitions with the ones stored in
// Postgres, in one query, before anything of those partitions is fetched.
// It retries until it succeeds or the partitions are revoked (ctx), so a
// database outage delays consumption and skips nothing.
func (s *pgSession) adjust(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	var (
		topics []string
		parts  []int32
	)
	for t, ps := range offsets {
		for p := range ps {
			topics = append(topics, t)
			parts = append(parts, p)
		}
	}
	if len(topics) == 0 {
		return offsets, nil
	}
	var stored map[topicPart]int64
	bo := s.p.newBackoff()
	for attempt := 1; ; attempt++ {
		var err error
		stored, err = s.p.loadOffsets(ctx, s.cfg.Group, topics, parts)
		if err == nil {
			break
		}
		if ctx.Err() != nil || s.ctx.Err() != nil {
			return nil, fmt.Errorf("pgsink: loading offsets of newly assigned partitions: %w", err)
		}
		s.log.Warn("loading offsets from postgres failed; partitions stay paused until it succeeds",
			"err", err, "attempt", attempt, "partitions", len(topics))
		if !bo.Wait(ctx, s.ctx) {
			return nil, fmt.Errorf("pgsink: loading offsets of newly assigned partitions: %w", err)
		}
	}
	s.ledger.assign(offsets, stored, s.p.cfg.start)
	s.log.Info("partitions assigned; positions loaded from postgres", "partitions", partsByTopic(topics, parts), "stored", len(stored))
	if s.mirror != nil && len(stored) > 0 {
		// The previous owner may have had no time to mirror its last
		// commits; mirror what the table says now, so Kafka's view
		// catches up even if no new records come.
		m := seekSet{}
		for k, next := range stored {
			m.add(k, next)
		}
		s.mirror.add(m)
	}
	return offsets, nil
}

// disown is the revoke and lost callback.
func (s *pgSession) disown(m map[string][]int32, why string) {
	if n := s.ledger.disown(m); n > 0 {
		s.log.Info("partitions "+why, "partitions", m)
	}
}

// partsByTopic groups partitions by topic, for the log.
func partsByTopic(topics []string, parts []int32) map[string][]int32 {
	m := make(map[string][]int32)
	for i, t := range topics {
		m[t] = append(m[t], parts[i])
	}
	for _, ps := range m {
		slices.Sort(ps)
	}
	return m
}

var errSessionClosed = errors.New("pgsink: session is closed")

// Poll implements [sinks.Session].
func (s *pgSession) Poll(ctx context.Context, max int) (kgo.Fetches, error) {
	if s.closed {
		return nil, errSessionClosed
	}
	snap := s.ledger.snapshot()
	fs := s.cl.PollRecords(ctx, max)
	s.ledger.polled(fs, snap)
	for _, fe := range fs.Errors() {
		if errors.Is(fe.Err, kerr.FencedInstanceID) {
			s.fenced.Store(true)
			return fs, fmt.Errorf("pgsink: %w: another instance joined the group with this instance id: %w", sinks.ErrFenced, fe.Err)
		}
	}
	return fs, nil
}

// EndBatchWhenDrained tells the pipeline that a batch at least half full may
// commit as soon as a poll finds nothing more fetched: a partition's commit
// costs a few milliseconds, less than waiting for the next fetch with nothing
// overlapping it (the client fetches nothing while polled records stay
// buffered).
func (s *pgSession) EndBatchWhenDrained() bool { return true }

// Begin implements [sinks.Session]: it begins one Postgres transaction per
// batch, each on its own connection. If they cannot all begin (the
// database is unreachable), none is kept, the batches' partitions are
// rewound, and the error wraps [sinks.ErrAborted].
func (s *pgSession) Begin(ctx context.Context, batches []*sinks.Batch) (sinks.Txn[*Writer], error) {
	if s.closed {
		return nil, errSessionClosed
	}
	if s.cur != nil {
		_ = s.cur.Rollback(ctx) // the caller did not end the last one
		s.cur = nil
	}
	t := &pgTxn{s: s, parts: make([]*pgPart, 0, len(batches)), byBatch: make(map[*sinks.Batch]*pgPart, len(batches))}
	for _, b := range batches {
		if b == nil || len(b.Records) == 0 {
			continue
		}
		pp := &pgPart{b: b, k: topicPart{b.Topic, b.Partition}, first: b.FirstOffset(), last: b.LastOffset()}
		t.parts = append(t.parts, pp)
		t.byBatch[b] = pp
	}
	seeks, reload, behind := s.ledger.begin(t.parts)
	for _, pp := range behind {
		s.log.Error("records polled from before the stored offset; was the topic re-created?",
			"topic", pp.k.topic, "partition", pp.k.partition, "first", pp.first)
	}
	s.seek(seeks)
	if len(reload) > 0 {
		s.reload(ctx, reload)
	}
	if err := t.open(ctx); err != nil {
		t.done = true
		s.seek(s.ledger.rewind(t.parts))
		s.log.Warn("postgres unavailable: could not begin the partitions' transactions; batches rewound", "err", err)
		return nil, fmt.Errorf("%w: postgres: beginning the partitions' transactions: %w", sinks.ErrAborted, err)
	}
	s.cur = t
	return t, nil
}

// reload re-reads the stored offsets of dirty partitions and seeks them
// there. On failure they stay dirty and are tried again at the next Begin.
func (s *pgSession) reload(ctx context.Context, ks []topicPart) {
	topics := make([]string, len(ks))
	parts := make([]int32, len(ks))
	for i, k := range ks {
		topics[i], parts[i] = k.topic, k.partition
	}
	stored, err := s.p.loadOffsets(ctx, s.cfg.Group, topics, parts)
	if err != nil {
		s.log.Warn("re-reading offsets after an unknown commit outcome failed; will retry", "err", err)
		return
	}
	s.seek(s.ledger.reloaded(ks, stored))
}

// seek moves consumer positions; never called with s.mu held.
func (s *pgSession) seek(ss seekSet) {
	if len(ss) > 0 {
		s.cl.SetOffsets(ss)
	}
}

// Close implements [sinks.Session].
func (s *pgSession) Close(ctx context.Context) error {
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.cur != nil {
		err = s.cur.Rollback(ctx)
		s.cur = nil
	}
	if s.mirror != nil {
		s.mirror.stop(ctx)
	}
	s.cancel()
	txn.CloseMember(ctx, s.cl, s.cancelClient, s.cfg.ClientOpts, s.cfg.StaticMember, s.fenced.Load(), s.log)
	return err
}

// ConsumesFromKafka implements [sinks.KafkaConsumer]: the pipeline checks
// the brokers and the input topics before the first session opens (the
// Postgres sink's Open itself never contacts Kafka).
func (p *Sink) ConsumesFromKafka() bool { return true }
