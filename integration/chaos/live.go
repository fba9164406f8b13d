package chaos

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/verify"
)

// The concurrent verifier checks the committed prefix of a cell's output
// while the cell runs (every Config.LiveEvery, default 1.5s): no duplicate,
// no reorder per input partition (within an output partition in Kafka
// mode, in insertion order in Postgres mode), and no gap below the offsets
// the group has committed. It is incremental: Kafka mode keeps one
// read_committed consumer of the output open and reads each record once;
// Postgres mode reads only the rows above a low-water id. A violation fails
// the cell with the evidence. The final check (check.go) stays the
// authoritative one; this one shows that no reader ever saw a bad prefix.
//
// Both assume the input is written by non-transactional producers (the
// suite's feeder, kafka-verifiable-producer), so each input partition's
// offsets are 0..end-1 without holes; the final check confirms it (its
// input count must equal the cell's records).

// prefixChecker is one mode's concurrent verifier.
type prefixChecker interface {
	tick(ctx context.Context) error
	stats() string
	pendingSnapshots() int
	close()
}

// liveDefaultEvery is the concurrent verifier's default period.
const liveDefaultEvery = 1500 * time.Millisecond

// maxLiveFailures bounds the violations reported one by one.
const maxLiveFailures = 5

type live struct {
	r          *Run
	chk        prefixChecker
	every      time.Duration
	stopCh     chan struct{}
	done       chan struct{}
	once       sync.Once
	closeOnce  sync.Once
	mu         sync.Mutex
	ticks      int
	tickErrs   int
	firstErr   error
	violations int
	took       time.Duration // summed over ticks
}

// startLive starts the concurrent verifier of the cell (a no-op one when
// Config.LiveEvery < 0).
func (r *Run) startLive(ctx context.Context) *live {
	l := &live{r: r, every: r.Cfg.LiveEvery, stopCh: make(chan struct{}), done: make(chan struct{})}
	if l.every == 0 {
		l.every = liveDefaultEvery
	}
	if l.every < 0 {
		close(l.done)
		return l
	}
	fail := func(s string) {
		l.mu.Lock()
		l.violations++
		n := l.violations
		l.mu.Unlock()
		if n <= maxLiveFailures {
			r.Fail("concurrent verifier at %.0f%% progress: %s", 100*r.Progress(), s)
		}
	}
	var err error
	if r.Cell.Mode == Kafka {
		l.chk, err = newKafkaPrefix(r.Cfg.Brokers, r.in, r.out, r.adm, r.Committed, fail)
	} else {
		l.chk = newPGPrefix(r.pool, r.Cfg.PGSchema, r.table, r.group, r.in, fail)
	}
	if err != nil {
		r.Fail("starting the concurrent verifier: %v", err)
		close(l.done)
		return l
	}
	go l.loop(ctx)
	return l
}

func (l *live) loop(ctx context.Context) {
	defer close(l.done)
	t := time.NewTicker(l.every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.tick(ctx)
		case <-l.stopCh:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (l *live) tick(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	err := l.chk.tick(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ticks++
	l.took += time.Since(start)
	if err != nil { // a broker or the database may be down: not a verdict
		l.tickErrs++
		if l.firstErr == nil {
			l.firstErr = err
		}
	}
}

// stop ends the loop and waits for it.
func (l *live) stop() {
	l.once.Do(func() { close(l.stopCh) })
	<-l.done
}

// close stops the loop and closes the checker's clients (RunCell defers it;
// finish calls it too).
func (l *live) close() {
	l.stop()
	l.closeOnce.Do(func() {
		if l.chk != nil {
			l.chk.close()
		}
	})
}

// finish stops the loop, runs final ticks until every snapshot of the
// committed offsets could be checked (at most 5), notes the numbers and
// closes the checker.
func (l *live) finish(ctx context.Context) {
	l.stop()
	if l.chk == nil {
		return
	}
	defer l.close()
	for i := 0; i < 5; i++ {
		l.tick(ctx)
		if l.chk.pendingSnapshots() == 0 {
			break
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var avg time.Duration
	if l.ticks > 0 {
		avg = l.took / time.Duration(l.ticks)
	}
	errs := ""
	if l.tickErrs > 0 {
		errs = fmt.Sprintf(" (%d ticks hit a read error and judged only what they could read, e.g. %v)", l.tickErrs, l.firstErr)
	}
	l.r.Note("concurrent verifier: %d ticks every %v, %v per tick on average%s; %s; %d violations",
		l.ticks, l.every, avg.Round(time.Millisecond), errs, l.chk.stats(), l.violations)
	if n := l.chk.pendingSnapshots(); n > 0 {
		l.r.Fail("concurrent verifier: %d snapshots of the committed offsets could never be checked (the output's last stable offset stayed below them)", n)
	}
	if l.violations > maxLiveFailures {
		l.r.Fail("concurrent verifier: %d violations in all (the first %d above)", l.violations, maxLiveFailures)
	}
}

// --- Kafka mode ----------------------------------------------------------

// snapshot is the group's committed offsets with the output's high
// watermarks read right after them: every output record of the
// transactions that committed those offsets is below the watermarks.
type snapshot struct {
	committed map[int32]int64
	hw        map[int32]int64
}

type outPos struct {
	partition int32
	offset    int64
}

type kafkaPrefix struct {
	in, out   string
	cl        *kgo.Client // read_committed consumer of the output
	adm       *kadm.Client
	committed func(context.Context) (map[int32]int64, error)
	fail      func(string)

	seen     map[verify.Source]outPos
	last     map[[2]int32]int64 // (output partition, source partition) -> last source offset
	pos      map[int32]int64    // next output offset to read, per output partition
	pending  []snapshot
	verified map[int32]int64 // input offsets below this are checked for gaps
	read     int
	gapsDone int
}

func newKafkaPrefix(brokers []string, in, out string, adm *kadm.Client, committed func(context.Context) (map[int32]int64, error), fail func(string)) (*kafkaPrefix, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(out), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords(),
		kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return nil, err
	}
	return &kafkaPrefix{in: in, out: out, cl: cl, adm: adm, committed: committed, fail: fail,
		seen: map[verify.Source]outPos{}, last: map[[2]int32]int64{}, pos: map[int32]int64{}, verified: map[int32]int64{}}, nil
}

func (k *kafkaPrefix) close() { k.cl.Close() }

func (k *kafkaPrefix) pendingSnapshots() int { return len(k.pending) }

func (k *kafkaPrefix) stats() string {
	checked := int64(0)
	for _, v := range k.verified {
		checked += v
	}
	return fmt.Sprintf("%d output records read once each by a read_committed consumer, %d snapshots of the group's offsets checked for gaps (input records below them: %d)",
		k.read, k.gapsDone, checked)
}

func (k *kafkaPrefix) tick(ctx context.Context) error {
	// A snapshot needs both reads; with a broker down either may fail
	// (a partition without a leader), and the tick then only reads on.
	var firstErr error
	c, err := k.committed(ctx)
	var hw map[int32]int64
	if err == nil {
		hw, err = verify.Listed(k.adm.ListEndOffsets(ctx, k.out))
	}
	if err == nil {
		k.pending = append(k.pending, snapshot{committed: c, hw: hw})
	} else {
		firstErr = err
	}
	lso, err := verify.Listed(k.adm.ListCommittedOffsets(ctx, k.out))
	if err != nil && firstErr == nil {
		firstErr = err
	}
	// Read to the last stable offsets as listed, at most a second (the
	// whole second when they could not be listed).
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for (lso == nil || !k.reached(lso)) && pctx.Err() == nil {
		fs := k.cl.PollFetches(pctx)
		fs.EachRecord(k.record)
	}
	// The snapshots whose watermarks the reader has passed can be judged:
	// every transaction with records below them has ended.
	rest := k.pending[:0]
	for _, s := range k.pending {
		if k.reached(s.hw) {
			k.checkGaps(s.committed)
			k.gapsDone++
		} else {
			rest = append(rest, s)
		}
	}
	k.pending = rest
	return firstErr
}

func (k *kafkaPrefix) reached(ends map[int32]int64) bool {
	for p, end := range ends {
		if k.pos[p] < end {
			return false
		}
	}
	return true
}

func (k *kafkaPrefix) record(rec *kgo.Record) {
	k.pos[rec.Partition] = rec.Offset + 1
	if rec.Attrs.IsControl() {
		return
	}
	k.read++
	at := outPos{rec.Partition, rec.Offset}
	src, err := verify.SourceFromHeaders(rec)
	if err != nil || src.Topic != k.in {
		k.fail(fmt.Sprintf("unknown: %s[%d]@%d names no input record of %s (%v, source %v)", k.out, rec.Partition, rec.Offset, k.in, err, src))
		return
	}
	if first, ok := k.seen[src]; ok {
		k.fail(fmt.Sprintf("duplicate: %v is in %s[%d]@%d and again in %s[%d]@%d", src, k.out, first.partition, first.offset, k.out, at.partition, at.offset))
		return
	}
	k.seen[src] = at
	key := [2]int32{rec.Partition, src.Partition}
	if prev, ok := k.last[key]; ok && src.Offset <= prev {
		k.fail(fmt.Sprintf("order: %s[%d]@%d holds %v after the output of source offset %d", k.out, at.partition, at.offset, src, prev))
	}
	k.last[key] = src.Offset
}

func (k *kafkaPrefix) checkGaps(committed map[int32]int64) {
	for _, p := range sortedKeys(committed) {
		upTo := committed[p]
		from := k.verified[p]
		if upTo <= from {
			continue
		}
		var missing []int64
		for o := from; o < upTo; o++ {
			if _, ok := k.seen[verify.Source{Topic: k.in, Partition: p, Offset: o}]; !ok {
				missing = append(missing, o)
			}
		}
		if len(missing) > 0 {
			k.fail(fmt.Sprintf("gap: the group committed %s[%d] up to offset %d, but after reading %s to its last stable offset past that commit no output names %s",
				k.in, p, upTo, k.out, offsetsSummary(k.in, p, missing)))
		}
		k.verified[p] = upTo
	}
}

func sortedKeys[V any](m map[int32]V) []int32 {
	ks := make([]int32, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i] < ks[j] })
	return ks
}

func offsetsSummary(topic string, p int32, offs []int64) string {
	if len(offs) == 1 {
		return fmt.Sprintf("%s[%d]@%d", topic, p, offs[0])
	}
	return fmt.Sprintf("%d records: %s[%d]@%d..%d", len(offs), topic, p, offs[0], offs[len(offs)-1])
}

// --- Postgres mode -------------------------------------------------------

// holeGrace is how long the Postgres checker keeps re-reading above an id
// it has not seen (an id of a transaction still running, or of one that
// rolled back and left a hole in the sequence for good).
const holeGrace = 3 * time.Second

type pgRow struct {
	id   int64
	part int32
	off  int64
}

type pgPrefix struct {
	pool                          *pgxpool.Pool
	schema, table, group, in      string
	fail                          func(string)
	low, maxID                    int64 // every id <= low is done
	ids                           map[int64]bool
	holes                         map[int64]time.Time
	seen                          map[[2]int64]int64 // (part, off) -> id
	last                          map[int32]pgRow
	verified                      map[int32]int64
	read, reread, late, confirmed int
	gapsDone                      int
}

func newPGPrefix(pool *pgxpool.Pool, schema, table, group, in string, fail func(string)) *pgPrefix {
	return &pgPrefix{pool: pool, schema: schema, table: table, group: group, in: in, fail: fail,
		ids: map[int64]bool{}, holes: map[int64]time.Time{}, seen: map[[2]int64]int64{}, last: map[int32]pgRow{}, verified: map[int32]int64{}}
}

func (g *pgPrefix) close() {}

func (g *pgPrefix) pendingSnapshots() int { return 0 } // the offsets and the rows are read in one snapshot

func (g *pgPrefix) stats() string {
	checked := int64(0)
	for _, v := range g.verified {
		checked += v
	}
	return fmt.Sprintf("%d rows read (%d read again above an unseen id, %d committed after a higher id), %d snapshots of the offsets table checked for gaps (input records below them: %d; %d rows found by a targeted query)",
		g.read, g.reread, g.late, g.gapsDone, checked, g.confirmed)
}

// tick reads, in one REPEATABLE READ snapshot, the group's offsets and the
// rows above the low-water id: the rows of the transactions that committed
// those offsets are in the same snapshot (they commit together).
func (g *pgPrefix) tick(ctx context.Context) error {
	tx, err := g.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only
	committed := map[int32]int64{}
	rows, err := tx.Query(ctx, `SELECT partition, next_offset FROM `+pgx.Identifier{g.schema, "offsets"}.Sanitize()+
		` WHERE consumer_group = $1 AND topic = $2`, g.group, g.in)
	if err != nil {
		return err
	}
	for rows.Next() {
		var p int32
		var at int64
		if err := rows.Scan(&p, &at); err != nil {
			return err
		}
		committed[p] = at
	}
	if err := rows.Err(); err != nil {
		return err
	}
	table := pgx.Identifier{g.schema, g.table}.Sanitize()
	if err := g.query(ctx, tx, `SELECT id, part, off FROM `+table+` WHERE id > $1 ORDER BY id`, g.low); err != nil {
		return err
	}
	for _, p := range sortedKeys(committed) {
		upTo, from := committed[p], g.verified[p]
		if upTo <= from {
			continue
		}
		missing := g.missing(p, from, upTo)
		if len(missing) > 0 {
			// Rows below the low-water id that committed late: look them up.
			n := g.read
			if err := g.query(ctx, tx, `SELECT id, part, off FROM `+table+` WHERE part = $1 AND off >= $2 AND off < $3 ORDER BY id`, p, from, upTo); err != nil {
				return err
			}
			g.confirmed += g.read - n
			missing = g.missing(p, from, upTo)
		}
		if len(missing) > 0 {
			g.fail(fmt.Sprintf("gap: the offsets table has %s[%d] committed up to %d, but in the same snapshot no row names %s",
				g.in, p, upTo, offsetsSummary(g.in, p, missing)))
		}
		g.verified[p] = upTo
		g.gapsDone++
	}
	g.advance(time.Now())
	return nil
}

func (g *pgPrefix) missing(p int32, from, upTo int64) []int64 {
	var m []int64
	for o := from; o < upTo; o++ {
		if _, ok := g.seen[[2]int64{int64(p), o}]; !ok {
			m = append(m, o)
		}
	}
	return m
}

func (g *pgPrefix) query(ctx context.Context, tx pgx.Tx, sql string, args ...any) error {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	now := time.Now()
	for rows.Next() {
		var r pgRow
		if err := rows.Scan(&r.id, &r.part, &r.off); err != nil {
			return err
		}
		g.row(r, now)
	}
	return rows.Err()
}

func (g *pgPrefix) row(r pgRow, now time.Time) {
	if g.ids[r.id] || r.id <= g.low && g.seenID(r) {
		g.reread++
		return
	}
	if r.id > g.low {
		g.ids[r.id] = true
	}
	g.read++
	delete(g.holes, r.id)
	if r.id > g.maxID {
		for h := max(g.maxID, g.low) + 1; h < r.id; h++ {
			g.holes[h] = now
		}
		g.maxID = r.id
	}
	k := [2]int64{int64(r.part), r.off}
	if first, ok := g.seen[k]; ok {
		g.fail(fmt.Sprintf("duplicate: %s[%d]@%d is in row id %d and again in row id %d", g.in, r.part, r.off, first, r.id))
		return
	}
	g.seen[k] = r.id
	prev, ok := g.last[r.part]
	switch {
	case !ok || r.id > prev.id:
		if ok && r.off <= prev.off {
			g.fail(fmt.Sprintf("order: row id %d holds %s[%d]@%d after row id %d with offset %d", r.id, g.in, r.part, r.off, prev.id, prev.off))
		}
		g.last[r.part] = r
	default:
		g.late++ // committed after a row with a higher id; the final check orders by id
	}
}

// seenID: a row at or below the low-water id found by a targeted query is
// new only if its (part, off) was not seen with that id.
func (g *pgPrefix) seenID(r pgRow) bool {
	id, ok := g.seen[[2]int64{int64(r.part), r.off}]
	return ok && id == r.id
}

// advance moves the low-water id over the ids seen and the holes older
// than holeGrace.
func (g *pgPrefix) advance(now time.Time) {
	for {
		n := g.low + 1
		if g.ids[n] {
			delete(g.ids, n)
		} else if t, ok := g.holes[n]; ok && now.Sub(t) > holeGrace {
			delete(g.holes, n)
		} else {
			return
		}
		g.low = n
	}
}
