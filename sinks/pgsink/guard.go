package pgsink

import (
	"context"
	"errors"
	"sync"

	"github.com/jackc/pgx/v5"
)

// errTxEnded is what a writer returns once its partition's transaction
// ended: a Stage call that ignored its context and outlived the
// transaction (the pipeline aborted it) can write nothing more.
var errTxEnded = errors.New("pgsink: the partition's transaction already ended (the Stage ran past its budget or the pipeline is stopping); nothing more can be written in it")

// guard keeps a writer's calls off its connection once the transaction
// ends. A pgx connection is not safe for concurrent use, so the rollback (or
// commit) must not run while a Stage call that outlived its budget is still
// using it: close first cancels those calls, then waits for them to return,
// and from then on every call is refused.
type guard struct {
	mu     sync.RWMutex
	ended  bool
	ctx    context.Context // ends when the transaction does
	cancel context.CancelFunc
}

func newGuard() *guard {
	ctx, cancel := context.WithCancel(context.Background())
	return &guard{ctx: ctx, cancel: cancel}
}

// enter admits one call: it returns the call's context, which also ends when
// the transaction does, and the func that ends the call.
func (g *guard) enter(ctx context.Context) (context.Context, func(), error) {
	g.mu.RLock()
	if g.ended {
		g.mu.RUnlock()
		return nil, nil, errTxEnded
	}
	cctx, stop := context.WithCancel(ctx)
	unhook := context.AfterFunc(g.ctx, stop)
	return cctx, func() { unhook(); stop(); g.mu.RUnlock() }, nil
}

// close cancels the calls in flight, waits for them and refuses all later
// ones. Safe to call twice.
func (g *guard) close() {
	if g == nil {
		return
	}
	g.cancel()
	g.mu.Lock()
	g.ended = true
	g.mu.Unlock()
}

// guardedResults releases its call when the results are closed.
type guardedResults struct {
	pgx.BatchResults
	release func()
	once    sync.Once
}

func (r *guardedResults) Close() error {
	err := r.BatchResults.Close()
	r.once.Do(r.release)
	return err
}
