package pipeline_test

import (
	"testing"

	"github.com/exactlyonce/exactly/internal/eostest"
)

// TestCrashWorker is not a test: it is the worker process that
// TestRestartAfterKillBetweenOffsetCommitAndEndTxn starts and SIGKILLs.
func TestCrashWorker(t *testing.T) { eostest.CrashWorker(t) }

// TestRestartAfterKillBetweenOffsetCommitAndEndTxn kills a worker process
// right after its TxnOffsetCommit, before EndTxn, three times, and restarts
// it each time with the same instance id. The restarted worker must commit
// its first batch before the orphaned transaction or the dead member could
// time out (minutes), so a restart that waited for either fails; the output
// must be exact and no transaction left open. See eostest.CrashRestart.
func TestRestartAfterKillBetweenOffsetCommitAndEndTxn(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	eostest.CrashRestart(t, eostest.Kfake(t), "TestCrashWorker")
}
