package integration

import (
	"testing"

	"github.com/exactlyonce/exactly/internal/eostest"
)

// kafkaEnv is the single broker as an eostest environment: fresh topics per
// scenario, the broker's default replication factor, sessions of 6s (the
// broker's group.min.session.timeout.ms).
func kafkaEnv(t *testing.T) eostest.Env {
	t.Helper()
	brokers := Brokers(t)
	version := BrokerVersion(t, brokers)
	t.Logf("Apache Kafka %s at %v", version, brokers)
	return eostest.Env{
		Name:              "Apache Kafka " + version,
		Brokers:           brokers,
		ReplicationFactor: -1,
		Records:           10_000,
		Timeouts:          eostest.KafkaTimeouts,
	}
}

// TestExactlyOnceScenarios runs the exactly-once scenarios (internal/eostest)
// on the real single broker, one after another.
func TestExactlyOnceScenarios(t *testing.T) {
	eostest.Run(t, kafkaEnv)
}
