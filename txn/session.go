package txn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactlyonce/exactly/sinks"
)

// Config configures a [Session].
type Config struct {
	// ClientOpts are connection options (seed brokers, TLS, SASL, client
	// id, hooks). They are also used, without ConsumerOpts, for the short
	// lived client that fences a previous incarnation at Open. The
	// session sets kgo.WithContext on its own client (see CloseClient), so
	// one given here does not reach it.
	ClientOpts []kgo.Opt
	// ConsumerOpts make the session's client a group consumer: the group,
	// the topics, read_committed isolation.
	ConsumerOpts []kgo.Opt
	// TransactionalID is this instance's transactional id. It must be
	// stable across restarts of the same instance and unique among the
	// instances running at once: a restarted instance fences its crashed
	// predecessor through it.
	TransactionalID string
	// LeaveOnClose makes Close leave the consumer group explicitly. Set it
	// for static members (kgo.InstanceID), which do not leave on their
	// own. A session that was fenced never leaves: its replacement holds
	// the same instance id.
	LeaveOnClose bool
	// Logger receives the session's log lines; nil discards them.
	Logger *slog.Logger
}

// Session is a Kafka transactional consume-process-produce session: one
// kgo.GroupTransactSession whose producer writes the output records and whose
// consumer's offsets join the same transaction (KIP-447: the group's
// generation and member id travel with the offsets, so a zombie member is
// fenced by the group coordinator as well as by its producer epoch).
//
// Session adds two things to kgo's session:
//
//   - Open fences the previous incarnation of the same transactional id before
//     the consumer joins the group. An instance killed between its
//     TxnOffsetCommit and its EndTxn leaves a transaction open; until the
//     broker times it out, the group's offset fetch answers
//     UNSTABLE_OFFSET_COMMIT and the restarted instance stalls for the whole
//     transaction timeout. InitProducerID for the same transactional id
//     aborts that transaction at once.
//   - After any End whose outcome the client could not confirm, the session
//     throws its client away and opens a new one (fencing again) instead of
//     reusing a producer that may have a delayed request in flight
//     (KAFKA-17754, KIP-890). End then returns an error wrapping
//     [sinks.ErrOutcomeUnknown]. The new client fences too; when that fence
//     waits for a busy coordinator (after a broker failure), the new client
//     joins the group meanwhile and begins its first transaction only after
//     the fence returned.
//
// A Session is not safe for concurrent use, except that Produce may be called
// from many goroutines between Begin and End.
type Session struct {
	cfg Config
	log *slog.Logger
	gts *kgo.GroupTransactSession
	// cancelClient cancels the context of gts's client (kgo.WithContext);
	// see CloseClient.
	cancelClient context.CancelFunc
	inTxn        bool
	closed       bool
	fenced       bool
	begun        time.Time // when the open transaction began
	// fencing is the fence of a re-opened session that was still in flight
	// when its client was created (see overlapAfter); nil once it
	// succeeded. Begin and Committed wait for it, Poll reports its failure.
	fencing *fencing
	// gen counts the clients the session created; polledGen is the gen of
	// the client that returned the first records since the last Begin (0:
	// none). A batch whose records came from a client that was discarded
	// before Begin (its fence failed) must not be committed by the next
	// client: its offsets would not move, and the records would be
	// processed again.
	gen, polledGen int
}

// MetadataMinAge is the shortest time between two metadata refreshes of
// the session's clients unless ClientOpts sets kgo.MetadataMinAge itself.
//
// franz-go retries a produce that failed with a retriable error only after
// a metadata refresh, and refreshes at most once per MetadataMinAge, 5 s by
// default. On Apache Kafka 4 (transaction protocol v2) the first produce of
// a transaction that begins right after the previous one committed is often
// answered CONCURRENT_TRANSACTIONS while the coordinator still writes the
// previous transaction's markers; with the default, that transaction then
// waits up to 5 s (longer than a short transaction timeout, which turns it
// into an unknown outcome), and after a broker failure every produce and
// fetch that meets the old leader waits as long for the new one. The Java
// client retries after retry.backoff.ms (100 ms). A metadata request is
// small, and is only made this often while something fails.
const MetadataMinAge = 250 * time.Millisecond

// MaxRetryBackoff caps the backoff between retries of a failed request
// (franz-go: 250 ms doubling to 5 s). While a killed broker is not yet
// fenced by the controller, every request to it fails and the backoff
// grows; with franz-go's cap the first retry after the failover came up to
// 4–5 s late. Java's producer and consumer cap it at 1 s
// (retry.backoff.max.ms, KIP-580); so does this.
const MaxRetryBackoff = time.Second

// DefaultClientOpts are the options every client of a session (and of the
// pipeline) starts with; options given after them override them.
func DefaultClientOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.MetadataMinAge(MetadataMinAge),
		kgo.RetryBackoffFn(RetryBackoff),
	}
}

// RetryBackoff is the backoff of DefaultClientOpts: 100 ms doubling with
// each failure up to MaxRetryBackoff, with ±20% jitter (Java's
// retry.backoff.ms and retry.backoff.max.ms).
func RetryBackoff(fails int) time.Duration {
	d := MaxRetryBackoff
	if fails <= 1 {
		d = 100 * time.Millisecond
	} else if fails < 5 {
		d = min(MaxRetryBackoff, 100*time.Millisecond<<(fails-1))
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// withDefaults puts DefaultClientOpts before opts, which override them.
func withDefaults(opts []kgo.Opt) []kgo.Opt {
	return append(DefaultClientOpts(), opts...)
}

// Open fences the previous incarnation of cfg.TransactionalID and starts a
// new group transact session.
func Open(ctx context.Context, cfg Config) (*Session, error) {
	if cfg.TransactionalID == "" {
		return nil, errors.New("txn: Config.TransactionalID is empty: each instance needs a stable, unique transactional id")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Session{cfg: cfg, log: log}
	if err := s.open(ctx, false); err != nil {
		return nil, err
	}
	return s, nil
}

// open fences the transactional id and creates the session's client. The
// first open (overlap false) waits for the fence, so Open reports a broker
// or authorization problem itself. A re-open (overlap true) creates the
// client once the fence has taken overlapAfter, leaving the fence running.
func (s *Session) open(ctx context.Context, overlap bool) error {
	start := time.Now()
	f := s.startFence(ctx)
	var after <-chan time.Time
	if overlap {
		t := time.NewTimer(overlapAfter)
		defer t.Stop()
		after = t.C
	}
	select {
	case <-f.done:
	case <-after:
	case <-ctx.Done():
		f.stop()
		if f.err != nil && !errors.Is(f.err, context.Canceled) {
			return f.err
		}
		return fmt.Errorf("txn: fencing the previous incarnation of transactional id %q: %w", s.cfg.TransactionalID, ctx.Err())
	}
	select {
	case <-f.done:
		f.stop()
		if f.err != nil {
			return f.err
		}
		f = nil
	default:
	}
	fenced := time.Since(start)
	opts := withDefaults(s.cfg.ClientOpts)
	opts = append(opts, s.cfg.ConsumerOpts...)
	cctx, cancel := context.WithCancel(context.Background())
	opts = append(opts, kgo.TransactionalID(s.cfg.TransactionalID), kgo.WithContext(cctx))
	gts, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		cancel()
		if f != nil {
			f.stop()
		}
		return fmt.Errorf("txn: creating the transactional client: %w", err)
	}
	s.gts, s.cancelClient = gts, cancel
	s.gen++
	s.fencing = f
	if f != nil {
		s.log.Debug("transactional session open; the fence is still waiting for the coordinator, the group join goes on meanwhile",
			"transactional_id", s.cfg.TransactionalID, "waited", fenced)
	} else {
		s.log.Debug("transactional session open", "transactional_id", s.cfg.TransactionalID, "fence", fenced)
	}
	return nil
}

// ensure re-opens the session after a re-creation failed to connect.
func (s *Session) ensure(ctx context.Context) error {
	if s.closed {
		return errors.New("txn: session is closed")
	}
	if s.gts != nil {
		return nil
	}
	return s.open(ctx, true)
}

// Poll polls up to max records (max <= 0: all buffered). The error is
// non-nil only if the session had to be re-opened and that failed.
func (s *Session) Poll(ctx context.Context, max int) (kgo.Fetches, error) {
	if err := s.ensure(ctx); err != nil {
		return nil, err
	}
	if err := s.fenceResult(ctx, false); err != nil {
		return nil, err
	}
	pctx := ctx
	if f := s.fencing; f != nil {
		// Poll while the fence runs, and no longer than it does if it fails.
		var cancel context.CancelFunc
		pctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(f.failed, cancel)()
	}
	fs := s.gts.PollRecords(pctx, max)
	if err := s.fenceResult(ctx, false); err != nil {
		return nil, err
	}
	if s.polledGen == 0 && fs.NumRecords() > 0 {
		s.polledGen = s.gen
	}
	for _, fe := range fs.Errors() {
		// kgo rejoins after FENCED_INSTANCE_ID, which would take the
		// group slot back from the instance that replaced us: stop.
		if errors.Is(fe.Err, kerr.FencedInstanceID) {
			s.fenced = true
			return fs, s.replaced("poll", fe.Err)
		}
	}
	return fs, nil
}

// Begin begins a transaction.
func (s *Session) Begin(ctx context.Context) error {
	polled := s.polledGen
	s.polledGen = 0
	if err := s.ensure(ctx); err != nil {
		return err
	}
	// The new producer's InitProducerID (in Begin) must follow the fence's.
	if err := s.fenceResult(ctx, true); err != nil {
		if s.gts != nil {
			s.discard()
			return fmt.Errorf("txn: begin: %w (session discarded; it resumes from the committed offsets)", err)
		}
		return err
	}
	if polled != 0 && polled != s.gen {
		// Some of the batch came from a client discarded since (its fence
		// failed); the current one may have polled the rest. Neither may
		// commit it: discard this one too, so the next starts from the
		// committed offsets.
		s.discard()
		return fmt.Errorf("%w: the batch was polled by a client the session discarded since (its fence failed); it is polled again from the committed offsets", sinks.ErrAborted)
	}
	if err := s.gts.Begin(); err != nil {
		if sinks.IsFatal(err) {
			s.fenced = true
			return classifyFatal("begin", s.cfg.TransactionalID, err)
		}
		// The records polled since the last End would be committed by
		// the next one if this client went on; discard it so the next
		// poll starts a fresh client at the committed offsets.
		s.discard()
		return fmt.Errorf("txn: begin: %w (session discarded; it resumes from the committed offsets)", err)
	}
	s.inTxn = true
	s.begun = time.Now()
	return nil
}

// Produce produces r in the open transaction; promise is called with its
// result. Safe for concurrent use between Begin and End.
func (s *Session) Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	s.gts.Produce(ctx, r, promise)
}

// Flush waits until every record produced in the transaction is
// acknowledged or failed.
func (s *Session) Flush(ctx context.Context) error { return s.gts.Client().Flush(ctx) }

// End ends the open transaction: commit it (with the consumer offsets of
// everything polled since the last End) if commit is true, abort it
// otherwise. After an abort of any kind the consumer positions are back at
// the committed offsets.
//
// End returns nil when the transaction ended as asked. It returns an error
// wrapping [sinks.ErrAborted] when a commit was asked for but the transaction was
// aborted (a rebalance revoked partitions, the generation moved on); a
// [*sinks.FatalError] when the instance was fenced or is not authorized; and an
// error wrapping [sinks.ErrOutcomeUnknown] when the outcome could not be confirmed, in
// which case the session already discarded its client and will open a fresh
// one (fencing the old) on the next call.
func (s *Session) End(ctx context.Context, commit bool) error {
	if !s.inTxn {
		return nil
	}
	s.inTxn = false
	committed, err := s.gts.End(ctx, kgo.TransactionEndTry(commit))
	switch {
	case err == nil && committed == commit:
		return nil
	case err == nil:
		return fmt.Errorf("%w: the group rebalanced or the coordinator asked for an abort", sinks.ErrRevoked)
	case errors.Is(err, kerr.ProducerFenced), errors.Is(err, kerr.InvalidProducerEpoch):
		// The broker answers the same for a successor's InitProducerID
		// and for its own abort of a transaction that outlived the
		// transaction timeout. Only evidence of a successor stops us.
		if why := s.successor(ctx); why != "" {
			s.fenced = true
			return s.replaced("end transaction", fmt.Errorf("%s: %w", why, err))
		}
		elapsed := time.Since(s.begun)
		s.log.Warn("the broker aborted the transaction: it was open longer than the transaction timeout; re-creating the producer and consumer",
			"transactional_id", s.cfg.TransactionalID, "open_for", elapsed, "transaction_timeout", s.txnTimeout(), "err", err)
		s.recreate(ctx)
		return fmt.Errorf("%w: open for %v, past the transaction timeout %v (the broker answered %v); the session was re-created and resumes from the committed offsets",
			sinks.ErrTxnTimedOut, elapsed.Round(time.Millisecond), s.txnTimeout(), err)
	case sinks.IsFatal(err):
		s.fenced = true
		if errors.Is(err, kerr.FencedInstanceID) {
			return s.replaced("end transaction", err)
		}
		return classifyFatal("end transaction", s.cfg.TransactionalID, err)
	}
	// The outcome is unknown: the commit may or may not have landed. Never
	// reuse this producer; a fresh InitProducerID settles it either way.
	s.log.Warn("transaction outcome unknown; re-creating the producer and consumer",
		"transactional_id", s.cfg.TransactionalID, "err", err)
	s.recreate(ctx)
	return recreated(err)
}

// Committed settles a transaction whose End returned an unknown outcome by
// reading what the group committed. It opens the session's new client if End
// did not (whose InitProducerID fences the old epoch, so the transaction is
// settled either way), then reads the group's stable committed offsets of the
// partitions in next. committed is true if every one is exactly at its next
// offset: the group's offsets are at the batch's end, so the batch committed
// (almost surely this transaction; after a rebalance another owner may have
// committed exactly the same range, which only makes the counters count it
// twice). known is false if the offsets could not be read, or if one is past
// next (another owner moved on: nobody can tell whose commit it was).
func (s *Session) Committed(ctx context.Context, next map[string]map[int32]int64) (committed, known bool) {
	if err := s.ensure(ctx); err != nil {
		s.log.Debug("settling an unknown outcome: re-opening the session", "err", err)
		return false, false
	}
	// Until the fence returns, the transaction may still be open.
	if err := s.fenceResult(ctx, true); err != nil {
		s.log.Debug("settling an unknown outcome: waiting for the fence", "err", err)
		return false, false
	}
	cl := s.gts.Client()
	group, _ := cl.OptValue(kgo.ConsumerGroup).(string)
	topics := make([]string, 0, len(next))
	for t := range next {
		topics = append(topics, t)
	}
	offs, err := kadm.NewClient(cl).FetchOffsetsForTopics(kadm.RequireStable(ctx), group, topics...)
	if err != nil || offs.Error() != nil {
		s.log.Debug("settling an unknown outcome: fetching the committed offsets", "err", errors.Join(err, offs.Error()))
		return false, false
	}
	all, none := true, true
	for t, ps := range next {
		for p, want := range ps {
			o, ok := offs.Lookup(t, p)
			switch {
			case !ok || o.At < want:
				all = false
			case o.At == want:
				none = false
			default:
				return false, false
			}
		}
	}
	switch {
	case all:
		return true, true
	case none:
		return false, true
	}
	return false, false // a transaction is atomic: a mix means someone else committed too
}

// recreate discards the client and, while ctx allows, opens a new one
// (fencing the old epoch); otherwise the next call re-opens it.
func (s *Session) recreate(ctx context.Context) {
	if s.closed {
		s.discardCtx(ctx, true) // in Close: leave as Close would
	} else {
		s.discard()
	}
	if !s.closed && ctx.Err() == nil {
		if rerr := s.open(ctx, true); rerr != nil {
			s.log.Warn("re-opening the session failed; will retry on next poll", "err", rerr)
		}
	}
}

// txnTimeout is the client's transaction timeout.
func (s *Session) txnTimeout() time.Duration {
	if s.gts == nil {
		return 0
	}
	d, _ := s.gts.Client().OptValue(kgo.TransactionTimeout).(time.Duration)
	return d
}

// successor looks for evidence that a newer instance took this one's place
// after the broker fenced the producer epoch, and says what it found ("" if
// nothing). A fence that comes before the transaction could have timed out
// was another producer's InitProducerID for our transactional id. Later, the
// broker may have aborted our own slow transaction; then a transaction of our
// transactional id in progress that began after ours, or a group member that
// holds our instance id under another member id (static membership), is a
// successor. A successor that fenced us but has not begun a transaction yet
// leaves no trace without static membership: re-creating the session is then
// still safe for the data (the broker fences whichever producer is older),
// but the successor's next commit is fenced in turn — one more reason for
// static membership, the default.
func (s *Session) successor(ctx context.Context) string {
	if s.gts == nil {
		return ""
	}
	elapsed, timeout := time.Since(s.begun), s.txnTimeout()
	if timeout > 0 && elapsed < timeout {
		return fmt.Sprintf("another producer initialized transactional id %q %v into this transaction, before its timeout %v could expire",
			s.cfg.TransactionalID, elapsed.Round(time.Millisecond), timeout)
	}
	cl := s.gts.Client()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	// A transaction of our transactional id in progress that began after
	// ours is a successor's, with or without static membership.
	if txns, err := adm.DescribeTransactions(dctx, s.cfg.TransactionalID); err == nil {
		if d, ok := txns[s.cfg.TransactionalID]; ok && d.Err == nil && d.State == "Ongoing" &&
			d.StartTimestamp >= s.begun.Add(-time.Second).UnixMilli() {
			return fmt.Sprintf("another producer has a transaction in progress on transactional id %q (epoch %d)", s.cfg.TransactionalID, d.ProducerEpoch)
		}
	} else {
		s.log.Debug("describing the transaction to tell a successor from a timeout", "err", err)
	}
	group, _ := cl.OptValue(kgo.ConsumerGroup).(string)
	instance, _ := cl.OptValue(kgo.InstanceID).(string)
	member, _ := cl.GroupMetadata()
	if group == "" || instance == "" {
		return ""
	}
	described, err := adm.DescribeGroups(dctx, group)
	if err != nil {
		s.log.Debug("describing the group to tell a successor from a timeout", "err", err)
		return ""
	}
	for _, m := range described[group].Members {
		if m.InstanceID != nil && *m.InstanceID == instance && m.MemberID != member {
			return fmt.Sprintf("member %s of group %q now holds instance id %q", m.MemberID, group, instance)
		}
	}
	return ""
}

// replaced is the fatal error of an instance that a newer one replaced.
func (s *Session) replaced(op string, cause error) error {
	group, instance := "", ""
	if s.gts != nil {
		group, _ = s.gts.Client().OptValue(kgo.ConsumerGroup).(string)
		instance, _ = s.gts.Client().OptValue(kgo.InstanceID).(string)
	}
	return fencedBy(op, s.cfg.TransactionalID, group, instance, cause)
}

// discard closes the client (re-creation, a failed fence or Begin): no
// transaction of it is open, or its outcome no longer matters.
func (s *Session) discard() { s.discardCtx(context.Background(), false) }

// discardCtx closes the client in at most about CloseGrace (less if ctx
// ends) and leaves the group if it must (CloseMember). closing says the
// session is closing for good: a static member then leaves if LeaveOnClose
// is set.
func (s *Session) discardCtx(ctx context.Context, closing bool) {
	if f := s.fencing; f != nil {
		s.fencing = nil
		f.stop()
	}
	if s.gts == nil {
		return
	}
	cl, cancel := s.gts.Client(), s.cancelClient
	s.gts, s.cancelClient = nil, nil
	CloseMember(ctx, cl, cancel, s.cfg.ClientOpts, closing && s.cfg.LeaveOnClose, s.fenced, s.log)
}

// CloseMember closes cl, a group consumer created with kgo.WithContext(cctx)
// where cancel cancels cctx (CloseClient), and makes its member leave the
// group when it must: a static member if leaveStatic (its client does not
// leave), a dynamic one if its close was interrupted before its client could
// leave (no successor takes its place; a static member's next client takes
// over its instance id). A fenced member never leaves: its successor holds
// its place. The leave runs on LeaveContext(ctx); failures are logged.
func CloseMember(ctx context.Context, cl *kgo.Client, cancel context.CancelFunc, clientOpts []kgo.Opt, leaveStatic, fenced bool, log *slog.Logger) {
	group, _ := cl.OptValue(kgo.ConsumerGroup).(string)
	instance, _ := cl.OptValue(kgo.InstanceID).(string)
	interrupted := CloseClient(ctx, cl, cancel, CloseGrace)
	if interrupted {
		log.Info("closing the client took longer than its grace; interrupted it (a group join waiting for its answer, or a broker not answering)",
			"group", group, "grace", CloseGrace)
	}
	member, _ := cl.GroupMetadata() // after the close: a join may have given it one (KIP-394)
	if fenced || member == "" || !(leaveStatic && instance != "" || interrupted && instance == "") {
		return
	}
	lctx, lcancel := LeaveContext(ctx)
	defer lcancel()
	if err := LeaveGroup(lctx, clientOpts, group, member, instance); err != nil {
		if interrupted && errors.Is(err, kerr.UnknownMemberID) {
			return // its client had left after all
		}
		log.Warn("leaving the group", "err", err)
	}
}

// CloseGrace is how long CloseClient lets a client's Close take before it
// interrupts it.
const CloseGrace = 2 * time.Second

// CloseClient closes cl, a client created with kgo.WithContext(cctx) where
// cancel cancels cctx, in at most about grace (less if ctx ends sooner), and
// reports whether it had to interrupt it.
//
// franz-go's Close waits for an in-flight JoinGroup or SyncGroup to be
// answered: it sends them on the client's own context, so that a final
// commit in OnPartitionsRevoked stays possible. The coordinator answers a
// JoinGroup once every member has rejoined or was dropped; when a member
// went away without leaving the group (a static member, a crash), that is
// its session timeout, or the rebalance timeout, later. A closing client
// needs no answer, so past grace CloseClient cancels cctx, which fails the
// request at once. Records still buffered are failed as by any Close. An
// interrupted Close may not have sent its LeaveGroup: the caller sends one
// itself if it must (LeaveGroup, on a LeaveContext).
func CloseClient(ctx context.Context, cl *kgo.Client, cancel context.CancelFunc, grace time.Duration) (interrupted bool) {
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		cl.Close()
	}()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		return false
	case <-t.C:
	case <-ctx.Done():
	}
	select {
	case <-done: // finished just now
		return false
	default:
	}
	cancel()
	<-done
	return true
}

// LeaveContext is the context a closing session leaves its group on: ctx
// while it has at least CloseGrace left, else CloseGrace from now, so that
// a Close whose budget an abort used up still leaves.
func LeaveContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ctx.Err() == nil && (!ok || time.Until(d) >= CloseGrace) {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(context.WithoutCancel(ctx), CloseGrace)
}

// Close aborts an open transaction (bounded by ctx), closes the client and
// leaves the group (see discardCtx; both bounded by about CloseGrace when
// ctx is done or short).
func (s *Session) Close(ctx context.Context) error {
	var err error
	s.closed = true
	if s.inTxn && s.gts != nil {
		err = s.End(ctx, false)
	}
	s.discardCtx(ctx, true)
	return err
}

// LeaveGroup makes the static member (memberID, instanceID) leave group, so
// its partitions are reassigned at once instead of after the session
// timeout. The broker refuses it (FENCED_INSTANCE_ID) if a newer member took
// the instance id over, so a replaced instance cannot remove its successor.
// An empty instanceID leaves as the dynamic member memberID.
func LeaveGroup(ctx context.Context, clientOpts []kgo.Opt, group, memberID, instanceID string) error {
	cl, err := kgo.NewClient(clientOpts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = group
	m := kmsg.NewLeaveGroupRequestMember()
	m.MemberID = memberID
	if instanceID != "" {
		m.InstanceID = &instanceID
	}
	m.Reason = kmsg.StringPtr("exactly: clean shutdown")
	req.Members = append(req.Members, m)
	as := instanceID
	if as == "" {
		as = "member " + memberID
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("txn: leaving group %q as %q: %w", group, as, err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return fmt.Errorf("txn: leaving group %q as %q: %w", group, as, err)
	}
	for _, m := range resp.Members {
		if err := kerr.ErrorForCode(m.ErrorCode); err != nil {
			return fmt.Errorf("txn: leaving group %q as %q: %w", group, as, err)
		}
	}
	return nil
}
