package pgsink

import (
	"context"
	"errors"
	"fmt"

	"github.com/exactlyonce/exactly/sinks"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pgQueries are the sink's statements for one offsets table.
type pgQueries struct {
	create  string // the table's DDL
	check   string // fails when the table is missing or lacks a column
	load    string // next offsets of many partitions of a group
	loadOne string
	update  string // the compare-and-set on an existing row
	insert  string // the compare-and-set on an absent row
	status  string // the outcome of a transaction by its id
	kill    string // terminates the backend still running a transaction
}

func newPgQueries(table string) pgQueries {
	return pgQueries{
		create: `CREATE TABLE IF NOT EXISTS ` + table + ` (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    next_offset    bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
)`,
		check: `SELECT consumer_group, topic, partition, next_offset, updated_at FROM ` + table + ` WHERE false`,
		load: `SELECT o.topic, o.partition, o.next_offset FROM ` + table + ` o
JOIN unnest($2::text[], $3::integer[]) AS w(topic, partition) USING (topic, partition)
WHERE o.consumer_group = $1`,
		loadOne: `SELECT next_offset FROM ` + table + ` WHERE consumer_group = $1 AND topic = $2 AND partition = $3`,
		update: `UPDATE ` + table + ` SET next_offset = $5, updated_at = now()
WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND next_offset = $4
RETURNING pg_current_xact_id()::text`,
		insert: `INSERT INTO ` + table + ` (consumer_group, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
ON CONFLICT (consumer_group, topic, partition) DO NOTHING
RETURNING pg_current_xact_id()::text`,
		status: `SELECT pg_xact_status($1::xid8)`,
		kill: `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE pid = $1 AND backend_xid IS NOT NULL
AND backend_xid::text = (($2::text)::numeric % 4294967296)::text`,
	}
}

// DDL is the statement that creates the offsets table, for those who manage
// their schema with their own migration tool. [Sink.Migrate] runs it.
func (p *Sink) DDL() string { return p.sql.create + ";" }

// Migrate creates the offsets table (and its schema) if they do not exist.
// It is idempotent and safe to run from many instances at once (it takes a
// transaction-scoped advisory lock), and it never alters an existing
// table. Run it once before the pipeline starts, or create the table with
// [Sink.DDL] instead: the sink itself never creates tables.
func (p *Sink) Migrate(ctx context.Context) error {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pgsink: migrating %s: %w", p.Table(), err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// Concurrent CREATE TABLE IF NOT EXISTS of one table can fail with a
	// unique violation in the catalogs; the lock serialises them.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "exactly.migrate:"+p.Table()); err != nil {
		return fmt.Errorf("pgsink: migrating %s: %w", p.Table(), err)
	}
	// CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on the
	// database even when the schema exists, so look first.
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, p.cfg.schema).Scan(&exists); err != nil {
		return fmt.Errorf("pgsink: migrating %s: %w", p.Table(), err)
	}
	if !exists {
		if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{p.cfg.schema}.Sanitize()); err != nil {
			return fmt.Errorf("pgsink: migrating %s: creating schema: %w", p.Table(), err)
		}
	}
	if _, err := tx.Exec(ctx, p.sql.create); err != nil {
		return fmt.Errorf("pgsink: migrating %s: %w", p.Table(), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("pgsink: migrating %s: %w", p.Table(), err)
	}
	return nil
}

// checkTable reports a missing or malformed offsets table plainly.
func (p *Sink) checkTable(ctx context.Context) error {
	_, err := p.pool.Exec(ctx, p.sql.check)
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "42P01", "3F000": // undefined_table, invalid_schema_name
			return fmt.Errorf("pgsink: %w", &sinks.MissingError{Kind: "offsets table", Name: p.Table(), Err: err,
				Fix: "run (*pgsink.Sink).Migrate once before the pipeline starts, or create it with the statement of (*pgsink.Sink).DDL"})
		case "28P01", "28000": // invalid_password, invalid_authorization_specification
			return fmt.Errorf("pgsink: postgres refused the login (%s): check the user and password of the pool's connection string (%w: %w)", pe.Code, sinks.ErrPermanent, err)
		case "3D000": // invalid_catalog_name
			return fmt.Errorf("pgsink: the database of the pool's connection string does not exist: create it or fix the URL (%w: %w)", sinks.ErrPermanent, err)
		case "42501": // insufficient_privilege
			return fmt.Errorf("pgsink: the pool's user may not read the offsets table %s: GRANT SELECT, INSERT, UPDATE on it (%w: %w)", p.Table(), sinks.ErrPermanent, err)
		case "42703": // undefined_column
			return fmt.Errorf("pgsink: the offsets table %s lacks a column the sink needs; compare it with (*pgsink.Sink).DDL (%w: %w)", p.Table(), sinks.ErrPermanent, err)
		}
	}
	return fmt.Errorf("pgsink: checking the offsets table %s: %w", p.Table(), err)
}

// CommittedOffsets implements [sinks.OffsetReader]: the next offsets the
// offsets table holds for group's partitions of topics.
func (p *Sink) CommittedOffsets(ctx context.Context, group string, topics []string) (map[string]map[int32]int64, error) {
	rows, err := p.pool.Query(ctx, `SELECT topic, partition, next_offset FROM `+p.Table()+
		` WHERE consumer_group = $1 AND topic = ANY($2::text[])`, group, topics)
	if err != nil {
		return nil, fmt.Errorf("pgsink: reading the committed offsets of group %q from %s: %w", group, p.Table(), err)
	}
	defer rows.Close()
	out := make(map[string]map[int32]int64)
	for rows.Next() {
		var (
			topic string
			part  int32
			next  int64
		)
		if err := rows.Scan(&topic, &part, &next); err != nil {
			return nil, fmt.Errorf("pgsink: reading the committed offsets of group %q from %s: %w", group, p.Table(), err)
		}
		if out[topic] == nil {
			out[topic] = make(map[int32]int64)
		}
		out[topic][part] = next
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgsink: reading the committed offsets of group %q from %s: %w", group, p.Table(), err)
	}
	return out, nil
}

// DeleteOffsets deletes the rows of group from the offsets table, so the
// group starts again from StartOffset the next time it runs. Run it only
// while no instance of the group runs (a batch job that is done, a test);
// it returns how many rows it deleted.
func (p *Sink) DeleteOffsets(ctx context.Context, group string) (int64, error) {
	tag, err := p.pool.Exec(ctx, `DELETE FROM `+p.Table()+` WHERE consumer_group = $1`, group)
	if err != nil {
		return 0, fmt.Errorf("pgsink: deleting the offsets of group %q from %s: %w", group, p.Table(), err)
	}
	return tag.RowsAffected(), nil
}
