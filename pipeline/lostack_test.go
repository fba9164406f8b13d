package pipeline_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactlyonce/exactly/internal/testkit"
)

// TestDelayedEndTxnRecreatesProducer holds the first EndTxn (commit) at the
// broker until the client gave up on it, so its outcome is unknown to the
// pipeline. The session must discard its producer and open a new one (whose
// InitProducerID fences the old epoch), and only then is the delayed EndTxn
// let through — the "hanging transaction" of KAFKA-17754. The output must be
// exact: the late EndTxn must neither commit a second copy nor lose the
// batch.
func TestDelayedEndTxnRecreatesProducer(t *testing.T) {
	c, brokers := testkit.Cluster(t, 4, "in", "out")
	const n = 3000
	testkit.Produce(t, brokers, "in", n)

	wake := make(chan struct{})
	var held atomic.Bool
	c.ControlKey(kmsg.EndTxn.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if r := req.(*kmsg.EndTxnRequest); r.Commit && held.CompareAndSwap(false, true) {
			c.SleepControl(func() { <-wake })
		}
		return nil, nil, false // then let the cluster handle it as usual
	})

	p := newPipeline(t, brokers, copyStage("out"), "a")
	stop, _ := run(p)
	testkit.WaitFor(t, 30*time.Second, "the commit's outcome to be unknown", func() bool { return p.Stats().UnknownOutcomes > 0 })
	close(wake) // the delayed EndTxn of the old producer lands now
	testkit.WaitFor(t, 60*time.Second, "all records committed", func() bool { return lag(t, brokers, "in", "g") == 0 })
	require.NoError(t, stop())
	require.True(t, held.Load())
	testkit.Verify(t, brokers, "in", "out")
}
