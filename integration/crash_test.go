package integration

import (
	"testing"

	"github.com/exactlyonce/exactly/internal/eostest"
)

// TestCrashWorker is not a test: it is the worker process that
// TestCrashRestart starts and SIGKILLs.
func TestCrashWorker(t *testing.T) { eostest.CrashWorker(t) }

// TestCrashRestart: a worker SIGKILLed between TxnOffsetCommit and EndTxn,
// three times, restarts and commits well within the transaction timeout,
// on Apache Kafka; see eostest.CrashRestart.
func TestCrashRestart(t *testing.T) {
	eostest.CrashRestart(t, kafkaEnv(t), "TestCrashWorker")
}
