package txn

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactlyonce/exactly/sinks"
)

// Fence initializes the producer id of transactionalID with a short-lived
// client and closes it. The broker bumps the epoch and aborts any transaction
// the previous holder of the id left open, so the group's stable offset
// fetch answers at once instead of after the transaction timeout.
//
// While the coordinator is unreachable, moving or busy completing the
// previous transaction (CONCURRENT_TRANSACTIONS, seconds after a broker
// failure), Fence retries until ctx ends, about FenceRetryBackoff apart
// whatever clientOpts say, and one request at a time: a request given up
// while in flight could reach the coordinator after the next producer's own
// InitProducerID and fence it. If ctx ends first, the error names the
// coordinator's last answer.
func Fence(ctx context.Context, clientOpts []kgo.Opt, transactionalID string) error {
	opts := append(DefaultClientOpts(), clientOpts...)
	opts = append(opts, kgo.RetryBackoffFn(fenceBackoff), kgo.RequestRetries(fenceRequestRetries),
		kgo.TransactionalID(transactionalID))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("txn: creating the fencing client: %w", err)
	}
	defer func() { cl.Close() }()
	timeout, _ := cl.OptValue(kgo.TransactionTimeout).(time.Duration)
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID = &transactionalID
	req.TransactionTimeoutMillis = int32(timeout.Milliseconds())
	req.ProducerID, req.ProducerEpoch = -1, -1
	var last error
	for fails := 1; ; fails++ {
		resp, err := req.RequestWith(ctx, cl)
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
		}
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		if !fenceRetriable(err) {
			if sinks.IsFatal(err) {
				return classifyFatal("fencing the previous incarnation", transactionalID, err)
			}
			return fmt.Errorf("txn: fencing the previous incarnation of transactional id %q: %w", transactionalID, err)
		}
		last = err
		var ke *kerr.Error
		if !errors.As(err, &ke) {
			// The connection failed. franz-go looks the coordinator up
			// again after a refused dial or a NOT_COORDINATOR, but not
			// when a connection is accepted and then closed (a dead
			// broker behind a proxy or load balancer): a fresh client
			// asks who the coordinator is now.
			cl.Close()
			if cl, err = kgo.NewClient(opts...); err != nil {
				return fmt.Errorf("txn: creating the fencing client: %w", err)
			}
		}
		t := time.NewTimer(fenceBackoff(fails))
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	if last == nil {
		return fmt.Errorf("txn: fencing the previous incarnation of transactional id %q: %w", transactionalID, ctx.Err())
	}
	return fmt.Errorf("txn: fencing the previous incarnation of transactional id %q: %w (the coordinator's last answer: %w)", transactionalID, ctx.Err(), last)
}

// fenceRequestRetries is how often franz-go retries one request of the
// fence itself before Fence sees the error and decides (a fresh client after
// a failed connection).
const fenceRequestRetries = 3

// fenceRetriable reports whether Fence tries again after err: the
// coordinator is completing the previous transaction, moving or loading (a
// retriable Kafka error), or could not be reached.
func fenceRetriable(err error) bool {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Retriable || errors.Is(err, kerr.ConcurrentTransactions)
	}
	return !errors.Is(err, kgo.ErrClientClosed)
}

// FenceRetryBackoff is about the longest pause between two tries of the
// fence (dialing a dead coordinator, a coordinator still loading or
// completing the previous transaction); ±20% jitter.
//
// The fence used to be the client's InitProducerID, whose retries franz-go
// spaces at least 500 ms apart once the call is 2.5 s old and 1 s apart at
// 5 s, with dial retries at MaxRetryBackoff (1 s): a fence begun while the
// coordinator's broker was down found the new coordinator up to two seconds
// after it was ready. The fence is one small request; retrying it this
// often costs the coordinator nothing it would notice.
const FenceRetryBackoff = 250 * time.Millisecond

// fenceBackoff is the fence client's backoff: 20 ms for the first five
// tries (a restarted instance's fence is answered CONCURRENT_TRANSACTIONS
// while the coordinator aborts its predecessor's transaction, which takes
// tens of milliseconds; franz-go retries as fast), then doubling to
// FenceRetryBackoff; ±20% jitter.
func fenceBackoff(fails int) time.Duration {
	d := FenceRetryBackoff
	switch {
	case fails <= 5:
		d = 20 * time.Millisecond
	case fails <= 8:
		d = 20 * time.Millisecond << (fails - 5)
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// overlapAfter is how long a re-opening session waits for its fence before
// it creates its new client anyway, so that the group join (JoinGroup,
// SyncGroup, the offset fetch) overlaps the rest of the fence instead of
// following it.
//
// A fence answers in milliseconds unless the transaction coordinator is
// busy: after a broker failure it first completes the transaction of the
// previous epoch, whose markers (acks=all) wait until the controller has
// fenced the dead broker — seconds. Joining after the fence added the
// join's seconds (three static members rejoining at once) to that wait.
// A fast fence still comes first: a join that overtakes it finds the
// offsets of the aborted transaction pending, and franz-go retries such an
// offset fetch only after a fixed second.
//
// The new client's own producer is initialized only at Begin, which waits
// for the fence: an InitProducerID of the new producer before the fence's
// would be fenced by it.
const overlapAfter = 300 * time.Millisecond

// fencing is a fence running in its own goroutine.
type fencing struct {
	done   chan struct{} // closed once err is set
	err    error
	failed context.Context // canceled when the fence failed
	stop   context.CancelFunc
}

// startFence starts fencing s's transactional id. The fence does not end
// with ctx (a re-open may be asked for with a context that ends sooner than
// the coordinator answers); f.stop, which discard and Close call, ends it.
func (s *Session) startFence(ctx context.Context) *fencing {
	fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	failed, fail := context.WithCancel(context.Background())
	f := &fencing{done: make(chan struct{}), failed: failed}
	f.stop = func() { stop(); <-f.done; fail() }
	go func() {
		err := Fence(fctx, s.cfg.ClientOpts, s.cfg.TransactionalID)
		f.err = err
		close(f.done) // before fail: whoever wakes on failed finds done closed
		if err != nil {
			fail()
		}
	}()
	return f
}

// fenceResult settles s.fencing once it is done: on failure the session's
// client is discarded (nothing polled by it is processed, so the next one
// resumes from the committed offsets) and the fence's error returned. With
// wait it waits for the fence while ctx allows.
func (s *Session) fenceResult(ctx context.Context, wait bool) error {
	f := s.fencing
	if f == nil {
		return nil
	}
	if wait {
		select {
		case <-f.done:
		case <-ctx.Done():
			return fmt.Errorf("txn: waiting for the fence of transactional id %q: %w", s.cfg.TransactionalID, ctx.Err())
		}
	}
	select {
	case <-f.done:
	default:
		return nil
	}
	s.fencing = nil
	f.stop()
	if f.err != nil {
		s.discard()
		return f.err
	}
	return nil
}
