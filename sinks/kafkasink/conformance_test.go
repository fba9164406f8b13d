package kafkasink_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/exactlyonce/exactly/internal/sinkharness"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
	"github.com/exactlyonce/exactly/sinks/sinktest"
)

// TestMain checks that no goroutine outlives the package's tests:
// sessions and clients all stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestKafkaConformance runs the sink conformance suite on the Kafka sink on
// kfake; the integration tests run it on Apache Kafka. The harness
// (internal/sinkharness) writes each effect as a copy of the input record
// with source headers and reads the visible ones with read_committed.
func TestKafkaConformance(t *testing.T) {
	sinktest.Run[*kafkasink.Writer](t, sinkharness.Kafka{})
}
