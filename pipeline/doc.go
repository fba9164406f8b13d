// Package pipeline runs a Stage — your business logic — over Kafka topics so
// that each input record's effect happens exactly once.
//
// # The guarantee
//
// A Pipeline consumes its topics in a consumer group with read_committed
// isolation, collects a batch (bounded by MaxRecords, MaxBytes and MaxWait),
// runs the Stage on each partition's part of the batch, and commits the
// effects the Stage wrote and the consumer offsets past the batch in ONE
// atomic commit through its Sink:
//
//   - Kafka mode (kafkasink.New): one Kafka transaction holds the output
//     records and the offsets, committed with the group's generation, so a
//     zombie instance is fenced by the broker (KIP-98, KIP-447).
//   - Postgres mode (pgsink.New): one Postgres transaction per
//     partition holds the Stage's SQL and a compare-and-set of the stored
//     offset, so a zombie's commit updates nothing and rolls back.
//
// Either the effects and the offsets commit together, or neither does and the
// batch is processed again from the committed offsets. So, for consumers
// that read the output with read_committed (or read the database), every
// input record's effect appears exactly once, in order within its partition,
// across crashes (SIGKILL at any point), clean restarts, rebalances, broker
// failures, lost responses and paused instances that wake up after they were
// replaced.
//
// # The limits, plainly
//
//   - Effects a Stage causes outside its sink's writer (HTTP calls, files,
//     other databases) are not undone when a transaction aborts. They happen
//     at least once; make them idempotent.
//   - A consumer of the output that reads with read_uncommitted sees records
//     of aborted transactions.
//   - Exactly-once holds from input topic to output; the producers of the
//     input must themselves be idempotent (the default in franz-go and the
//     Java client) or the input may already hold duplicates.
//   - The durability of a commit is the durability of the cluster: use a
//     replication factor of at least 3, min.insync.replicas of at least 2,
//     and no unclean leader election.
//
// # Instances, restarts and fencing
//
// Each instance needs an InstanceID that is stable across its restarts and
// unique among the instances running at once (a pod name of a StatefulSet, a
// host name plus a slot number). It names the instance's transactional id and
// its static group membership. When an instance starts, it first fences its
// previous incarnation (InitProducerID on the same transactional id aborts a
// transaction the crash left open), then joins the group in its
// predecessor's place; a crashed instance resumes within about a second
// instead of waiting out the transaction and session timeouts.
//
// # Errors
//
// Run retries what can be retried — aborted transactions, rebalances, brokers
// that come and go, commits whose outcome is unknown (the producer is then
// re-created, never reused) — with exponential backoff, and returns only:
// nil when its context is cancelled; a *StageError when the Stage panicked
// or kept failing (nothing of that batch was committed); a fatal error
// (sinks.IsFatal) when the instance was fenced by a newer one or is not
// authorized; a permanent error (sinks.IsPermanent), at once, when an input
// topic, an output topic or the offsets table does not exist — a
// *sinks.MissingError that names it and the fix; or a *StartError when the
// first session could not be opened within StartTimeout, with the last
// connection error in its text and its chain (errors.Is(err,
// syscall.ECONNREFUSED) holds for a refused connection). Bad configuration
// is refused by New with a *sinks.ConfigError that names the option and the
// value.
//
// With a Logger, Run logs its lifecycle at INFO — start (brokers, group,
// topics, instance), partitions assigned and revoked, stop with the reason —
// and every retry at WARN with its cause and attempt.
//
// A transaction that outlives TransactionTimeout (a GC pause, a slow commit)
// is aborted by the broker, which then answers as it answers a zombie
// (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH). Run treats that as an aborted
// transaction (AbortTimeout) and re-creates the session; only evidence of a
// successor — another producer initializing the transactional id before the
// timeout could have expired, or another group member holding the instance
// id — is fatal. A Stage that ignores its context is reported at once when
// it passes its budget; after a grace period its transaction aborts
// (ErrStageStuck). Records lost from an input partition stop Run with a
// *DataLossError unless DataLoss(DataLossContinue) says otherwise.
//
// # Records that fail
//
// PerRecord wraps record-at-a-time logic (a RecordStage) with a
// RecordPolicy: retry a failing record, then dead-letter it inside the
// batch's transaction (kafkasink.DeadLetterTo, pgsink.DeadLetterTable), or
// stop (the zero policy). Each attempt is all-or-nothing through the writer's
// Atomic method.
//
// # Observing
//
// Hooks (HookBatchCommitted, HookBatchAborted with its AbortReason,
// HookPolled, HookStateChanged) are the seam for metrics and tracing
// adapters; State reports starting, running, rebalancing, retrying (with its
// cause) or stopped (with Run's error) for health probes; Stats counts
// commits and aborts by reason. At start Run checks the cluster's loss risks
// with package pipeline/doctor (Preflight: warn by default, or refuse).
//
// # Batch jobs
//
// RunUntilCaughtUp runs until the group has committed everything that was in
// the input topics when it started, then returns nil; Lag is the group's lag
// as Kafka sees it.
//
// # Embedding
//
// A Pipeline is a library value: no globals, no goroutines before Run, and
// Run returns only after every goroutine it started has finished and the
// instance has left the group. Run it under your program's context next to
// your other workers:
//
//	p, err := pipeline.New(kafkasink.New(), stage,
//		pipeline.Brokers("kafka-1:9092"), pipeline.Group("orders-etl"),
//		pipeline.Topics("orders"), pipeline.InstanceID(os.Getenv("POD_NAME")))
//	if err != nil { ... }
//	go func() { errc <- p.Run(ctx) }()
//
// Pass your own franz-go options (TLS, SASL, client id, logger, hooks) with
// ClientOpts; options that would break the guarantee are refused with an
// error that says why.
package pipeline
