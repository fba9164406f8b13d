package integration

import (
	"testing"
	"time"

	"github.com/exactlyonce/exactly/internal/pgtest"
	"github.com/exactlyonce/exactly/internal/sinkharness"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
	"github.com/exactlyonce/exactly/sinks/pgsink"
	"github.com/exactlyonce/exactly/sinks/sinktest"
)

// The sessions' timeouts on the single broker: its
// group.min.session.timeout.ms is 6s; the transaction timeout stays below.
const (
	conformanceSession     = 6 * time.Second
	conformanceTransaction = 5 * time.Second
)

// TestKafkaSinkConformance runs the sink conformance suite (sinks/sinktest)
// on the Kafka sink against the single Apache Kafka broker. A paused member's
// network is frozen (testkit.Freezer) instead of kfake's faked heartbeats.
func TestKafkaSinkConformance(t *testing.T) {
	brokers := Brokers(t)
	t.Logf("Apache Kafka %s at %v", BrokerVersion(t, brokers), brokers)
	sinktest.RunOn[*kafkasink.Writer](t, sinkharness.Kafka{}, sinktest.KafkaEnv(brokers, conformanceSession, conformanceTransaction))
}

// TestPostgresSinkConformance runs the sink conformance suite on the Postgres
// sink (default options) with its input on the single Apache Kafka broker.
func TestPostgresSinkConformance(t *testing.T) {
	url := PGURL(t)
	brokers := Brokers(t)
	t.Logf("Apache Kafka %s at %v", BrokerVersion(t, brokers), brokers)
	h := sinkharness.Postgres{Pool: pgtest.Pool(t, url)}
	sinktest.RunOn[*pgsink.Writer](t, h, sinktest.KafkaEnv(brokers, conformanceSession, conformanceTransaction))
}
