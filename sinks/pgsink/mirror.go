package pgsink

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// mirrorTimeout bounds one mirror commit to Kafka.
const mirrorTimeout = 10 * time.Second

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
	// failures counts mirror commits in a row that failed; used only by
	// flush, which never runs concurrently with itself.
	failures int
}

// mirrorWarnAfter is how many mirror commits in a row may fail before the
// failure is logged at WARN: one failure is usually a rebalance, many mean
// Kafka's view of the group (lag dashboards) is going stale.
const mirrorWarnAfter = 3

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
	n := s.ledger.keepOwned(offs)
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
			m.failures++
			level := slog.LevelDebug
			if m.failures%100 == mirrorWarnAfter {
				level = slog.LevelWarn
			}
			s.log.Log(ctx, level, "mirroring offsets to kafka failed; Kafka's view of the group's progress (lag dashboards) is stale, postgres holds the offsets",
				"err", err, "attempt", m.failures)
			return
		}
		if m.failures >= mirrorWarnAfter {
			s.log.Info("mirroring offsets to kafka works again", "after_failures", m.failures)
		}
		m.failures = 0
	})
}
