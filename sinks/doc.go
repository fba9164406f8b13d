// Package sinks is where a pipeline's effects and its consumer offsets are
// committed together, so that each input record's effect happens exactly
// once.
//
// # The guarantee
//
// For every input record, its effects written through the sink's writer
// become visible exactly once, in the order of its partition, even when
// processes crash, the database or the brokers restart, partitions move
// between instances, or a paused instance wakes up after it was replaced.
// This holds because the effects of a batch and the offset that moves its
// partition past the batch are one atomic commit, and because positions are
// always resumed from that committed offset. Effects written anywhere else
// (an HTTP call, a file, a second database) are not covered: they happen at
// least once.
//
// # Kafka mode
//
// [NewKafka] returns the Kafka sink. Each pipeline transaction is one Kafka
// transaction holding the records the Stage produced through its
// [*KafkaWriter] and the consumer offsets past the batch (KIP-98, KIP-447).
// Consumers of the output that read with read_committed isolation see each
// input's output exactly once. A zombie is fenced by the broker: by its
// producer epoch and by the group generation that travels with its offsets.
//
// # Postgres mode
//
// [NewPostgres] returns the Postgres sink. Each partition's batch is one
// Postgres transaction holding whatever SQL the Stage ran through its
// [*PostgresWriter] and a compare-and-set of the partition's next offset in
// an offsets table: UPDATE … SET next_offset = last+1 WHERE … AND
// next_offset = the offset this session started from. Another owner's
// commit makes it match no row, so a zombie's transaction rolls back. The
// offsets table is the source of truth: when partitions are assigned, the
// session reads their next offsets from it before anything is fetched. The
// sink can mirror committed offsets to Kafka for lag dashboards
// ([MirrorToKafka]); nothing depends on the mirror.
//
// The offsets table, created by [Postgres.Migrate] (or by you, from
// [Postgres.DDL]); "public"."exactly_offsets" unless [OffsetsTable] says
// otherwise:
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
// wrapping [ErrAborted]; the pipeline polls it again and retries. PostgreSQL
// 13 or newer is required (pg_current_xact_id, pg_xact_status).
//
// To reset a group (reprocess from the start), stop its pipelines and
// delete its rows from the offsets table; to move a partition, update its
// next_offset. Rows of other groups are not touched.
//
// # Conformance
//
// Both sinks pass one conformance suite, package sinks/sinktest: commits are
// visible, rollbacks invisible and rewound, offsets atomic with the writes,
// sessions resume from the committed offsets, and a zombie's commit fails
// while the effects stay exactly once.
package sinks
