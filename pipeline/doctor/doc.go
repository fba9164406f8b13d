// Package doctor holds exactly's operator tools as library functions; the
// exactly command (cmd/exactly) is a thin shell around them.
//
//   - Check is the loss-risk check ("exactly doctor"): for every topic a
//     pipeline touches, and for Kafka's transaction state log and offsets
//     topic, it reads the replication factor, min.insync.replicas,
//     unclean leader election, retention and flush settings; for every
//     broker its support for KIP-447 and transactions v2 (KIP-890) and its
//     transaction, session and offset-retention limits; and the pipeline's
//     own transaction timeout against its session timeout. Each Finding
//     says which loss or duplicate scenario the current value opens and
//     the exact config that closes it.
//   - Lag ("exactly lag") reports, per partition, the committed offset,
//     the high watermark, the last stable offset and the lag, with the
//     committed offsets taken from any source (Kafka's group offsets, or
//     the rows of exactly's Postgres offsets table). A HangTracker, or
//     Watch, flags a partition whose last stable offset stays behind its
//     high watermark longer than a transaction may stay open: a hanging
//     transaction pins every read_committed consumer of that partition.
//   - Verify ("exactly verify") is the independent checker: it reads an
//     input topic and the output topics with read_committed consumers and
//     matches outputs to inputs by key, a header or a JSON field, and
//     reports duplicates, missing records and order violations per input
//     partition. Compare is its core, usable on any source (SQL rows too).
//
// # What "risk" means
//
// A Finding of Severity Risk is a setting under which one ordinary fault
// — one broker or disk lost, one pipeline stopped longer than planned, one
// paused instance — loses or duplicates records, or under which the
// pipeline cannot run at all. Exactly's guarantee (every input record's
// effect exactly once) is only as durable as the cluster that stores the
// commits: use replication factor 3, min.insync.replicas 2, no unclean
// leader election, and retention longer than any downtime.
//
// The package needs only Kafka: it does not import the Postgres driver, so
// a program that checks a Kafka-mode pipeline does not link it.
package doctor
