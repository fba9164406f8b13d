// Package kafkasink is the Kafka sink: each pipeline transaction is one Kafka
// transaction that holds the records the Stage produced through its
// [*Writer] and the consumer offsets past the batch (KIP-98, KIP-447).
// Consumers of the output that read with read_committed isolation see each
// input's output exactly once.
//
// A zombie is fenced by the broker, by its producer epoch and by the group
// generation that travels with its offsets. The transactional session itself
// (fencing the previous incarnation at start, re-creating the producer after
// a commit whose outcome is unknown) is package txn; this package adapts it
// to the [sinks.Sink] contract and adds the writer and dead-letter records
// ([DeadLetterRecord], [Writer.DeadLetter]) written in the same transaction.
//
// The package links no database driver: a Kafka-only program built on it and
// package pipeline does not carry pgx.
package kafkasink
