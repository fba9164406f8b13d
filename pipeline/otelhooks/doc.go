// Package otelhooks exports a pipeline's metrics and traces through
// OpenTelemetry: the metrics on a metric.MeterProvider, and, with a
// trace.TracerProvider, a span per transaction. One Telemetry serves any
// number of pipelines; pass each its own Hook with pipeline.Hooks. The
// pipeline package imports no OpenTelemetry package; this is the adapter,
// as franz-go's plugin/kotel is for kgo.
//
//	tel, err := otelhooks.New(otelhooks.MeterProvider(mp), otelhooks.TracerProvider(tp))
//	p, err := pipeline.New(sink, stage, ..., pipeline.Hooks(tel.Hook(group, instanceID)))
//
// # Metrics
//
// The same metrics as pipeline/promhooks, named the OpenTelemetry way
// (exactly.records.committed, exactly.batches.aborted,
// exactly.commit.duration in seconds, ...; docs/METRICS.md lists them all),
// with the attributes messaging.consumer.group.name and exactly.instance_id,
// exactly.abort.reason on the abort counters and exactly.state on the state
// gauge. With Lag, exactly.partition.lag and its companions per partition
// (messaging.destination.name, messaging.destination.partition.id),
// sampled when the reader collects, bounded in time.
//
// # Traces
//
// Each transaction is a root span "exactly.batch" (kind consumer) from the
// batch's first poll to the end of its commit or abort, with the
// attributes exactly.records, exactly.partitions, exactly.bytes,
// exactly.outputs and exactly.outcome ("committed" or "aborted", then with
// exactly.abort.reason and an error status). Its children are
// reconstructed after the fact with explicit timestamps from the hook's
// timings: "exactly.poll" (first poll to batch complete), "exactly.stage"
// (the Stage calls, ending where the commit starts) and "exactly.commit".
// An aborted batch has only the poll child: the hook does not say how far
// it got.
//
// The hooks run on the pipeline's goroutine and only record measurements
// and end spans; the lag's network calls run in the reader's collection.
package otelhooks
