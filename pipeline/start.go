package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/backoff"
	"github.com/exactlyonce/exactly/internal/kmeta"
	"github.com/exactlyonce/exactly/sinks"
)

// MissingTopicPolicy is what Run does when an input topic does not exist
// when it starts (see [MissingInputTopics]).
type MissingTopicPolicy int

const (
	// MissingTopicsFail makes Run return a [*sinks.MissingError] naming the
	// first missing input topic, 2s or a little more after starting: when
	// no broker has known it for that long (a topic created a moment ago
	// can be missing from some brokers' metadata for a while). The
	// default: a typo in Topics otherwise consumes nothing, silently,
	// forever.
	MissingTopicsFail MissingTopicPolicy = iota
	// MissingTopicsWarn logs each missing input topic at WARN and runs on;
	// the pipeline consumes a topic once it is created (within the client's
	// metadata refresh interval, 5 minutes by default in franz-go). For
	// pipelines started before their input exists.
	MissingTopicsWarn
)

// MissingInputTopics sets what Run does when an input topic does not exist
// at start. Default [MissingTopicsFail], like Kafka Streams'
// MissingSourceTopicException. Output topics are not checked at start (the
// Stage names them per record); a record produced to a topic that does not
// exist stops Run with a [*sinks.MissingError] at its first transaction.
func MissingInputTopics(p MissingTopicPolicy) Opt {
	return opt(func(c *config) { c.missingTopics = p })
}

// A topic created just before the start can be missing from the metadata
// for a moment: the controller has committed it, but a broker has not
// applied it yet (in CI, brokers of a 3-node cluster answered that a new
// topic did not exist for at least 0.4 s). Run believes an input topic does
// not exist only when no broker knows it, in missingTopicChecks more checks
// over at least missingTopicGrace (kgo's UnknownTopicRetries makes a similar
// allowance for output topics).
const (
	missingTopicChecks = 3
	missingTopicGrace  = 2 * time.Second
)

// dialWatch is a kgo.HookBrokerConnect that remembers the last failed
// connection attempt: kgo retries dials itself and a request that runs out
// of time reports only "context deadline exceeded", so without it the cause
// (connection refused, no such host, a TLS handshake failure) is lost.
type dialWatch struct {
	mu   sync.Mutex
	addr string
	err  error
}

// OnBrokerConnect implements kgo.HookBrokerConnect.
func (d *dialWatch) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		d.addr, d.err = "", nil
		return
	}
	d.addr, d.err = net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))), err
}

// last returns the last failed dial since the last successful one.
func (d *dialWatch) last() (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.addr, d.err
}

// openFirst checks the cluster and the input topics and opens the first
// session, retrying transient failures until StartTimeout. Everything it
// does, the waits between attempts included, ends by the deadline.
func (p *Pipeline[W]) openFirst(ctx context.Context, dw *dialWatch) (sinks.Session[W], error) {
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, p.cfg.startTimeout)
	defer cancel()
	bo := backoff.New(p.cfg.backoffMin, p.cfg.backoffMax)
	cfg := p.sessionConfig(dw)
	// Only a sink whose sessions consume from Kafka has brokers to check.
	kc, ok := any(p.sink).(sinks.KafkaConsumer)
	checked := !ok || !kc.ConsumesFromKafka()
	missing := 0 // checks in a row without an input topic
	var missingSince time.Time
	var lastErr error
	for attempt := 1; ; attempt++ {
		err := error(nil)
		if !checked {
			err = p.checkInputs(dctx, cfg.ClientOpts)
			checked = err == nil
			if checked && missing > 0 {
				bo.Reset() // the wait for a topic does not lengthen later retries
			}
		}
		var sess sinks.Session[W]
		if err == nil {
			sess, err = p.sink.Open(dctx, cfg)
		}
		if err == nil {
			return sess, nil
		}
		if sinks.IsFatal(err) {
			return nil, err // even at shutdown: the embedding program must see it
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// A topic created just before the start may be missing from
		// every broker's metadata for a moment: believe "does not
		// exist" only when several checks in a row, over
		// missingTopicGrace, say so. (When StartTimeout ends first,
		// every answer until then said so: the MissingError stands.)
		var me *sinks.MissingError
		isMissing := errors.As(err, &me) && me.Kind == "input topic"
		if !isMissing {
			missing = 0
		}
		if isMissing && dctx.Err() == nil {
			if missing == 0 {
				missingSince = time.Now()
			}
			if missing < missingTopicChecks || time.Since(missingSince) < missingTopicGrace {
				missing++
				p.log.Debug("starting: input topic not in the metadata; asking again", "topic", me.Name, "check", missing)
				// The verdict comes from an answer taken as the grace
				// ends, not a backoff step after it.
				d := bo.Next()
				if rest := time.Until(missingSince.Add(missingTopicGrace)); rest > 0 && rest < d {
					d = rest
				}
				if backoff.Sleep(dctx, d) {
					continue
				}
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
			}
		}
		if sinks.IsPermanent(err) {
			return nil, err
		}
		// An attempt cut short by the deadline says only that; the one
		// before it usually says why.
		if lastErr == nil || !errors.Is(err, context.DeadlineExceeded) {
			lastErr = err
		}
		if dctx.Err() == nil {
			p.log.Warn("starting: could not open the session; retrying", "err", err, "attempt", attempt,
				"since", time.Since(start).Round(time.Millisecond), "start_timeout", p.cfg.startTimeout)
			if bo.Wait(dctx) {
				continue
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
		se := &StartError{Timeout: p.cfg.startTimeout, Brokers: p.cfg.brokers, Err: lastErr}
		se.Addr, se.Cause = dw.last()
		return nil, se
	}
}

// checkInputs checks, before anything joins the group, that the brokers
// answer and that the input topics exist (for a [sinks.KafkaConsumer]). A
// topic that is missing is a *sinks.MissingError under MissingTopicsFail, a
// WARN line otherwise. A topic missing from the first answer counts as
// missing only if no other broker knows it either: one broker's metadata can
// lag the controller's.
func (p *Pipeline[W]) checkInputs(ctx context.Context, clientOpts []kgo.Opt) error {
	cl, err := kgo.NewClient(clientOpts...)
	if err != nil {
		return fmt.Errorf("pipeline: creating the client: %w", err)
	}
	defer cl.Close()
	md, err := kadm.NewClient(cl).Metadata(ctx, p.cfg.topics...)
	if err != nil {
		return fmt.Errorf("pipeline: asking the brokers for the metadata of %v: %w", p.cfg.topics, err)
	}
	unknown := kmeta.Missing(md, p.cfg.topics)
	var known map[string]kmeta.Known
	if len(unknown) > 0 && len(md.Brokers) > 1 {
		known = kmeta.KnownBy(ctx, cl, md.Brokers, unknown)
	}
	for _, t := range p.cfg.topics {
		td, ok := md.Topics[t]
		switch {
		case !ok || kmeta.IsUnknownTopic(td.Err):
			if k, ok := known[t]; ok {
				p.log.Debug("starting: input topic missing from one broker's metadata, which lags; another broker knows it",
					"topic", t, "known_by_broker", k.Node)
				continue
			}
			cause := td.Err
			if cause == nil {
				cause = kerr.UnknownTopicOrPartition
			}
			if p.cfg.missingTopics == MissingTopicsWarn {
				p.log.Warn("input topic does not exist; it is consumed once it is created (exactly never creates topics)",
					"topic", t, "known_topics", len(md.Topics))
				continue
			}
			return fmt.Errorf("pipeline: %w", &sinks.MissingError{Kind: "input topic", Name: t, Err: cause,
				Fix: "create it (exactly never creates topics) or fix pipeline.Topics; pipeline.MissingInputTopics(pipeline.MissingTopicsWarn) waits for it instead"})
		case td.Err != nil:
			if sinks.IsFatal(td.Err) {
				return fmt.Errorf("pipeline: input topic %q: %w", t, td.Err)
			}
			return fmt.Errorf("pipeline: metadata of input topic %q: %w", t, td.Err)
		}
	}
	return nil
}

// startLine is the INFO line Run logs when it starts.
func (p *Pipeline[W]) logStart() {
	brokers := p.cfg.brokers
	if len(brokers) == 0 {
		brokers = []string{"(from ClientOpts)"}
	}
	p.log.Info("pipeline starting", "brokers", slices.Clone(brokers), "topics", p.cfg.topics,
		"sink", fmt.Sprintf("%T", p.sink), "start_timeout", p.cfg.startTimeout)
}

// logStop is the INFO line Run logs when it returns.
func (p *Pipeline[W]) logStop(ctx context.Context, err error) {
	st := p.Stats()
	attrs := []any{"committed_records", st.CommittedRecords, "committed_txns", st.CommittedTxns, "aborted_txns", st.AbortedTxns}
	switch {
	case err != nil:
		p.log.Error("pipeline stopped", append(attrs, "reason", "error", "err", err)...)
	case ctx.Err() != nil:
		p.log.Info("pipeline stopped", append(attrs, "reason", "context done", "err", context.Cause(ctx))...)
	default:
		p.log.Info("pipeline stopped", attrs...)
	}
}
