package chaos

import (
	"context"
	"fmt"
	"time"

	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
)

// How far a cell got: the workers' reports, the group's committed offsets,
// and the waits the schedules build on them.

// Progress is the fraction of the cell's records committed.
func (r *Run) Progress() float64 {
	return float64(r.committed.Load()) / float64(r.Cell.Records)
}

// WaitProgress waits until at least frac of the records are committed: by
// the workers' reports, or, once the feeder has written every record, by
// the group's offsets (see InputCommitted).
func (r *Run) WaitProgress(ctx context.Context, frac float64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var checked time.Time
	for r.Progress() < frac {
		r.supervise()
		if time.Since(checked) >= time.Second {
			done := r.InputCommitted(ctx)
			checked = time.Now() // after: with a broker down a look may take its 5 s
			if done {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("progress stuck at %.1f%% (want %.0f%%) for %v", 100*r.Progress(), 100*frac, timeout)
		}
		if err := r.waitChange(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// InputCommitted tells whether the feeder has written every record and all
// of them are committed. The workers' COMMIT lines undercount: a commit whose
// outcome its worker could not learn (a broker killed during EndTxn, a lost
// answer) may have committed, and a worker SIGKILLed between its commit and
// its report never reports it. So when the reports
// fall short, the group's committed offsets decide (each look at most 5 s, so
// that a dead coordinator does not hold up the schedule); the first time they
// settle it, a note says by how many records the reports fell short.
func (r *Run) InputCommitted(ctx context.Context) bool {
	if r.fed.Load() < int64(r.Cell.Records) {
		return false
	}
	if r.Progress() >= 1 {
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if ok, err := r.drained(cctx); err != nil || !ok {
		return false
	}
	r.unreportedOnce.Do(func() {
		r.Note("the group committed every input record; the workers reported %d of %d (the rest committed in transactions no worker reported: an outcome its worker could not learn, or a worker killed before its report)",
			r.committed.Load(), r.Cell.Records)
	})
	return true
}

// WaitFor polls cond (on every commit, at least every 200ms) until it holds.
func (r *Run) WaitFor(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond(ctx)
		if ok && err == nil {
			return nil
		}
		lastErr = err
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s (last error: %v)", timeout, what, lastErr)
		}
		if err := r.waitChange(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// Committed is each input partition's committed next offset, from the
// group (Kafka mode) or the offsets table (Postgres mode).
func (r *Run) Committed(ctx context.Context) (map[int32]int64, error) {
	out := map[int32]int64{}
	if r.Cell.Mode == Kafka {
		offs, err := r.adm.FetchOffsets(ctx, r.group)
		if err != nil {
			return nil, err
		}
		offs.Each(func(o kadm.OffsetResponse) {
			if o.Topic == r.in && o.Err == nil {
				out[o.Partition] = o.At
			}
		})
		return out, nil
	}
	rows, err := r.pool.Query(ctx, `SELECT partition, next_offset FROM `+pgx.Identifier{r.Cfg.PGSchema, "offsets"}.Sanitize()+
		` WHERE consumer_group = $1 AND topic = $2`, r.group, r.in)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var p int32
		var at int64
		if err := rows.Scan(&p, &at); err != nil {
			return nil, err
		}
		out[p] = at
	}
	return out, rows.Err()
}

func (r *Run) inputEnds(ctx context.Context) (map[int32]int64, error) {
	return verify.Listed(r.adm.ListEndOffsets(ctx, r.in))
}

// drained: every input partition committed to its end.
func (r *Run) drained(ctx context.Context) (bool, error) {
	r.supervise()
	ends, err := r.inputEnds(ctx)
	if err != nil {
		return false, err
	}
	if len(ends) < int(r.Cfg.Partitions) {
		return false, nil // not every partition answered
	}
	at, err := r.Committed(ctx)
	if err != nil {
		return false, err
	}
	for p, end := range ends {
		if end > 0 && at[p] < end {
			return false, nil
		}
	}
	return true, nil
}
