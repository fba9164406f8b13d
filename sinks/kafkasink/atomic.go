package kafkasink

import (
	"context"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// HeaderAttempts is the header DeadLetterTo sets: how many times the record
// was tried.
const HeaderAttempts = "exactly.attempts"

// Atomic runs fn with a writer whose records are held back until fn returns
// nil, then produced in the transaction; if fn fails, nothing it produced is
// kept. It implements pipeline.Atomic, which pipeline.PerRecord needs to
// retry or dead-letter a single record without leaving a failed attempt's
// output in the transaction.
func (w *Writer) Atomic(_ context.Context, fn func(*Writer) error) error {
	var held []*kgo.Record
	if err := fn(&Writer{t: w.t, b: w.b, held: &held}); err != nil {
		return err
	}
	for _, r := range held {
		w.Produce(r)
	}
	return nil
}

// DeadLetterTo returns a pipeline.DeadLetterFunc that writes a record that
// kept failing to topic, in the batch's transaction: src's key, value and
// headers, with headers naming the error, the source topic, partition and
// offset ([DeadLetterRecord]) and the attempts ([HeaderAttempts]).
func DeadLetterTo(topic string) func(ctx context.Context, w *Writer, r *kgo.Record, cause error, attempts int) error {
	return func(_ context.Context, w *Writer, r *kgo.Record, cause error, attempts int) error {
		dl := DeadLetterRecord(topic, r, cause)
		dl.Headers = append(dl.Headers, kgo.RecordHeader{Key: HeaderAttempts, Value: []byte(strconv.Itoa(attempts))})
		w.Produce(dl)
		return nil
	}
}
