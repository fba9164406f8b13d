// Package txn is exactly's Kafka transaction session: a
// kgo.GroupTransactSession (franz-go's consume-transform-produce session,
// which aborts when partitions are revoked mid-transaction and heartbeats
// before committing) with the two things production needs on top of it:
//
//   - Open fences the previous incarnation of the transactional id before the
//     consumer joins the group, so an instance killed between TxnOffsetCommit
//     and EndTxn does not stall its restart for the transaction timeout
//     (the group's stable offset fetch answers UNSTABLE_OFFSET_COMMIT while
//     that transaction is open).
//   - After any End whose outcome is unknown — a timeout, a lost response, an
//     unexpected broker error — the session discards its client and opens a
//     fresh one with the same transactional id instead of retrying in place,
//     so a delayed request of the old producer cannot land in a later
//     transaction (KAFKA-17754, KIP-890). A re-opened session fences too,
//     but joins the group while a slow fence waits for the coordinator
//     (after a broker failure, seconds) instead of after it; its producer
//     begins only once the fence returned.
//
// Errors are the framework's vocabulary of package sinks, classified by
// sinks.IsFatal (fenced, unauthorized: stop) and sinks.IsRetryable (aborted,
// re-created, retriable Kafka errors: go on). Kafka error codes are the
// values of franz-go's kerr package.
//
// Most programs use txn through the Kafka sink (kafkasink.New) and a
// pipeline; use it directly only to build a loop of your own.
package txn
