// Package sinks is the contract between the pipeline and the places where a
// pipeline's effects and its consumer offsets are committed together — and
// the framework's one error vocabulary.
//
// # The guarantee a sink gives
//
// For every input record, its effects written through the sink's writer
// become visible exactly once, in the order of its partition, even when
// processes crash, the database or the brokers restart, partitions move
// between instances, or a paused instance wakes up after it was replaced.
// This holds because the effects of a batch and the offset that moves its
// partition past the batch are one atomic commit ([Txn.Commit]), and because
// positions always resume from that committed offset. Effects written
// anywhere else (an HTTP call, a file, a second database) are not covered:
// they happen at least once.
//
// # The contract
//
// A [Sink] opens a [Session] (a consumer in the group plus whatever commits
// its effects); the session polls records, begins a [Txn] over one
// [Batch] per partition, hands the Stage a writer per batch, and commits or
// rolls back. Rollback is safe after Commit and twice, so defer it. The
// implementations live in their own packages, so a program links only the
// one it uses:
//
//   - sinks/kafkasink: each transaction is one Kafka transaction holding the
//     output records and the consumer offsets (KIP-98, KIP-447).
//   - sinks/pgsink: each partition's batch is one Postgres transaction
//     holding the Stage's SQL and a compare-and-set of the partition's
//     offset in an offsets table.
//
// Package sinks/sinktest is the conformance suite every sink must pass:
// commits are visible, rollbacks invisible and rewound, offsets atomic with
// the writes, sessions resume from the committed offsets, and a zombie's
// commit fails while the effects stay exactly once.
//
// # Errors
//
// Every package of exactly returns the sentinels and types defined here, and
// three functions classify any error:
//
//   - [IsFatal]: the instance must stop — it was fenced by a successor
//     ([ErrFenced] inside a [*FatalError]) or is not authorized.
//   - [IsPermanent]: retrying cannot heal it, and it is no batch's fault — a
//     topic or table the pipeline needs does not exist ([*MissingError],
//     which matches [ErrPermanent]). The pipeline returns it at once, with
//     the name of the thing and the fix.
//   - [IsRetryable]: nothing committed and trying again can succeed — an
//     abort ([ErrAborted]: a rebalance, a lost database connection, a zombie
//     fenced off one partition) or a settled unknown outcome
//     ([ErrOutcomeUnknown]). Refusals are not retryable: a record Kafka
//     refused ([*ProduceError]) or a partition whose output the database
//     refused ([*PartitionError] with a non-retryable cause).
//
// Configuration refused by a constructor is a [*ConfigError] naming the
// option and the value.
//
// # Optional interfaces
//
// A sink that keeps the committed offsets itself (the Postgres sink)
// implements [OffsetReader], which the pipeline finds by type assertion to
// tell when a group has caught up with its input.
package sinks
