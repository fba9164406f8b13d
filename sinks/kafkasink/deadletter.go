package kafkasink

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Header keys that DeadLetterRecord sets.
const (
	HeaderError           = "exactly.error"
	HeaderSourceTopic     = "exactly.source.topic"
	HeaderSourcePartition = "exactly.source.partition"
	HeaderSourceOffset    = "exactly.source.offset"
)

// DeadLetterRecord returns a record for the dead-letter topic: src's key,
// value and headers, plus headers that name the error and the source topic,
// partition and offset, so the record can be inspected and replayed.
func DeadLetterRecord(topic string, src *kgo.Record, reason error) *kgo.Record {
	msg := "unknown error"
	if reason != nil {
		msg = reason.Error()
	}
	hs := make([]kgo.RecordHeader, 0, len(src.Headers)+4)
	hs = append(hs, src.Headers...)
	hs = append(hs, kgo.RecordHeader{Key: HeaderError, Value: []byte(msg)})
	return &kgo.Record{Topic: topic, Key: src.Key, Value: src.Value, Headers: AppendSourceHeaders(hs, src)}
}

// AppendSourceHeaders appends to hs the headers that name src's topic,
// partition and offset — the lineage of an output record, which the
// verifier (exactly verify) and a replay tool read back.
func AppendSourceHeaders(hs []kgo.RecordHeader, src *kgo.Record) []kgo.RecordHeader {
	return append(hs,
		kgo.RecordHeader{Key: HeaderSourceTopic, Value: []byte(src.Topic)},
		kgo.RecordHeader{Key: HeaderSourcePartition, Value: []byte(strconv.FormatInt(int64(src.Partition), 10))},
		kgo.RecordHeader{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(src.Offset, 10))},
	)
}

// Header returns the value of the last header of r named key.
func Header(r *kgo.Record, key string) (string, bool) {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == key {
			return string(r.Headers[i].Value), true
		}
	}
	return "", false
}
