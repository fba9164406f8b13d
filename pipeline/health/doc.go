// Package health serves a pipeline's liveness and readiness probes over
// HTTP, from its state (pipeline.Pipeline.State, or a Tracker hook):
//
//   - /healthz (liveness) answers 200 unless a pipeline stopped with an
//     error — Run returned one, say fenced by a newer instance — and then
//     503: restart it. Retrying is alive: the pipeline recovers on its own.
//   - /readyz (readiness) answers 200 while every pipeline is ready
//     (pipeline.StateInfo.Ready: running, or through a rebalance) and 503
//     while one is starting, retrying, idle or stopped.
//
// Both answer with the same JSON body:
//
//	{"ok": false, "pipelines": [{"name": "worker-0", "ok": false, "state": "retrying",
//	  "ready": false, "cause": "...", "since": "2026-12-01T10:00:00Z"}]}
package health
