package pgsink

import (
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/sinks"
)

// The ownership ledger: what a session knows of each partition it owns —
// whether it still owns it, the offsets row as last read or written, and
// which polled records may commit. It is pure state (no I/O), guarded by one
// mutex, because kgo's rebalance callbacks change it from kgo's goroutines
// while the pipeline polls, begins and commits from its own. Its methods
// return the seeks that the session applies to the consumer afterwards, never
// under the lock.
//
// The rule it enforces: every change of a partition's ownership or position
// bumps the partition's epoch (changed) to a new value of the ledger's
// sequence, and records polled before a change never commit after it; and a
// batch commits only if it holds exactly the records polled since the
// position was last set, starting where the position was set — so nothing a
// caller dropped is ever skipped.

type topicPart struct {
	topic     string
	partition int32
}

// partState is what the ledger knows of one partition.
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

type ledger struct {
	mu    sync.Mutex
	seq   uint64
	parts map[topicPart]*partState
	// disowned is the sequence value at which each partition was last
	// revoked or lost.
	disowned map[topicPart]uint64
}

func newLedger() *ledger {
	return &ledger{parts: map[topicPart]*partState{}, disowned: map[topicPart]uint64{}}
}

// changeLocked records a change of the partition's ownership or position.
func (l *ledger) changeLocked(st *partState) {
	l.seq++
	st.changed = l.seq
	st.pending = -1
}

// assign takes ownership of newly assigned partitions. stored holds the
// next offsets read from the offsets table; offsets (kgo's
// AdjustFetchOffsetsFn argument) is set in place to where each partition
// starts: its stored offset, or start if it has no row.
func (l *ledger) assign(offsets map[string]map[int32]kgo.Offset, stored map[topicPart]int64, start kgo.Offset) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for t, ps := range offsets {
		for p := range ps {
			k := topicPart{t, p}
			if old := l.parts[k]; old != nil && old.owned {
				// Re-assigned without a revoke in between: the
				// old cursor's records are as stale as a revoked
				// partition's.
				l.changeLocked(old)
				l.disowned[k] = l.seq
			}
			st := &partState{owned: true, startAt: -1}
			l.parts[k] = st
			l.changeLocked(st)
			st.assigned = st.changed
			if next, ok := stored[k]; ok {
				st.hasRow, st.next = true, next
				ps[p] = kgo.NewOffset().At(next)
			} else {
				ps[p] = start
			}
		}
	}
}

// disown gives up revoked or lost partitions; it returns how many were owned.
func (l *ledger) disown(m map[string][]int32) int {
	n := 0
	l.mu.Lock()
	defer l.mu.Unlock()
	for t, ps := range m {
		for _, p := range ps {
			k := topicPart{t, p}
			if st := l.parts[k]; st != nil {
				l.changeLocked(st)
				st.owned = false
				delete(l.parts, k)
				l.disowned[k] = l.seq
				n++
			}
		}
	}
	return n
}

// ownsSince reports whether the partition is owned and unchanged since epoch.
func (l *ledger) ownsSince(k topicPart, epoch uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.parts[k]
	return st != nil && st.owned && st.changed == epoch
}

// snapshot is the sequence value before a poll; pass it to polled.
func (l *ledger) snapshot() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq
}

// polled records what a poll that began at snapshot snap returned.
func (l *ledger) polled(fs kgo.Fetches, snap uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
		if len(ftp.Records) == 0 {
			return
		}
		k := topicPart{ftp.Topic, ftp.Partition}
		st := l.parts[k]
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
		if st.changed > snap && !(st.changed == st.assigned && l.disowned[k] <= snap) {
			return
		}
		st.pending = ftp.Records[0].Offset
		st.polled = len(ftp.Records)
	})
}

// begin decides, for each part of a transaction that begins, whether it may
// commit (pp.valid, with the epoch and the expected row it was begun
// against) or why not (pp.skip). It returns the seeks that put stale
// partitions back at their committed offsets, the dirty partitions whose
// rows must be re-read first, and the parts whose records start before
// their stored offset (a re-created topic?), for the caller to report.
func (l *ledger) begin(parts []*pgPart) (seeks seekSet, reload []topicPart, behind []*pgPart) {
	seeks = seekSet{}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, pp := range parts {
		st := l.parts[pp.k]
		switch {
		case st == nil || !st.owned:
			pp.skip = errNotOwned
		case st.dirty:
			pp.skip = errUnknownOutcome
			reload = append(reload, pp.k)
		case st.pending != pp.first || st.polled != len(pp.b.Records) || (st.hasRow && pp.first < st.next):
			// The batch holds records from before a change, or the
			// caller dropped records polled before it: the position
			// may be past records that are not in the batch. Put it
			// back where the partition's committed offset says.
			pp.skip = errStale
			if st.hasRow && pp.first < st.next && st.pending == pp.first {
				behind = append(behind, pp)
			}
			seeks.add(pp.k, st.rewindTarget(pp.first))
			l.changeLocked(st)
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
	return seeks, reload, behind
}

// reloaded applies the re-read rows of dirty partitions; it returns where
// their positions go.
func (l *ledger) reloaded(ks []topicPart, stored map[topicPart]int64) seekSet {
	seeks := seekSet{}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range ks {
		st := l.parts[k]
		if st == nil || !st.dirty {
			continue
		}
		next, ok := stored[k]
		target := st.startAt
		if ok {
			target = next
		}
		st.hasRow, st.next, st.dirty = ok, next, false
		l.changeLocked(st)
		if target >= 0 {
			seeks.add(k, target)
		}
	}
	return seeks
}

// settle applies the outcomes of a commit's parts: the committed partitions'
// rows move past their batches; the others are rewound to their stored
// offsets (or marked dirty when the outcome is unknown). It returns the
// [*sinks.PartitionError]s of the parts that did not commit, the seeks, and
// the offsets to mirror to Kafka (nil unless mirror).
func (l *ledger) settle(parts []*pgPart, results []pgResult, mirror bool) (errs []error, seeks, mirrored seekSet, warnRowGone []*pgPart) {
	seeks = seekSet{}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, pp := range parts {
		r := results[i]
		st := l.parts[pp.k]
		same := pp.valid && st != nil && st.owned && st.changed == pp.epoch
		switch {
		case r.committed:
			if same {
				st.hasRow, st.next = true, pp.last+1
			}
			if mirror {
				if mirrored == nil {
					mirrored = seekSet{}
				}
				// The leader epoch of the last record lets a consumer
				// that resumes from Kafka detect truncation.
				mirrored.addEpoch(pp.k, pp.last+1, pp.b.Records[len(pp.b.Records)-1].LeaderEpoch)
			}
			continue
		case r.unknown:
			if same {
				st.dirty = true
				l.changeLocked(st)
			}
		case same:
			target := pp.first
			switch {
			case r.known && r.hasRow:
				target = r.next
			case r.known:
				if pp.expectRow {
					warnRowGone = append(warnRowGone, pp)
				}
			case pp.expectRow:
				target = pp.expect
			}
			if r.known {
				st.hasRow, st.next = r.hasRow, r.next
			}
			l.changeLocked(st)
			seeks.add(pp.k, target)
		}
		errs = append(errs, &sinks.PartitionError{
			Topic: pp.k.topic, Partition: pp.k.partition,
			FirstOffset: pp.first, LastOffset: pp.last, Err: r.err,
		})
	}
	return errs, seeks, mirrored, warnRowGone
}

// rewind puts the positions of the valid parts' partitions back at their
// stored offsets (without a row: at the batch), unless they changed since.
func (l *ledger) rewind(parts []*pgPart) seekSet {
	seeks := seekSet{}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, pp := range parts {
		st := l.parts[pp.k]
		if !pp.valid || st == nil || !st.owned || st.changed != pp.epoch {
			continue
		}
		target := pp.first
		if pp.expectRow {
			target = pp.expect
		}
		l.changeLocked(st)
		seeks.add(pp.k, target)
	}
	return seeks
}

// keepOwned removes from offs the partitions no longer owned, and returns
// how many remain: an offset mirrored after a revoke could move the group's
// Kafka offset back behind the new owner's.
func (l *ledger) keepOwned(offs seekSet) int {
	n := 0
	l.mu.Lock()
	defer l.mu.Unlock()
	for t, ps := range offs {
		for p := range ps {
			if st := l.parts[topicPart{t, p}]; st == nil || !st.owned {
				delete(ps, p)
			} else {
				n++
			}
		}
		if len(ps) == 0 {
			delete(offs, t)
		}
	}
	return n
}

// seekSet is a set of consumer positions, as kgo's SetOffsets takes them.
type seekSet map[string]map[int32]kgo.EpochOffset

func (ss seekSet) add(k topicPart, offset int64) { ss.addEpoch(k, offset, -1) }

func (ss seekSet) addEpoch(k topicPart, offset int64, epoch int32) {
	if ss[k.topic] == nil {
		ss[k.topic] = map[int32]kgo.EpochOffset{}
	}
	ss[k.topic][k.partition] = kgo.EpochOffset{Epoch: epoch, Offset: offset}
}
