package pgsink

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/exactlyonce/exactly/internal/backoff"
	"github.com/jackc/pgx/v5"
)

const (
	// acquireWait bounds the wait for a pooled connection before a
	// partition's transaction falls back to a dedicated one: a pool that
	// stays exhausted (shared by several pipelines, or too small) must not
	// deadlock transactions that each hold part of it.
	acquireWait = 500 * time.Millisecond
	// connectTimeout bounds opening a dedicated connection.
	connectTimeout = 15 * time.Second
)

// partTx is a partition's transaction and its connection.
type partTx struct {
	g       *guard // keeps the writers off the connection once it ends
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
	p.g.close()            // no Stage call on the connection from here on
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
		pp.w = &Writer{b: pp.b, tx: pp.ptx.tx, g: pp.ptx.g}
	}
	if len(t.parts) > p.maxConns && t.s.warnedOverflow.CompareAndSwap(false, true) {
		t.s.log.Warn("a transaction covers more partitions than the pool's MaxConns; opening extra connections for the surplus (raise pool_max_conns to at least the partitions per instance)",
			"partitions", len(t.parts), "max_conns", p.maxConns)
	}
	return nil
}

// beginPart begins one partition's transaction on a pooled connection, or
// on a dedicated one if pooled is false or the pool stays exhausted.
func (p *Sink) beginPart(ctx context.Context, pooled bool) (*partTx, error) {
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
			return &partTx{g: newGuard(), tx: tx, pid: c.Conn().PgConn().PID(), release: func(context.Context) { c.Release() }}, nil
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
	return &partTx{g: newGuard(), tx: tx, pid: conn.PgConn().PID(), release: func(ctx context.Context) { _ = conn.Close(ctx) }}, nil
}

// connect opens a dedicated connection configured like the pool's.
func (p *Sink) connect(ctx context.Context) (*pgx.Conn, error) {
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
func (p *Sink) loadOffsets(ctx context.Context, group string, topics []string, parts []int32) (map[topicPart]int64, error) {
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
func (p *Sink) xactStatus(ctx context.Context, xid string) (status string, ok bool, err error) {
	var s *string
	if err := p.pool.QueryRow(ctx, p.sql.status, xid).Scan(&s); err != nil {
		return "", false, err
	}
	if s == nil {
		return "", false, nil
	}
	return *s, true, nil
}

func (p *Sink) newBackoff() *backoff.Backoff {
	return backoff.New(p.cfg.backoffMin, p.cfg.backoffMax)
}
