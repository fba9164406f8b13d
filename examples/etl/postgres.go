package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/pgsink"
)

// postgresMode writes enriched orders and dead letters into two tables of
// the run, in the same Postgres transaction as the offsets.
type postgresMode struct {
	pool       *pgxpool.Pool
	sink       *pgsink.Sink
	orders     pgx.Identifier
	dead       pgx.Identifier
	keep       bool
	offsetsTbl string
	group      string
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

func newPostgresMode(ctx context.Context, cfg config, tp topics) (mode, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.pgURL)
	if err != nil {
		return nil, fmt.Errorf("-pg %s: %w", redact(cfg.pgURL), err)
	}
	// One connection per partition an instance may hold in a transaction,
	// plus a few for the verifier and progress queries.
	pcfg.MaxConns = int32(cfg.partitions*cfg.instances + 4)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("-pg %s: %w", redact(cfg.pgURL), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot reach Postgres at %s: %w (start the local one with `make pg-up`, or pass -pg URL)", redact(cfg.pgURL), err)
	}
	sink, err := pgsink.New(pool)
	if err != nil {
		pool.Close()
		return nil, err
	}
	if err := sink.Migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	suffix := tp.in[len("orders-"):]
	m := &postgresMode{
		pool:       pool,
		sink:       sink,
		orders:     pgx.Identifier{"etl_orders_" + suffix},
		dead:       pgx.Identifier{"etl_dead_letters_" + suffix},
		keep:       cfg.keep,
		offsetsTbl: sink.Table(),
		group:      tp.group,
	}
	_, err = pool.Exec(ctx, `CREATE TABLE `+m.orders.Sanitize()+` (
	id              bigserial PRIMARY KEY,
	src_topic       text    NOT NULL,
	src_partition   integer NOT NULL,
	src_offset      bigint  NOT NULL,
	order_id        text    NOT NULL,
	customer_id     text    NOT NULL,
	total_usd_cents bigint  NOT NULL,
	doc             jsonb   NOT NULL
);
CREATE TABLE `+m.dead.Sanitize()+` (
	id            bigserial PRIMARY KEY,
	src_topic     text    NOT NULL,
	src_partition integer NOT NULL,
	src_offset    bigint  NOT NULL,
	error         text    NOT NULL,
	raw           bytea
)`)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("creating the run's tables: %w", err)
	}
	return m, nil
}

func (m *postgresMode) close() {
	if !m.keep {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = m.pool.Exec(ctx, `DROP TABLE IF EXISTS `+m.orders.Sanitize()+`, `+m.dead.Sanitize())
		// The run's group is never used again: leave no rows behind.
		_, _ = m.sink.DeleteOffsets(ctx, m.group)
	}
	m.pool.Close()
}

var (
	orderCols = []string{"src_topic", "src_partition", "src_offset", "order_id", "customer_id", "total_usd_cents", "doc"}
	deadCols  = []string{"src_topic", "src_partition", "src_offset", "error", "raw"}
)

func (m *postgresMode) stage() pipeline.Stage[*pgsink.Writer] {
	return pipeline.StageFunc[*pgsink.Writer](func(ctx context.Context, b *sinks.Batch, w *pgsink.Writer) error {
		orders := make([][]any, 0, len(b.Records))
		var dead [][]any
		for i, r := range b.Records {
			if i%1024 == 0 && ctx.Err() != nil {
				return ctx.Err() // stopping: nothing of this batch commits anyway
			}
			e, v, err := transform(r)
			if errors.Is(err, errInvalid) {
				dead = append(dead, []any{r.Topic, r.Partition, r.Offset, err.Error(), r.Value})
				continue
			}
			if err != nil {
				return err
			}
			orders = append(orders, []any{r.Topic, r.Partition, r.Offset, e.OrderID, e.CustomerID, e.TotalUSDCents, string(v)})
		}
		if len(orders) > 0 {
			if _, err := w.CopyFrom(ctx, m.orders, orderCols, pgx.CopyFromRows(orders)); err != nil {
				return fmt.Errorf("copying %d orders: %w", len(orders), err)
			}
		}
		if len(dead) > 0 {
			if _, err := w.CopyFrom(ctx, m.dead, deadCols, pgx.CopyFromRows(dead)); err != nil {
				return fmt.Errorf("copying %d dead letters: %w", len(dead), err)
			}
		}
		return nil
	})
}

func (m *postgresMode) runPipelines(ctx context.Context, cfg config, brokers []string, tp topics, w io.Writer) error {
	fmt.Fprintf(w, "Postgres sink: rows into %s and %s, offsets in %s\n", m.orders.Sanitize(), m.dead.Sanitize(), m.offsetsTbl)
	return runInstances(ctx, cfg, w, func(i int, hooks pipeline.Hook) (runner, error) {
		return pipeline.New(m.sink, m.stage(), append(pipelineOpts(cfg, brokers, tp, i), pipeline.Hooks(hooks))...)
	})
}

func (m *postgresMode) verify(ctx context.Context, conn []kgo.Opt, tp topics) (result, error) {
	in, err := verify.ReadAll(ctx, conn, tp.in, time.Minute)
	if err != nil {
		return result{}, err
	}
	inputs := make([]verify.Source, len(in))
	for i, r := range in {
		inputs[i] = verify.Source{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
	}
	var outputs []verify.Output
	for _, tbl := range []pgx.Identifier{m.orders, m.dead} {
		rows, err := m.pool.Query(ctx, `SELECT src_topic, src_partition, src_offset FROM `+tbl.Sanitize()+` ORDER BY id`)
		if err != nil {
			return result{}, err
		}
		for rows.Next() {
			var s verify.Source
			if err := rows.Scan(&s.Topic, &s.Partition, &s.Offset); err != nil {
				rows.Close()
				return result{}, err
			}
			outputs = append(outputs, verify.Output{Where: tbl[0], Source: s})
		}
		if err := rows.Err(); err != nil {
			return result{}, err
		}
	}
	rep := verify.Compare(inputs, outputs)
	if !rep.OK() {
		fmt.Println(rep.String())
	}
	return result{
		in: rep.In, out: rep.Out[m.orders[0]], dead: rep.Out[m.dead[0]],
		duplicates: rep.Duplicates, missing: rep.Missing, unknown: rep.Unknown, disorder: rep.OrderViolations,
	}, nil
}
