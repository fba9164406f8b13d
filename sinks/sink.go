package sinks

import (
	"context"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Batch is the records of one partition that one transaction covers, in
// offset order. Records[0] is the first record after the last committed
// offset of the partition (or the position the sink seeked to), and the
// records are contiguous as far as Kafka delivers them (compacted topics and
// transaction markers leave gaps in offsets, never in order).
type Batch struct {
	Topic     string
	Partition int32
	Records   []*kgo.Record
}

// FirstOffset is the offset of the first record of the batch.
func (b *Batch) FirstOffset() int64 { return b.Records[0].Offset }

// LastOffset is the offset of the last record of the batch.
func (b *Batch) LastOffset() int64 { return b.Records[len(b.Records)-1].Offset }

// NextOffset is the offset the partition resumes from once the batch is
// committed: LastOffset()+1.
func (b *Batch) NextOffset() int64 { return b.LastOffset() + 1 }

// NextOffsets is where each batch's partition resumes once the batches
// committed, per topic and partition.
func NextOffsets(batches []*Batch) map[string]map[int32]int64 {
	next := make(map[string]map[int32]int64, 1)
	for _, b := range batches {
		if next[b.Topic] == nil {
			next[b.Topic] = map[int32]int64{}
		}
		next[b.Topic][b.Partition] = b.NextOffset()
	}
	return next
}

// Sink is where a pipeline's effects and its consumer offsets are committed
// together. W is the handle a Stage writes its output through: a
// *kafkasink.Writer for the Kafka sink, a *pgsink.Writer for the Postgres
// sink. A Sink owns the consumer because the two are one piece: in Kafka mode
// the consumer and the transactional producer must be the same client for
// the offsets to join the transaction; in Postgres mode the offsets are loaded
// from the database when partitions are assigned, before anything is fetched.
//
// The pipeline calls Open once per Run and closes the session when Run
// returns. A session heals itself: after a commit whose outcome is unknown
// the Kafka sink re-creates its clients inside the same session, and the
// Postgres sink re-reads the partition's offsets row; neither asks the
// pipeline for a new session.
type Sink[W any] interface {
	Open(ctx context.Context, cfg SessionConfig) (Session[W], error)
}

// SessionConfig is what the pipeline hands a Sink when it opens a session.
type SessionConfig struct {
	// ClientOpts are the connection options every client of the session
	// may use: seed brokers and the user's own options (TLS, SASL, client
	// id, logger, hooks). Both sinks give their session's client a context
	// of their own (kgo.WithContext; see txn.CloseClient), which the
	// pipeline therefore refuses here.
	ClientOpts []kgo.Opt
	// ConsumerOpts make a client the pipeline's consumer: the group, the
	// topics, read_committed isolation, no auto-commit, timeouts. A sink
	// appends its own after them.
	ConsumerOpts []kgo.Opt
	// Group is the consumer group.
	Group string
	// InstanceID names this instance of the pipeline, stable across
	// restarts. The Kafka sink derives its transactional id from it.
	InstanceID string
	// StaticMember is true when ConsumerOpts make the consumer a static
	// group member (kgo.InstanceID). A static member does not leave the
	// group when its client closes; a sink's Close must then leave
	// explicitly (see txn.LeaveGroup), except after it was fenced, when
	// leaving would remove its replacement.
	StaticMember bool
	// Logger receives the sink's log lines. Never nil.
	Logger *slog.Logger
	// TransactionTimeout budgets each transaction from Begin to the end of
	// Commit: the Stage gets 80% of it, the commit the rest.
	TransactionTimeout time.Duration
}

// ConfigChecker is implemented by a sink that must refuse pipeline settings
// it cannot work with. pipeline.New calls it, before anything connects, with
// the SessionConfig the sink's sessions would get, and returns its error (a
// [*ConfigError], by convention).
type ConfigChecker interface {
	CheckConfig(SessionConfig) error
}

// Session is one connected incarnation of a pipeline instance: a consumer in
// the group and whatever commits its effects. Poll, Begin and the returned
// Txn's methods are called from one goroutine, never concurrently, except that
// a Txn's writers may be used concurrently, one goroutine per writer.
type Session[W any] interface {
	// Poll returns up to max buffered records, waiting until at least one
	// is available or ctx is done. The error is a failure of the session
	// itself (its clients could not be re-created, or it was fenced);
	// errors of single partitions are in the fetches.
	Poll(ctx context.Context, max int) (kgo.Fetches, error)
	// Begin starts the transaction that covers batches (one per
	// partition, in the order they were polled). If Begin fails, the
	// session must still never skip the polled records: it rewinds their
	// partitions, or discards its consumer so the next Poll starts at the
	// committed offsets.
	Begin(ctx context.Context, batches []*Batch) (Txn[W], error)
	// Close ends the session: it leaves the group and releases
	// connections. A Txn still open is rolled back first.
	Close(ctx context.Context) error
}

// Txn is one transaction: the writes a Stage made for the batches it covers,
// and the offsets that move each partition past its batch. Commit makes both
// visible, or neither.
//
// Rollback is safe to call after Commit and safe to call twice, so
//
//	defer tx.Rollback(ctx)
//
// is always right. After a Rollback, and after a Commit that returns an
// error, the consumer positions of the covered partitions are back at their
// committed offsets, so nothing polled in the aborted transaction is lost.
type Txn[W any] interface {
	// Writer returns the handle through which the Stage writes the
	// output of batch b (one of the batches given to Begin). Writers of
	// different batches may be used concurrently.
	Writer(b *Batch) W
	// Commit commits the writes and the offsets. It returns nil only if
	// everything committed. A sink that commits partitions on their own
	// names each partition that did not commit with a [*PartitionError];
	// the partitions it does not name committed. An error that wraps
	// [ErrAborted] means the transaction (or part of it) was rolled back
	// for a reason that is not the Stage's fault — a rebalance, a fenced
	// zombie — and the batches it did not commit will be polled again.
	// [IsRetryable] and [IsFatal] classify every error.
	Commit(ctx context.Context) error
	// Rollback discards the writes and rewinds positions.
	Rollback(ctx context.Context) error
}

// OutputCounter is implemented by a Txn that counts the records its writers
// produced; the pipeline reports the count of a committed transaction to its
// hooks (records out).
type OutputCounter interface {
	Outputs() int
}

// OffsetReader is an optional interface of a [Sink] that keeps the
// committed offsets itself instead of in the consumer group's offsets in
// Kafka (the Postgres sink keeps them in its offsets table). The pipeline
// finds it by type assertion where it needs the committed offsets, as
// pipeline.(*Pipeline).RunUntilCaughtUp does; a sink without it commits to the
// group in Kafka.
type OffsetReader interface {
	// CommittedOffsets returns the next offset to consume of each
	// partition of topics that group committed, by topic and partition.
	// A partition with nothing committed is absent.
	CommittedOffsets(ctx context.Context, group string, topics []string) (map[string]map[int32]int64, error)
}

// KafkaConsumer is an optional interface of a [Sink] whose sessions consume
// the input from Kafka with the SessionConfig's ClientOpts — both sinks of
// exactly. For such a sink the pipeline checks, before it opens the first
// session, that the brokers answer and that the input topics exist, so that
// unreachable brokers and missing topics end in an error that names them
// instead of a consumer that retries in the background. A sink that reads
// from elsewhere (a test double) does not implement it.
type KafkaConsumer interface {
	// ConsumesFromKafka reports whether the sink's sessions consume from
	// Kafka.
	ConsumesFromKafka() bool
}
