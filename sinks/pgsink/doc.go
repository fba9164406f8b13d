// Package pgsink is the Postgres sink: each partition's batch is one Postgres
// transaction holding whatever SQL the Stage ran through its [*Writer] and a
// compare-and-set of the partition's next offset in an offsets table:
//
//	UPDATE … SET next_offset = last+1 WHERE … AND next_offset = <the offset this session started from>
//
// Another owner's commit makes it match no row, so a zombie's transaction
// rolls back. The offsets table is the source of truth: when partitions are
// assigned, the session reads their next offsets from it before anything is
// fetched. The sink can mirror committed offsets to Kafka for lag dashboards
// ([MirrorToKafka]); nothing depends on the mirror.
//
// The offsets table, created by [Sink.Migrate] (or by you, from [Sink.DDL]);
// "public"."exactly_offsets" unless [OffsetsTable] says otherwise:
//
//	CREATE TABLE IF NOT EXISTS "public"."exactly_offsets" (
//	    consumer_group text        NOT NULL,
//	    topic          text        NOT NULL,
//	    partition      integer     NOT NULL,
//	    next_offset    bigint      NOT NULL,
//	    updated_at     timestamptz NOT NULL DEFAULT now(),
//	    PRIMARY KEY (consumer_group, topic, partition)
//	);
//
// A commit whose outcome is unknown (the connection died during COMMIT) is
// resolved from the database — pg_xact_status of the transaction, and the
// offsets row — never guessed. Serialization failures (40001), deadlocks
// (40P01) and lost connections abort the partition's batch with an error
// wrapping [sinks.ErrAborted]; the pipeline polls it again and retries.
// PostgreSQL 13 or newer is required (pg_current_xact_id, pg_xact_status).
//
// To reset a group (reprocess from the start), stop its pipelines and delete
// its rows from the offsets table; to move a partition, update its
// next_offset. Rows of other groups are not touched.
//
// # Where things are
//
//   - pgsink.go: the sink, its options and their validation.
//   - ledger.go: the ownership ledger — which partitions the session owns,
//     their stored offsets, and which polled records may commit. Pure state,
//     unit-tested without a database.
//   - session.go: the consumer (positions loaded on assignment), Poll, Begin,
//     Close.
//   - commit.go: the per-partition commit with its compare-and-set, the
//     resolution of unknown outcomes, and settling the outcomes into the
//     ledger.
//   - conn.go: connections (pooled, or dedicated when the pool is exhausted)
//     and the sink's read queries.
//   - mirror.go: the best-effort mirror of committed offsets to Kafka.
//   - sql.go: the statements, the DDL and Migrate.
//   - writer.go: the Stage's handle on its partition's transaction.
package pgsink
