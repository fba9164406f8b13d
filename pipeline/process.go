package pipeline

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/exactlyonce/exactly/sinks"
)

// process runs the stage on each batch, up to Concurrency at once; the first
// failure cancels the others. ctx carries the Stage budget. A Stage that
// ignores its context cannot hold Run hostage: once ctx ends (the budget
// passed, or Run is stopping) process logs the batches still running at once,
// waits a grace period (the commit's share of the transaction timeout) and
// then returns an error wrapping [ErrStageStuck] that names them. The
// transaction is then rolled back, and the stuck calls' writers refuse
// anything they write later.
func (p *Pipeline[W]) process(ctx context.Context, tx sinks.Txn[W], batches []*sinks.Batch) error {
	tr := &tracker{running: map[*sinks.Batch]time.Time{}}
	done := make(chan error, 1)
	go func() { done <- p.processAll(ctx, tx, batches, tr) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	stuck := tr.snapshot()
	grace := p.cfg.txnTimeout - p.stageBudget()
	for _, b := range stuck {
		p.log.Warn("the stage is still running after its context ended (budget passed or shutdown); it must return when ctx is done",
			"topic", b.Topic, "partition", b.Partition, "first", b.FirstOffset(), "last", b.LastOffset(),
			"cause", context.Cause(ctx), "grace", grace)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
	}
	stuck = tr.snapshot()
	if len(stuck) == 0 {
		return <-done // finished just now
	}
	b := stuck[0]
	p.stats.stageErrs.Add(1)
	return &StageError{
		Topic: b.Topic, Partition: b.Partition, FirstOffset: b.FirstOffset(), LastOffset: b.LastOffset(),
		Err: fmt.Errorf("%w: %d partition(s) still running %v after the context ended; the transaction was aborted: %w",
			ErrStageStuck, len(stuck), grace, context.Cause(ctx)),
	}
}

// tracker records which batches' Stage calls are running.
type tracker struct {
	mu      sync.Mutex
	running map[*sinks.Batch]time.Time
}

func (t *tracker) start(b *sinks.Batch) {
	t.mu.Lock()
	t.running[b] = time.Now()
	t.mu.Unlock()
}

func (t *tracker) end(b *sinks.Batch) {
	t.mu.Lock()
	delete(t.running, b)
	t.mu.Unlock()
}

// snapshot is the running batches, longest running first.
func (t *tracker) snapshot() []*sinks.Batch {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*sinks.Batch, 0, len(t.running))
	for b := range t.running {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return t.running[out[i]].Before(t.running[out[j]]) })
	return out
}

// processAll runs the stage on each batch, up to Concurrency at once.
func (p *Pipeline[W]) processAll(ctx context.Context, tx sinks.Txn[W], batches []*sinks.Batch, tr *tracker) error {
	call := func(ctx context.Context, b *sinks.Batch, w W) error {
		tr.start(b)
		defer tr.end(b)
		return p.safeProcess(ctx, b, w)
	}
	if len(batches) == 1 || p.cfg.concurrency == 1 {
		for _, b := range batches {
			if err := call(ctx, b, tx.Writer(b)); err != nil {
				return err
			}
		}
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		sem      = make(chan struct{}, p.cfg.concurrency)
		errOnce  sync.Once
		firstErr error
	)
	for _, b := range batches {
		w := tx.Writer(b)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := call(ctx, b, w); err != nil {
				errOnce.Do(func() { firstErr = err; cancel() })
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// safeProcess calls the stage, turning errors and panics into StageErrors.
func (p *Pipeline[W]) safeProcess(ctx context.Context, b *sinks.Batch, w W) (err error) {
	defer func() {
		if v := recover(); v != nil {
			p.stats.stageErrs.Add(1)
			err = &StageError{
				Topic: b.Topic, Partition: b.Partition,
				FirstOffset: b.FirstOffset(), LastOffset: b.LastOffset(),
				Panic: v, Stack: debug.Stack(),
				Err: fmt.Errorf("panic: %v", v),
			}
		}
	}()
	if err := p.stage.Process(ctx, b, w); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return err // cancelled because of another failure or shutdown
		}
		p.stats.stageErrs.Add(1)
		return &StageError{
			Topic: b.Topic, Partition: b.Partition,
			FirstOffset: b.FirstOffset(), LastOffset: b.LastOffset(),
			Err: err,
		}
	}
	return nil
}
