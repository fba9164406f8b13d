// Package promhooks exports a pipeline's metrics to Prometheus
// (client_golang): one Metrics registered on a Registerer of your choice,
// and a Hook per pipeline, passed with pipeline.Hooks. The pipeline package
// itself imports no metrics library; this package is the adapter, as
// franz-go's plugin/kprom is for kgo.
//
//	m, err := promhooks.New(reg, promhooks.Lag(adm, promhooks.LagOptions{}))
//	p, err := pipeline.New(sink, stage, ...,
//		pipeline.Hooks(m.Hook(group, instanceID)))
//
// Every series carries the labels group and instance_id (not "instance",
// which Prometheus sets to the scrape target). The metrics, with the
// default namespace "exactly":
//
//	exactly_records_polled_total            counter    records collected into batches
//	exactly_records_committed_total         counter    input records committed
//	exactly_records_produced_total          counter    records the Stage produced (Kafka mode)
//	exactly_records_aborted_total{reason}   counter    input records of aborted transactions
//	exactly_batches_committed_total         counter    transactions committed
//	exactly_batches_aborted_total{reason}   counter    transactions aborted, by pipeline.AbortReason
//	exactly_stage_errors_total              counter    aborts with reason stage_error
//	exactly_commit_duration_seconds         histogram  the commit alone
//	exactly_stage_duration_seconds          histogram  the Stage calls of a transaction
//	exactly_batch_duration_seconds          histogram  first poll to end of commit
//	exactly_poll_duration_seconds           histogram  first poll to batch complete
//	exactly_batch_records                   histogram  input records per committed transaction
//	exactly_batch_bytes                     histogram  input bytes per committed transaction
//	exactly_last_commit_timestamp_seconds   gauge      unix time of the last commit
//	exactly_state{state}                    gauge      1 for the current pipeline.State
//	exactly_state_since_timestamp_seconds   gauge      unix time the state was entered
//
// With Lag, per partition (labels group, topic, partition), computed on a
// scrape with pipeline/doctor's Lag and bounded by a timeout:
//
//	exactly_partition_lag                   gauge      high watermark minus committed offset
//	exactly_partition_open_records          gauge      high watermark minus last stable offset
//	exactly_partition_committed_offset      gauge      the committed offset used
//	exactly_lag_sample_errors_total         counter    samples that failed or timed out
//
// The committed offsets come from the commits themselves (CommitInfo.Offsets):
// no offset fetch, and the same in Kafka and Postgres mode.
//
// ClientHooks adds franz-go's own client metrics (plugin/kprom, namespace
// "kgo") for a pipeline's clients to the same registry; docs/METRICS.md
// says why kprom.NewMetrics cannot be passed to a pipeline directly.
//
// The hooks run on the pipeline's goroutine and only update in-memory
// series; the lag's network calls run on the scrape's goroutine.
package promhooks
