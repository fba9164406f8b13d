package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactlyonce/exactly/txn"
)

const (
	// acquireWait bounds the wait for a pooled connection before a
	// partition's transaction falls back to a dedicated one: a pool that
	// stays exhausted (shared by several pipelines, or too small) must not
	// deadlock transactions that each hold part of it.
	acquireWait = 500 * time.Millisecond
	// connectTimeout bounds opening a dedicated connection.
	connectTimeout = 15 * time.Second
	// resolveBudget bounds the resolution of a commit whose outcome was
	// unknown. It runs even if the commit's context is done: leaving the
	// outcome unresolved costs a re-read before the partition commits
	// again, never correctness.
	resolveBudget = 5 * time.Second
	// mirrorTimeout bounds one mirror commit to Kafka.
	mirrorTimeout = 10 * time.Second
)

// Open implements [Sink]. It checks that the offsets table exists and starts
// the session's consumer: a plain (non-transactional) group consumer built
// from cfg.ClientOpts and cfg.ConsumerOpts, whose partitions start at the
// offsets stored in Postgres. The sink sets kgo.AdjustFetchOffsetsFn,
// kgo.OnPartitionsRevoked and kgo.OnPartitionsLost itself, replacing any
// given in the options.
func (p *Postgres) Open(ctx context.Context, cfg SessionConfig) (Session[*PostgresWriter], error) {
	if cfg.Group == "" {
		return nil, errors.New("sinks: postgres: SessionConfig.Group is empty")
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
		parts:  map[topicPart]*partState{},

		disowned: map[topicPart]uint64{},
	}
	if p.cfg.mirror {
		// Before the client: its callbacks may run before NewClient
		// returns. The mirror's goroutine starts once s.cl is set.
		s.mirror = newPgMirror(s)
	}
	opts := make([]kgo.Opt, 0, len(cfg.ClientOpts)+len(cfg.ConsumerOpts)+3)
	opts = append(opts, cfg.ClientOpts...)
	opts = append(opts, cfg.ConsumerOpts...)
	opts = append(opts,
		kgo.AdjustFetchOffsetsFn(s.adjust),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.disown(m, "revoked") }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.disown(m, "lost") }),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		cancel()
		if s.mirror != nil {
			s.mirror.cancel()
		}
		return nil, fmt.Errorf("sinks: postgres: creating the consumer: %w", err)
	}
	s.cl = cl
	if s.mirror != nil {
		go s.mirror.run()
	}
	return s, nil
}

type topicPart struct {
	topic     string
	partition int32
}

// partState is what a session knows of one partition. Every change of
// ownership or position bumps changed to a new value of the session's
// sequence; records polled before a change are never committed after it.
type partState struct {
	owned   bool
	changed uint64
	// hasRow and next: the partition's row in the offsets table as this
	// session last read or wrote it. The consumer position is at next (or,
	// without a row, at the configured start) when changed was set, and
	// moves only by polling until the next change.
	hasRow bool
	next   int64
	// pending is the offset of the first record polled since the last
	// change or the last Begin, -1 if none: a batch commits only if it
	// starts there, so records the caller dropped are never skipped.
	pending int64
	// polled is how many records were polled since pending was set: a
	// batch commits only if it holds exactly those, so a batch that mixes
	// an old cursor's records with a new one's (a revoke and re-assignment
	// inside one collect) never commits, and neither does one whose tail
	// the caller dropped.
	polled int
	// startAt is the first offset of the first batch begun without a row:
	// where the partition rewinds to while it has no row.
	startAt int64
	// dirty: a commit's outcome is unknown; the row must be re-read and
	// the position set from it before the partition commits again.
	dirty bool
	// assigned is the sequence value of the assignment that created
	// this state.
	assigned uint64
}

type pgSession struct {
	p      *Postgres
	cfg    SessionConfig
	log    *slog.Logger
	cl     *kgo.Client
	ctx    context.Context // the session's lifetime
	cancel context.CancelFunc
	mirror *pgMirror

	mu    sync.Mutex
	seq   uint64
	parts map[topicPart]*partState
	// disowned is the sequence value at which each partition was last
	// revoked or lost.
	disowned map[topicPart]uint64
	fenced   atomic.Bool

	// Used only by the caller's goroutine.
	cur    *pgTxn
	closed bool

	warnedOverflow atomic.Bool
}

// rewindTarget is where the partition's position goes back to: the stored
// offset; without a row, the earliest offset known to be at or before the
// configured start's first record (first is the offset of a batch polled
// since the partition was assigned without a row, so it is one of them).
func (st *partState) rewindTarget(first int64) int64 {
	if st.hasRow {
		return st.next
	}
	target := first
	if st.pending >= 0 {
		target = min(target, st.pending)
	}
	if st.startAt >= 0 {
		target = min(target, st.startAt)
	}
	return target
}

// changeLocked records a change of the partition's ownership or position.
func (s *pgSession) changeLocked(st *partState) {
	s.seq++
	st.changed = s.seq
	st.pending = -1
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
			return nil, fmt.Errorf("sinks: postgres: loading offsets of newly assigned partitions: %w", err)
		}
		s.log.Warn("loading offsets from postgres failed; partitions stay paused until it succeeds",
			"err", err, "attempt", attempt, "partitions", len(topics))
		if !bo.wait(ctx, s.ctx) {
			return nil, fmt.Errorf("sinks: postgres: loading offsets of newly assigned partitions: %w", err)
		}
	}
	s.mu.Lock()
	for t, ps := range offsets {
		for p := range ps {
			k := topicPart{t, p}
			if old := s.parts[k]; old != nil && old.owned {
				// Re-assigned without a revoke in between: the
				// old cursor's records are as stale as a revoked
				// partition's.
				s.changeLocked(old)
				s.disowned[k] = s.seq
			}
			st := &partState{owned: true, startAt: -1}
			s.parts[k] = st
			s.changeLocked(st)
			st.assigned = st.changed
			if next, ok := stored[k]; ok {
				st.hasRow, st.next = true, next
				ps[p] = kgo.NewOffset().At(next)
			} else {
				ps[p] = s.p.cfg.start
			}
		}
	}
	s.mu.Unlock()
	s.log.Debug("partitions assigned; positions loaded from postgres", "partitions", len(topics), "stored", len(stored))
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
	n := 0
	s.mu.Lock()
	for t, ps := range m {
		for _, p := range ps {
			k := topicPart{t, p}
			if st := s.parts[k]; st != nil {
				s.changeLocked(st)
				st.owned = false
				delete(s.parts, k)
				s.disowned[k] = s.seq
				n++
			}
		}
	}
	s.mu.Unlock()
	if n > 0 {
		s.log.Debug("partitions "+why, "partitions", n)
	}
}

// ownsSince reports whether the partition is owned and unchanged since epoch.
func (s *pgSession) ownsSince(k topicPart, epoch uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.parts[k]
	return st != nil && st.owned && st.changed == epoch
}

var errSessionClosed = errors.New("sinks: postgres: session is closed")

// Poll implements [Session].
func (s *pgSession) Poll(ctx context.Context, max int) (kgo.Fetches, error) {
	if s.closed {
		return nil, errSessionClosed
	}
	s.mu.Lock()
	snap := s.seq
	s.mu.Unlock()
	fs := s.cl.PollRecords(ctx, max)
	s.mu.Lock()
	fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
		if len(ftp.Records) == 0 {
			return
		}
		k := topicPart{ftp.Topic, ftp.Partition}
		st := s.parts[k]
		if st == nil || !st.owned {
			return
		}
		if st.pending >= 0 {
			st.polled += len(ftp.Records)
			return
		}
		// Records of a partition that changed while the poll ran may
		// come from before the change, and never become pending (a
		// batch holding them does not commit), except when the change
		// is the partition's assignment and it was not owned when the
		// poll began: kgo returns no records of a revoked partition to
		// a poll that begins after the revoke.
		if st.changed > snap && !(st.changed == st.assigned && s.disowned[k] <= snap) {
			return
		}
		st.pending = ftp.Records[0].Offset
		st.polled = len(ftp.Records)
	})
	s.mu.Unlock()
	for _, fe := range fs.Errors() {
		if errors.Is(fe.Err, kerr.FencedInstanceID) {
			s.fenced.Store(true)
			return fs, fmt.Errorf("sinks: postgres: %w: another instance joined the group with this instance id: %w", ErrFenced, fe.Err)
		}
	}
	return fs, nil
}

// Begin implements [Session]: it begins one Postgres transaction per
// batch, each on its own connection. If they cannot all begin (the
// database is unreachable), none is kept, the batches' partitions are
// rewound, and the error wraps [ErrAborted].
func (s *pgSession) Begin(ctx context.Context, batches []*Batch) (Txn[*PostgresWriter], error) {
	if s.closed {
		return nil, errSessionClosed
	}
	if s.cur != nil {
		_ = s.cur.Rollback(ctx) // the caller did not end the last one
		s.cur = nil
	}
	t := &pgTxn{s: s, parts: make([]*pgPart, 0, len(batches)), byBatch: make(map[*Batch]*pgPart, len(batches))}
	seeks := seekSet{}
	var reload []topicPart
	s.mu.Lock()
	for _, b := range batches {
		if b == nil || len(b.Records) == 0 {
			continue
		}
		pp := &pgPart{b: b, k: topicPart{b.Topic, b.Partition}, first: b.FirstOffset(), last: b.LastOffset()}
		t.parts = append(t.parts, pp)
		t.byBatch[b] = pp
		st := s.parts[pp.k]
		switch {
		case st == nil || !st.owned:
			pp.skip = errNotOwned
		case st.dirty:
			pp.skip = errUnknownOutcome
			reload = append(reload, pp.k)
		case st.pending != pp.first || st.polled != len(b.Records) || (st.hasRow && pp.first < st.next):
			// The batch holds records from before a change, or the
			// caller dropped records polled before it: the position
			// may be past records that are not in the batch. Put it
			// back where the partition's committed offset says.
			pp.skip = errStale
			if st.hasRow && pp.first < st.next && st.pending == pp.first {
				s.log.Error("records polled from before the stored offset; was the topic re-created?",
					"topic", pp.k.topic, "partition", pp.k.partition, "first", pp.first, "stored_next", st.next)
			}
			seeks.add(pp.k, st.rewindTarget(pp.first))
			s.changeLocked(st)
		default:
			pp.valid = true
			pp.epoch = st.changed
			pp.expectRow, pp.expect = st.hasRow, st.next
			if !st.hasRow {
				st.startAt = pp.first
			}
		}
		if st != nil {
			st.pending = -1
		}
	}
	s.mu.Unlock()
	s.seek(seeks)
	if len(reload) > 0 {
		s.reload(ctx, reload)
	}
	if err := t.open(ctx); err != nil {
		t.done = true
		t.rewind(t.parts)
		s.log.Warn("postgres unavailable: could not begin the partitions' transactions; batches rewound", "err", err)
		return nil, fmt.Errorf("%w: postgres: beginning the partitions' transactions: %w", ErrAborted, err)
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
	seeks := seekSet{}
	s.mu.Lock()
	for _, k := range ks {
		st := s.parts[k]
		if st == nil || !st.dirty {
			continue
		}
		next, ok := stored[k]
		target := st.startAt
		if ok {
			target = next
		}
		st.hasRow, st.next, st.dirty = ok, next, false
		s.changeLocked(st)
		if target >= 0 {
			seeks.add(k, target)
		}
	}
	s.mu.Unlock()
	s.seek(seeks)
}

type seekSet map[string]map[int32]kgo.EpochOffset

func (ss seekSet) add(k topicPart, offset int64) {
	if ss[k.topic] == nil {
		ss[k.topic] = map[int32]kgo.EpochOffset{}
	}
	ss[k.topic][k.partition] = kgo.EpochOffset{Epoch: -1, Offset: offset}
}

// seek moves consumer positions; never called with s.mu held.
func (s *pgSession) seek(ss seekSet) {
	if len(ss) > 0 {
		s.cl.SetOffsets(ss)
	}
}

// Close implements [Session].
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
	member, _ := s.cl.GroupMetadata()
	instance, _ := s.cl.OptValue(kgo.InstanceID).(string)
	s.cancel()
	s.cl.Close()
	if s.cfg.StaticMember && !s.fenced.Load() && member != "" && instance != "" {
		if lerr := txn.LeaveGroup(ctx, s.cfg.ClientOpts, s.cfg.Group, member, instance); lerr != nil {
			s.log.Warn("leaving the group", "err", lerr)
		}
	}
	return err
}

// pgTxn is one pipeline transaction: a Postgres transaction per partition.
type pgTxn struct {
	s       *pgSession
	parts   []*pgPart
	byBatch map[*Batch]*pgPart
	done    bool
}

// pgPart is one partition's batch in a pgTxn.
type pgPart struct {
	b           *Batch
	k           topicPart
	first, last int64
	ptx         *partTx
	w           *PostgresWriter

	// valid: the batch continues the partition's committed offset in
	// the session's current view (epoch); skip says why not.
	valid     bool
	skip      error
	epoch     uint64
	expectRow bool  // a row exists: the compare-and-set is an UPDATE
	expect    int64 // its next_offset
}

// partTx is a partition's transaction and its connection.
type partTx struct {
	tx      pgx.Tx
	pid     uint32
	release func(context.Context)
	ended   bool
}

// end rolls the transaction back unless it ended, and gives the
// connection back.
func (p *partTx) end(ctx context.Context) {
	if p == nil || p.ended {
		return
	}
	p.ended = true
	_ = p.tx.Rollback(ctx) // a failure closes the connection: the server rolls back
	p.release(ctx)
}

// open begins each batch's transaction, concurrently.
func (t *pgTxn) open(ctx context.Context) error {
	p := t.s.p
	errs := make([]error, len(t.parts))
	var wg sync.WaitGroup
	for i, pp := range t.parts {
		pooled := i < p.maxConns
		wg.Add(1)
		go func() {
			defer wg.Done()
			pp.ptx, errs[i] = p.beginPart(ctx, pooled)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, pp := range t.parts {
			pp.ptx.end(ctx)
		}
		return err
	}
	for _, pp := range t.parts {
		pp.w = &PostgresWriter{b: pp.b, tx: pp.ptx.tx}
	}
	if len(t.parts) > p.maxConns && t.s.warnedOverflow.CompareAndSwap(false, true) {
		t.s.log.Warn("a transaction covers more partitions than the pool's MaxConns; opening extra connections for the surplus (raise pool_max_conns to at least the partitions per instance)",
			"partitions", len(t.parts), "max_conns", p.maxConns)
	}
	return nil
}

// Writer implements [Txn].
func (t *pgTxn) Writer(b *Batch) *PostgresWriter {
	pp := t.byBatch[b]
	if pp == nil || pp.w == nil {
		err := errors.New("sinks: postgres: Writer called with a batch its transaction does not cover")
		if b != nil {
			err = fmt.Errorf("sinks: postgres: Writer called with a batch (%s[%d]) its transaction does not cover", b.Topic, b.Partition)
		}
		return &PostgresWriter{b: b, err: err}
	}
	return pp.w
}

// pgResult is the outcome of one partition's commit.
type pgResult struct {
	committed bool
	err       error // why it did not commit
	unknown   bool  // the outcome could not be resolved
	// The row as re-read after a failed compare-and-set or a resolved
	// unknown outcome, if known.
	known  bool
	hasRow bool
	next   int64
}

// Commit implements [Txn]: it commits each partition's transaction, with
// its offset compare-and-set, concurrently. It returns nil only if all
// committed; otherwise the joined [*PartitionError]s of those that did not.
func (t *pgTxn) Commit(ctx context.Context) error {
	if t.done {
		return errors.New("sinks: Commit after the transaction ended")
	}
	t.done = true
	results := make([]pgResult, len(t.parts))
	var wg sync.WaitGroup
	for i, pp := range t.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = t.commitPart(ctx, pp)
		}()
	}
	wg.Wait()
	return t.s.settle(t.parts, results)
}

func (t *pgTxn) commitPart(ctx context.Context, pp *pgPart) pgResult {
	s, p := t.s, t.s.p
	if !pp.valid {
		pp.ptx.end(ctx)
		return pgResult{err: fmt.Errorf("%w: %w", ErrAborted, pp.skip)}
	}
	if !s.ownsSince(pp.k, pp.epoch) {
		pp.ptx.end(ctx)
		return pgResult{err: fmt.Errorf("%w: %w", ErrAborted, errNotOwned)}
	}
	tx := pp.ptx.tx
	var (
		xid string
		err error
	)
	if pp.expectRow {
		err = tx.QueryRow(ctx, p.sql.update, s.cfg.Group, pp.k.topic, pp.k.partition, pp.expect, pp.last+1).Scan(&xid)
	} else {
		err = tx.QueryRow(ctx, p.sql.insert, s.cfg.Group, pp.k.topic, pp.k.partition, pp.last+1).Scan(&xid)
	}
	if err != nil {
		pp.ptx.end(ctx)
		if errors.Is(err, pgx.ErrNoRows) {
			r := pgResult{err: fmt.Errorf("%w: %w", ErrAborted, errFencedByOwner)}
			r.known, r.hasRow, r.next = s.readOffset(ctx, pp.k)
			s.log.Info("offset compare-and-set lost: another owner moved the partition on; batch dropped",
				"topic", pp.k.topic, "partition", pp.k.partition, "first", pp.first, "last", pp.last,
				"expected_row", pp.expectRow, "expected_next", pp.expect, "stored_next", r.next)
			return r
		}
		return pgResult{err: classifyPgErr("updating the offset", err)}
	}
	err = tx.Commit(ctx)
	pp.ptx.ended = true
	pp.ptx.release(ctx)
	if err == nil {
		return pgResult{committed: true}
	}
	if notCommitted(err) {
		return pgResult{err: classifyPgErr("committing", err)}
	}
	s.log.Warn("commit outcome unknown; resolving it from the database",
		"topic", pp.k.topic, "partition", pp.k.partition, "first", pp.first, "last", pp.last, "err", err)
	return s.resolve(ctx, pp, xid, err)
}

// notCommitted reports whether a failed COMMIT certainly did not commit: the
// server answered with an error (other than one that ends the connection,
// which may come after the commit record was written), or the transaction
// had already failed. Anything else is resolved from the database.
//
// pgconn.SafeToRetry is deliberately not consulted: when the connection
// drops after COMMIT was sent, pgx v5.12 can report a "conn closed" error
// that claims SafeToRetry (MultiResultReader.NextResult drops the read
// error and the next read fails on the now-closed connection), though the
// commit may well have landed.
func notCommitted(err error) bool {
	if errors.Is(err, pgx.ErrTxCommitRollback) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		sev := pe.SeverityUnlocalized
		if sev == "" {
			sev = pe.Severity
		}
		return sev != "FATAL" && sev != "PANIC"
	}
	return false
}

// classifyPgErr wraps errors that leave the batch to be retried (a
// serialization failure, a deadlock, a lost connection) in ErrAborted.
func classifyPgErr(op string, err error) error {
	if errors.Is(err, pgx.ErrTxCommitRollback) {
		return fmt.Errorf("%s: the transaction had failed before COMMIT (did the Stage ignore an error of a statement?): %w", op, err)
	}
	if pgRetryable(err) {
		return fmt.Errorf("%w: %s: %w", ErrAborted, op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// pgRetryable reports whether err is transient: a serialization failure
// (40001), a deadlock (40P01), a lock or statement timeout, the server
// shutting down or ending the session, or a connection-level failure.
func pgRetryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "40"), // transaction rollback: 40001, 40P01
			strings.HasPrefix(pe.Code, "08"), // connection exception
			strings.HasPrefix(pe.Code, "57"), // operator intervention: 57P01 admin shutdown, 57014 canceled
			strings.HasPrefix(pe.Code, "53"), // insufficient resources: too many connections
			pe.Code == "55P03",               // lock_not_available
			pe.Code == "25P03":               // idle_in_transaction_session_timeout
			return true
		}
		return false
	}
	// Not an answer of the server: the connection failed or timed out, and
	// the transaction died with it.
	return !errors.Is(err, context.Canceled)
}

// resolve settles a commit whose outcome is unknown by asking the server
// what became of the transaction (pg_xact_status) and re-reading the
// offsets row; it never guesses. A transaction still running (its backend
// has not noticed the lost connection) is waited for and, after a while,
// terminated, so it cannot commit later unnoticed.
func (s *pgSession) resolve(ctx context.Context, pp *pgPart, xid string, cause error) pgResult {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resolveBudget)
	defer cancel()
	bo := s.p.newBackoff()
	running := 0
	for {
		status, ok, err := s.p.xactStatus(rctx, xid)
		if err == nil {
			switch {
			case ok && status == "committed":
				s.log.Info("commit outcome resolved: committed", "topic", pp.k.topic, "partition", pp.k.partition, "xid", xid)
				return pgResult{committed: true}
			case ok && status == "aborted":
				r := pgResult{err: unknownOutcome(fmt.Sprintf("commit outcome was unknown (%v); resolved: not committed", cause), cause)}
				r.known, r.hasRow, r.next = s.readOffset(rctx, pp.k)
				s.log.Info("commit outcome resolved: not committed", "topic", pp.k.topic, "partition", pp.k.partition, "xid", xid)
				return r
			case ok: // "in progress"
				running++
				if running >= 3 && pp.ptx.pid != 0 {
					if _, kerr := s.p.pool.Exec(rctx, s.p.sql.kill, pp.ptx.pid, xid); kerr != nil {
						s.log.Debug("terminating the backend of an unresolved commit", "err", kerr)
					}
				}
			default:
				// Too old for the server to know: the offsets row
				// decides. It moved to last+1 only if the batch
				// committed (here or by another owner: either way
				// its effects are in exactly once).
				if known, hasRow, next := s.readOffset(rctx, pp.k); known {
					if hasRow && next == pp.last+1 {
						return pgResult{committed: true}
					}
					return pgResult{err: unknownOutcome(fmt.Sprintf("commit outcome was unknown (%v); resolved: not committed", cause), cause),
						known: true, hasRow: hasRow, next: next}
				}
			}
		} else {
			s.log.Debug("resolving an unknown commit outcome", "err", err)
		}
		if !bo.wait(rctx) {
			break
		}
	}
	s.log.Warn("commit outcome still unknown; the partition's offset will be re-read before it commits again",
		"topic", pp.k.topic, "partition", pp.k.partition, "xid", xid)
	return pgResult{unknown: true, err: unknownOutcome(fmt.Sprintf("%v: %v", errUnknownOutcome, cause), cause)}
}

// outcomeError is a commit whose outcome was unknown and was resolved (or
// will be, from the offsets row) as not committed. It wraps ErrAborted and
// ErrOutcomeUnknown with a message of its own: ErrOutcomeUnknown's text
// speaks of the Kafka sink's re-created session.
type outcomeError struct {
	msg   string
	cause error
}

func unknownOutcome(msg string, cause error) error { return &outcomeError{msg: msg, cause: cause} }

func (e *outcomeError) Error() string   { return ErrAborted.Error() + ": " + e.msg }
func (e *outcomeError) Unwrap() []error { return []error{ErrAborted, ErrOutcomeUnknown, e.cause} }

// readOffset reads a partition's row; known is false if it could not.
func (s *pgSession) readOffset(ctx context.Context, k topicPart) (known, hasRow bool, next int64) {
	err := s.p.pool.QueryRow(ctx, s.p.sql.loadOne, s.cfg.Group, k.topic, k.partition).Scan(&next)
	switch {
	case err == nil:
		return true, true, next
	case errors.Is(err, pgx.ErrNoRows):
		return true, false, 0
	default:
		s.log.Debug("re-reading a partition's offset", "topic", k.topic, "partition", k.partition, "err", err)
		return false, false, 0
	}
}

// settle applies the partitions' outcomes to the session: positions of the
// committed partitions stay after their batches; the others are rewound to
// their stored offsets.
func (s *pgSession) settle(parts []*pgPart, results []pgResult) error {
	var (
		errs     []error
		seeks    = seekSet{}
		mirrored seekSet
	)
	s.mu.Lock()
	for i, pp := range parts {
		r := results[i]
		st := s.parts[pp.k]
		same := pp.valid && st != nil && st.owned && st.changed == pp.epoch
		switch {
		case r.committed:
			if same {
				st.hasRow, st.next = true, pp.last+1
			}
			if s.mirror != nil {
				if mirrored == nil {
					mirrored = seekSet{}
				}
				mirrored.add(pp.k, pp.last+1)
				// The leader epoch of the last record lets a consumer
				// that resumes from Kafka detect truncation.
				mirrored[pp.k.topic][pp.k.partition] = kgo.EpochOffset{Epoch: pp.b.Records[len(pp.b.Records)-1].LeaderEpoch, Offset: pp.last + 1}
			}
			continue
		case r.unknown:
			if same {
				st.dirty = true
				s.changeLocked(st)
			}
		case same:
			target := pp.first
			switch {
			case r.known && r.hasRow:
				target = r.next
			case r.known:
				if pp.expectRow {
					s.log.Warn("the partition's offsets row disappeared; resuming at the batch",
						"topic", pp.k.topic, "partition", pp.k.partition, "first", pp.first)
				}
			case pp.expectRow:
				target = pp.expect
			}
			if r.known {
				st.hasRow, st.next = r.hasRow, r.next
			}
			s.changeLocked(st)
			seeks.add(pp.k, target)
		}
		errs = append(errs, &PartitionError{
			Topic: pp.k.topic, Partition: pp.k.partition,
			FirstOffset: pp.first, LastOffset: pp.last, Err: r.err,
		})
	}
	s.mu.Unlock()
	s.seek(seeks)
	if mirrored != nil {
		s.mirror.add(mirrored)
	}
	return errors.Join(errs...)
}

// Rollback implements [Txn].
func (t *pgTxn) Rollback(ctx context.Context) error {
	if t.done {
		return nil
	}
	t.done = true
	var wg sync.WaitGroup
	for _, pp := range t.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pp.ptx.end(ctx)
		}()
	}
	wg.Wait()
	t.rewind(t.parts)
	return nil
}

// rewind puts the positions of the valid batches' partitions back at their
// stored offsets (without a row: at the batch), unless they changed since.
func (t *pgTxn) rewind(parts []*pgPart) {
	s := t.s
	seeks := seekSet{}
	s.mu.Lock()
	for _, pp := range parts {
		st := s.parts[pp.k]
		if !pp.valid || st == nil || !st.owned || st.changed != pp.epoch {
			continue
		}
		target := pp.first
		if pp.expectRow {
			target = pp.expect
		}
		s.changeLocked(st)
		seeks.add(pp.k, target)
	}
	s.mu.Unlock()
	s.seek(seeks)
}

// beginPart begins one partition's transaction on a pooled connection, or
// on a dedicated one if pooled is false or the pool stays exhausted.
func (p *Postgres) beginPart(ctx context.Context, pooled bool) (*partTx, error) {
	opts := pgx.TxOptions{BeginQuery: p.begin, CommitQuery: p.cfg.txOpts.CommitQuery}
	if pooled {
		actx, cancel := context.WithTimeout(ctx, acquireWait)
		c, err := p.pool.Acquire(actx)
		cancel()
		if err == nil {
			tx, err := c.Conn().BeginTx(ctx, opts)
			if err != nil {
				c.Release()
				return nil, err
			}
			return &partTx{tx: tx, pid: c.Conn().PgConn().PID(), release: func(context.Context) { c.Release() }}, nil
		}
		if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := p.connect(cctx)
	if err != nil {
		return nil, err
	}
	tx, err := conn.BeginTx(cctx, opts)
	if err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return &partTx{tx: tx, pid: conn.PgConn().PID(), release: func(ctx context.Context) { _ = conn.Close(ctx) }}, nil
}

// connect opens a dedicated connection configured like the pool's.
func (p *Postgres) connect(ctx context.Context) (*pgx.Conn, error) {
	cc := p.poolCfg.ConnConfig.Copy()
	if p.poolCfg.BeforeConnect != nil {
		if err := p.poolCfg.BeforeConnect(ctx, cc); err != nil {
			return nil, err
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, err
	}
	if p.poolCfg.AfterConnect != nil {
		if err := p.poolCfg.AfterConnect(ctx, conn); err != nil {
			_ = conn.Close(ctx)
			return nil, err
		}
	}
	return conn, nil
}

// loadOffsets reads the stored next offsets of the given partitions.
func (p *Postgres) loadOffsets(ctx context.Context, group string, topics []string, parts []int32) (map[topicPart]int64, error) {
	rows, err := p.pool.Query(ctx, p.sql.load, group, topics, parts)
	if err != nil {
		return nil, err
	}
	out := make(map[topicPart]int64, len(topics))
	var (
		k    topicPart
		next int64
	)
	_, err = pgx.ForEachRow(rows, []any{&k.topic, &k.partition, &next}, func() error {
		out[k] = next
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// xactStatus is pg_xact_status of a transaction id; ok is false if the
// server no longer knows it.
func (p *Postgres) xactStatus(ctx context.Context, xid string) (status string, ok bool, err error) {
	var s *string
	if err := p.pool.QueryRow(ctx, p.sql.status, xid).Scan(&s); err != nil {
		return "", false, err
	}
	if s == nil {
		return "", false, nil
	}
	return *s, true, nil
}

type pgBackoff struct{ min, max, cur time.Duration }

func (p *Postgres) newBackoff() *pgBackoff {
	return &pgBackoff{min: p.cfg.backoffMin, max: p.cfg.backoffMax, cur: p.cfg.backoffMin}
}

// wait waits the current delay with jitter and doubles it; false if a
// context ended first.
func (b *pgBackoff) wait(ctxs ...context.Context) bool {
	d := b.cur/2 + rand.N(b.cur/2+1)
	b.cur = min(b.cur*2, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	var done2 <-chan struct{}
	if len(ctxs) > 1 {
		done2 = ctxs[1].Done()
	}
	select {
	case <-t.C:
		return true
	case <-ctxs[0].Done():
		return false
	case <-done2:
		return false
	}
}

// pgMirror commits committed offsets to the consumer group in Kafka, in
// the background and best effort, coalescing what accumulates while a
// commit is in flight.
type pgMirror struct {
	s       *pgSession
	ctx     context.Context // cancelled only if stop's context ends first
	cancel  context.CancelFunc
	mu      sync.Mutex
	pending seekSet
	wake    chan struct{}
	quit    chan struct{}
	done    chan struct{}
}

// newPgMirror returns the session's mirror; start it with go m.run().
func newPgMirror(s *pgSession) *pgMirror {
	ctx, cancel := context.WithCancel(context.Background())
	return &pgMirror{s: s, ctx: ctx, cancel: cancel, pending: seekSet{},
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

// add queues offsets to mirror and wakes the loop.
func (m *pgMirror) add(offs seekSet) {
	m.merge(offs)
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// merge queues offsets, keeping the larger of two for a partition.
func (m *pgMirror) merge(offs seekSet) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for t, ps := range offs {
		for p, eo := range ps {
			if m.pending[t] == nil {
				m.pending[t] = map[int32]kgo.EpochOffset{}
			}
			if cur, ok := m.pending[t][p]; !ok || cur.Offset < eo.Offset {
				m.pending[t][p] = eo
			}
		}
	}
}

func (m *pgMirror) run() {
	defer close(m.done)
	for {
		select {
		case <-m.wake:
			m.flush(m.ctx)
		case <-m.quit:
			return
		}
	}
}

// stop ends the background loop, letting a commit in flight finish unless
// ctx ends first, and makes a last commit of what is left, bounded by ctx.
func (m *pgMirror) stop(ctx context.Context) {
	close(m.quit)
	select {
	case <-m.done:
	case <-ctx.Done():
		m.cancel()
		<-m.done
	}
	m.flush(ctx)
	m.cancel()
}

func (m *pgMirror) flush(ctx context.Context) {
	m.mu.Lock()
	offs := m.pending
	m.pending = seekSet{}
	m.mu.Unlock()
	// Only partitions still owned: an offset mirrored after a revoke
	// could move the group's Kafka offset back behind the new owner's.
	s := m.s
	n := 0
	s.mu.Lock()
	for t, ps := range offs {
		for p := range ps {
			if st := s.parts[topicPart{t, p}]; st == nil || !st.owned {
				delete(ps, p)
			} else {
				n++
			}
		}
		if len(ps) == 0 {
			delete(offs, t)
		}
	}
	s.mu.Unlock()
	if n == 0 || ctx.Err() != nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, mirrorTimeout)
	defer cancel()
	s.cl.CommitOffsetsSync(cctx, offs, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err == nil {
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil {
						err = perr
					}
				}
			}
		}
		if err != nil {
			// Try again with the next commit, or at stop.
			m.merge(offs)
			s.log.Debug("mirroring offsets to kafka failed (informational; postgres holds the offsets)", "err", err)
		}
	})
}
