package pgsink_test

import (
	"testing"

	"github.com/exactlyonce/exactly/internal/eostest"
	"github.com/exactlyonce/exactly/internal/pgtest"
)

// TestPostgresCrashWorker is not a test: it is the worker process that
// TestPostgresCrashRestart starts and SIGKILLs.
func TestPostgresCrashWorker(t *testing.T) { pgtest.CrashWorker(t) }

// TestPostgresCrashRestart SIGKILLs a Postgres-mode worker process inside
// its Stage (rows written, transaction open) and right after a COMMIT, four
// times, restarting it each time; the rows must always be exactly the
// committed prefix and, at the end, every input record once (SQL
// verifier). See pgtest.CrashRestart; the integration tests run it on
// Apache Kafka.
func TestPostgresCrashRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	pgPool(t) // skips, or fails under EXACTLY_REQUIRE_SERVICES=1, without a database
	pgtest.CrashRestart(t, eostest.Kfake(t), pgURL(), "TestPostgresCrashWorker")
}
