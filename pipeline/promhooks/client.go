package promhooks

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
)

// ClientHooks returns franz-go's own client metrics (plugin/kprom) for the
// clients of one pipeline, registered on the Metrics' Registerer with the
// labels group and instance_id, under the namespace "kgo". Pass the result
// with pipeline.ClientOpts(kgo.WithHooks(h)).
//
// A pipeline runs several clients, some at once (the preflight check's
// beside the consumer's; a new client after an unknown commit outcome),
// and every client calls a kprom.Metrics' OnNewClient, which registers its
// metrics anew — a second client alive at once makes the registration
// fail. ClientHooks instead creates kprom's metrics once, unregistered
// (kprom.Registry(nil)), and collects them itself: the counters of all the
// pipeline's clients add up and survive the re-creation of a client.
//
// opts are kprom's options (histograms, labels, Subsystem); Registry,
// Registerer and GoCollectors are overridden.
func (m *Metrics) ClientHooks(group, instanceID string, opts ...kprom.Opt) (kgo.Hook, error) {
	h := &clientHook{k: kprom.NewMetrics("kgo", append(opts, kprom.Registry(nil))...)}
	reg := prometheus.WrapRegistererWith(prometheus.Labels{LabelGroup: group, LabelInstance: instanceID}, m.reg)
	if err := reg.Register(h); err != nil {
		return nil, err
	}
	return h, nil
}

// clientHook forwards kgo's hooks to one kprom.Metrics, initialised by the
// first client.
type clientHook struct {
	k     *kprom.Metrics
	once  sync.Once
	ready atomic.Bool
}

var (
	_ kgo.HookBrokerConnect       = (*clientHook)(nil)
	_ kgo.HookBrokerDisconnect    = (*clientHook)(nil)
	_ kgo.HookBrokerWrite         = (*clientHook)(nil)
	_ kgo.HookBrokerRead          = (*clientHook)(nil)
	_ kgo.HookProduceBatchWritten = (*clientHook)(nil)
	_ kgo.HookFetchBatchRead      = (*clientHook)(nil)
	_ kgo.HookBrokerE2E           = (*clientHook)(nil)
	_ kgo.HookBrokerThrottle      = (*clientHook)(nil)
	_ kgo.HookNewClient           = (*clientHook)(nil)
)

// OnNewClient creates kprom's metrics on the first client only.
func (h *clientHook) OnNewClient(cl *kgo.Client) {
	h.once.Do(func() {
		h.k.OnNewClient(cl)
		h.ready.Store(true)
	})
}

func (h *clientHook) OnBrokerConnect(meta kgo.BrokerMetadata, d time.Duration, c net.Conn, err error) {
	h.k.OnBrokerConnect(meta, d, c, err)
}

func (h *clientHook) OnBrokerDisconnect(meta kgo.BrokerMetadata, c net.Conn) {
	h.k.OnBrokerDisconnect(meta, c)
}

func (h *clientHook) OnBrokerWrite(meta kgo.BrokerMetadata, key int16, n int, wait, write time.Duration, err error) {
	h.k.OnBrokerWrite(meta, key, n, wait, write, err)
}

func (h *clientHook) OnBrokerRead(meta kgo.BrokerMetadata, key int16, n int, wait, read time.Duration, err error) {
	h.k.OnBrokerRead(meta, key, n, wait, read, err)
}

func (h *clientHook) OnProduceBatchWritten(meta kgo.BrokerMetadata, topic string, p int32, bm kgo.ProduceBatchMetrics) {
	h.k.OnProduceBatchWritten(meta, topic, p, bm)
}

func (h *clientHook) OnFetchBatchRead(meta kgo.BrokerMetadata, topic string, p int32, bm kgo.FetchBatchMetrics) {
	h.k.OnFetchBatchRead(meta, topic, p, bm)
}

func (h *clientHook) OnBrokerE2E(meta kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	h.k.OnBrokerE2E(meta, key, e2e)
}

func (h *clientHook) OnBrokerThrottle(meta kgo.BrokerMetadata, d time.Duration, after bool) {
	h.k.OnBrokerThrottle(meta, d, after)
}

// Describe implements prometheus.Collector: nothing, as kprom's metrics
// exist only after the first client (an unchecked collector).
func (h *clientHook) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (h *clientHook) Collect(ch chan<- prometheus.Metric) {
	if h.ready.Load() {
		h.k.Collect(ch)
	}
}
