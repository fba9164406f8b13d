package kafkasink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/txn"
)

// Sink is the Kafka sink: each batch runs in a Kafka transaction that holds
// the records the Stage produced and the consumer offsets past the batch
// (KIP-98, KIP-447). Consumers of the output that read with read_committed
// isolation see each input's output exactly once.
//
// The transactional id of an instance is [TransactionalID]: stable across
// restarts, so a restarted instance fences its crashed predecessor, and
// distinct among instances of all pipelines, so they never fence each other.
type Sink struct{}

// New returns the Kafka sink.
func New() *Sink { return &Sink{} }

// TransactionalID is the transactional id the Kafka sink uses for an
// instance of a group: "<group>:<instance id>". The derivation is injective:
// an instance id never contains ':' (pipeline.New refuses it), so the last
// ':' tells the two apart, and no two (group, instance) pairs share an id —
// ("orders", "eu-1") and ("orders-eu", "1") get "orders:eu-1" and
// "orders-eu:1". (A "-" separator let such pipelines fence each other on
// every start.) Grant the principal Write on this id in clusters with ACLs:
// a prefixed ACL on "<group>:" covers every instance of the group.
func TransactionalID(group, instanceID string) string { return group + ":" + instanceID }

// Open implements [sinks.Sink]. It logs partitions assigned, revoked and
// lost at INFO; for that it sets kgo.OnPartitionsAssigned,
// kgo.OnPartitionsRevoked and kgo.OnPartitionsLost itself, replacing any
// given in the options.
func (k *Sink) Open(ctx context.Context, cfg sinks.SessionConfig) (sinks.Session[*Writer], error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("sink", "kafka")
	logParts := func(what string) func(context.Context, *kgo.Client, map[string][]int32) {
		return func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			if len(m) > 0 {
				log.Info("partitions "+what, "partitions", m)
			}
		}
	}
	consumerOpts := append(slices.Clip(cfg.ConsumerOpts),
		kgo.OnPartitionsAssigned(logParts("assigned")),
		kgo.OnPartitionsRevoked(logParts("revoked")),
		kgo.OnPartitionsLost(logParts("lost")),
	)
	s, err := txn.Open(ctx, txn.Config{
		ClientOpts:      cfg.ClientOpts,
		ConsumerOpts:    consumerOpts,
		TransactionalID: TransactionalID(cfg.Group, cfg.InstanceID),
		LeaveOnClose:    cfg.StaticMember,
		Logger:          cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	return &kafkaSession{s: s}, nil
}

type kafkaSession struct {
	s *txn.Session
}

func (ks *kafkaSession) Poll(ctx context.Context, max int) (kgo.Fetches, error) {
	return ks.s.Poll(ctx, max)
}

func (ks *kafkaSession) Begin(ctx context.Context, batches []*sinks.Batch) (sinks.Txn[*Writer], error) {
	if err := ks.s.Begin(ctx); err != nil {
		return nil, err
	}
	t := &kafkaTxn{ks: ks, ctx: ctx, batches: batches}
	// One promise for all records of the transaction, not a closure per
	// record.
	t.promise = func(r *kgo.Record, err error) {
		if err != nil {
			t.fail(r.Topic, err)
		}
		t.promises.done()
	}
	return t, nil
}

func (ks *kafkaSession) Close(ctx context.Context) error {
	return ks.s.Close(ctx)
}

type kafkaTxn struct {
	ks      *kafkaSession
	batches []*sinks.Batch
	// ended is set, under the write lock, before the transaction ends;
	// Produce checks it under the read lock, so a Stage call that outlives
	// its transaction (it ignored its context) can never write into the
	// session's next transaction.
	endMu sync.RWMutex
	ended bool
	// writers are the transaction's writers, whose counts of produced
	// records Outputs adds up; appended by Writer, which the pipeline
	// calls from one goroutine.
	writers []*Writer
	ctx     context.Context
	done    bool
	errMu   sync.Mutex
	err     error
	// promises counts records whose promise has not run: kgo calls the
	// promise of a record it refuses before buffering asynchronously,
	// and Flush does not wait for it.
	promises pending
	promise  func(*kgo.Record, error)
}

func (t *kafkaTxn) Writer(b *sinks.Batch) *Writer {
	w := &Writer{t: t, b: b}
	t.writers = append(t.writers, w)
	return w
}

func (t *kafkaTxn) fail(topic string, err error) {
	err = classifyProduce(topic, err)
	t.errMu.Lock()
	if t.err == nil {
		t.err = &sinks.ProduceError{Topic: topic, Err: err}
	}
	t.errMu.Unlock()
}

func (t *kafkaTxn) produceErr() error {
	t.errMu.Lock()
	defer t.errMu.Unlock()
	return t.err
}

func (t *kafkaTxn) Commit(ctx context.Context) error {
	if t.done {
		return errors.New("kafkasink: Commit after the transaction ended")
	}
	t.done = true
	s := t.ks.s
	// From here on the writers refuse records: one produced by a goroutine
	// the Stage left behind would otherwise slip into this commit unseen.
	t.endMu.Lock()
	t.ended = true
	t.endMu.Unlock()
	// Flush first so a refused record aborts the transaction instead of
	// committing the batch without it.
	if err := s.Flush(ctx); err != nil {
		return t.end(ctx, false, err)
	}
	if err := t.promises.wait(ctx); err != nil {
		return t.end(ctx, false, err)
	}
	if perr := t.produceErr(); perr != nil {
		return t.end(ctx, false, perr)
	}
	err := t.end(ctx, true, nil)
	if errors.Is(err, sinks.ErrOutcomeUnknown) && !sinks.IsFatal(err) {
		// The session was (or will be) re-created, which settled the
		// transaction; the group's committed offsets say how.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleBudget)
		defer cancel()
		if committed, known := t.ks.s.Committed(sctx, sinks.NextOffsets(t.batches)); known && committed {
			return nil
		}
	}
	return err
}

// settleBudget bounds reading the committed offsets after an unknown
// outcome; past it the outcome stays unknown, which costs only a count.
const settleBudget = 5 * time.Second

// end ends the transaction; cause is why a commit became an abort.
func (t *kafkaTxn) end(ctx context.Context, commit bool, cause error) error {
	t.endMu.Lock()
	t.ended = true
	t.endMu.Unlock()
	err := t.ks.s.End(ctx, commit)
	if err != nil && !sinks.IsFatal(err) && fencedProduce(cause) {
		// The records were refused because the broker had already
		// aborted the transaction and bumped the epoch (a timeout, an
		// unknown outcome): End's verdict says why, and it is not fatal.
		cause = nil
	}
	switch {
	case err == nil:
		return cause
	case errors.Is(err, sinks.ErrAborted):
		return errors.Join(cause, err)
	case errors.Is(err, sinks.ErrOutcomeUnknown):
		return errors.Join(cause, fmt.Errorf("%w: %w", sinks.ErrAborted, err))
	default:
		return errors.Join(cause, err)
	}
}

// fencedProduce reports whether err is a record refused for the producer's
// epoch, which follows from the transaction's fate rather than the record.
func fencedProduce(err error) bool {
	var pe *sinks.ProduceError
	return errors.As(err, &pe) && (errors.Is(pe.Err, kerr.ProducerFenced) || errors.Is(pe.Err, kerr.InvalidProducerEpoch))
}

func (t *kafkaTxn) Rollback(ctx context.Context) error {
	if t.done {
		return nil
	}
	t.done = true
	return t.end(ctx, false, nil)
}

// Writer is how a Stage writes its output in Kafka mode: records
// produced through it are part of the batch's transaction.
type Writer struct {
	t *kafkaTxn
	b *sinks.Batch
	// held, inside Atomic, collects what fn produces until it succeeds.
	held *[]*kgo.Record
	// produced counts the records this writer produced: one counter per
	// writer (partition), so concurrent Stage calls do not contend on one.
	produced atomic.Int64
}

// Batch is the batch this writer writes the output of.
func (w *Writer) Batch() *sinks.Batch { return w.b }

// Produce produces r in the transaction, without waiting. A record Kafka
// refuses aborts the whole transaction at commit, so nothing is lost or
// half-written. The record's Topic must be set, and the topic must exist: a
// record to a topic that does not exist stops Run with an error wrapping a
// [*sinks.MissingError] that names it (exactly never creates topics). A
// record produced after the transaction ended (by a Stage call that ignored
// its context and outlived it) is discarded with the transaction.
func (w *Writer) Produce(r *kgo.Record) {
	if w.held != nil {
		// Inside Atomic: checked when the attempt succeeds, so a failed
		// attempt leaves nothing behind, not even a refusal.
		*w.held = append(*w.held, r)
		return
	}
	if r.Topic == "" {
		w.t.fail("", errors.New("record has no topic"))
		return
	}
	w.t.endMu.RLock()
	defer w.t.endMu.RUnlock()
	if w.t.ended {
		return // the transaction ended under a Stage that outlived it: discarded with it
	}
	w.t.promises.add()
	w.produced.Add(1)
	w.t.ks.s.Produce(w.t.ctx, r, w.t.promise)
}

// Outputs implements sinks.OutputCounter: the records produced in the
// transaction.
func (t *kafkaTxn) Outputs() int {
	n := int64(0)
	for _, w := range t.writers {
		n += w.produced.Load()
	}
	return int(n)
}

// classifyProduce makes a produce to a topic that does not exist permanent.
// kgo fails such records with UNKNOWN_TOPIC_OR_PARTITION only after the topic
// was missing from several metadata answers (kgo.UnknownTopicRetries, default
// 4), so a topic that was just created and has not propagated yet is not
// mistaken for a missing one; past that, retrying the batch only repeats the
// failure.
func classifyProduce(topic string, err error) error {
	if errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.UnknownTopicID) {
		return &sinks.MissingError{Kind: "output topic", Name: topic, Err: err,
			Fix: "create it (exactly never creates topics), or fix the Topic of the records the Stage produces"}
	}
	return err
}

// pending counts records whose promise has not run yet. Unlike a
// sync.WaitGroup it can be waited on with a context without a goroutine that
// would outlive the wait. add and done are one atomic operation each (they
// run once per record); the mutex is taken only when the count reaches zero
// and by wait.
type pending struct {
	n    atomic.Int64
	mu   sync.Mutex
	zero chan struct{} // closed when n drops to 0; nil while nobody waits
}

func (p *pending) add() { p.n.Add(1) }

func (p *pending) done() {
	if p.n.Add(-1) != 0 {
		return
	}
	p.mu.Lock()
	if p.zero != nil {
		close(p.zero)
		p.zero = nil
	}
	p.mu.Unlock()
}

// wait returns once no promise is pending, or ctx's error when it ends first.
func (p *pending) wait(ctx context.Context) error {
	p.mu.Lock()
	if p.n.Load() == 0 { // checked under the lock: a done that reached 0 closes zero only after it
		p.mu.Unlock()
		return nil
	}
	if p.zero == nil {
		p.zero = make(chan struct{})
	}
	zero := p.zero
	p.mu.Unlock()
	select {
	case <-zero:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// DeadLetter produces src to the dead-letter topic with the reason and its
// origin in headers (see [DeadLetterRecord]), in the same transaction.
func (w *Writer) DeadLetter(topic string, src *kgo.Record, reason error) {
	w.Produce(DeadLetterRecord(topic, src, reason))
}

// ConsumesFromKafka implements [sinks.KafkaConsumer]: the pipeline checks
// the brokers and the input topics before the first session opens.
func (k *Sink) ConsumesFromKafka() bool { return true }
