package pgsink

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/exactlyonce/exactly/sinks"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Sink is the Postgres sink: the effects of each partition's batch are
// written in a Postgres transaction together with a compare-and-set of that
// partition's next offset in an offsets table, so the rows and the offsets
// commit together or not at all. The consumer positions come from that
// table, never from Kafka: when partitions are assigned, their next offsets
// are loaded from it before anything of them is fetched.
//
// Each partition's batch commits in a transaction of its own, on a
// connection of its own, so the pipeline can run the Stage on several
// partitions at once (a pgx.Tx is not safe for concurrent use). A commit
// therefore may succeed for some partitions of a pipeline transaction and
// not for others; the ones that did not are rolled back and polled again,
// and Commit returns an error wrapping [sinks.ErrAborted] naming them (see
// [sinks.PartitionError]).
//
// # Fencing
//
// The offset update is conditional: UPDATE … SET next_offset = last+1 WHERE
// … AND next_offset = expected, where expected is the offset this session
// read from the table (or committed itself) and started consuming from. A
// zombie — an instance that was paused past its session timeout while
// another took its partitions over — updates nothing once the new owner
// committed, and its transaction rolls back. The expected value is the
// stored offset, not the batch's first offset: they differ when the input
// was written by transactional producers (commit markers and aborted
// records occupy offsets no consumer sees), so the session instead checks
// that each batch starts with the first record it polled since that
// offset. For a partition with no row yet
// the condition is "no row": INSERT … ON CONFLICT DO NOTHING must insert, so
// two first owners racing cannot both win. Under READ COMMITTED the row lock
// of the conditional update serialises two owners of one partition: the
// second re-evaluates its condition against the committed row and updates
// nothing.
//
// # Connections
//
// A pipeline transaction holds one connection per partition it covers, from
// Begin to Commit or Rollback. Size the pool (pgxpool's pool_max_conns) for
// at least the number of input partitions one instance may own, plus what
// the Stage uses outside its transaction handle. If a transaction covers
// more partitions than the pool can hold, the sink opens extra connections
// with the pool's configuration for the surplus (and logs a warning) rather
// than deadlock.
type Sink struct {
	pool     *pgxpool.Pool
	poolCfg  *pgxpool.Config // for dedicated connections
	maxConns int
	cfg      pgConfig
	table    pgx.Identifier
	sql      pgQueries
	begin    string // the statement that begins a partition's transaction
}

// Opt configures the Postgres sink.
type Opt interface{ apply(*pgConfig) }

type pgOpt func(*pgConfig)

func (o pgOpt) apply(c *pgConfig) { o(c) }

type pgConfig struct {
	schema, table          string
	mirror                 bool
	start                  kgo.Offset
	backoffMin, backoffMax time.Duration
	txOpts                 pgx.TxOptions
	idleTimeout            time.Duration
}

func pgDefaults() pgConfig {
	return pgConfig{
		schema:      "public",
		table:       "exactly_offsets",
		mirror:      true,
		start:       kgo.NewOffset().AtStart(),
		backoffMin:  20 * time.Millisecond,
		backoffMax:  2 * time.Second,
		idleTimeout: time.Minute,
	}
}

// OffsetsTable sets the schema and the name of the offsets table. Default
// "public" and "exactly_offsets". Both are quoted as identifiers, so they
// are taken literally (case included); pass them separately, not as
// "schema.table". Several pipelines may share one table: rows are keyed by
// consumer group, topic and partition.
func OffsetsTable(schema, table string) Opt {
	return pgOpt(func(c *pgConfig) { c.schema, c.table = schema, table })
}

// MirrorToKafka makes the sink commit each partition's new offset to the
// consumer group in Kafka too, after the Postgres transaction committed, so
// lag dashboards and kafka-consumer-groups see progress. Default true. The
// mirror is asynchronous and best effort (failures are logged); correctness
// never depends on it, since positions are always loaded from Postgres.
func MirrorToKafka(on bool) Opt { return pgOpt(func(c *pgConfig) { c.mirror = on }) }

// StartOffset is where a partition that has no row in the offsets table
// starts. Default kgo.NewOffset().AtStart() (earliest), so nothing written
// before the pipeline first ran is skipped. With AtEnd, records written
// before a partition's first owner started are skipped by design. The
// pipeline's ResetOffset does not apply to the Postgres sink except when a
// stored offset is out of range (the records were deleted by retention).
func StartOffset(o kgo.Offset) Opt { return pgOpt(func(c *pgConfig) { c.start = o }) }

// RetryBackoff bounds the delay between retries of the sink's own queries:
// loading the offsets of newly assigned partitions (retried until the
// partitions are revoked) and resolving a commit whose outcome was unknown.
// Defaults 20ms and 2s; the delay doubles from min to max, with jitter.
func RetryBackoff(minDelay, maxDelay time.Duration) Opt {
	return pgOpt(func(c *pgConfig) { c.backoffMin, c.backoffMax = minDelay, maxDelay })
}

// TxOptions sets the options of each partition's transaction. Default: the
// server's default isolation (READ COMMITTED unless configured otherwise).
// The offset compare-and-set is correct at any isolation level; at
// REPEATABLE READ and SERIALIZABLE a conflict surfaces as a serialization
// failure, which aborts the partition's batch and is retried. Read-only
// transactions are refused: the offsets are written in them.
func TxOptions(o pgx.TxOptions) Opt { return pgOpt(func(c *pgConfig) { c.txOpts = o }) }

// IdleInTransactionTimeout sets idle_in_transaction_session_timeout for the
// sink's transactions. Default 1 minute; 0 keeps the server's setting. An
// instance that is paused (SIGSTOP, a long GC, a network partition) while a
// transaction is open keeps that transaction's locks; if it wrote rows the
// new owner of its partitions also writes (an upsert on the same key), the
// new owner waits on them. The server ends a transaction idle this long, so
// the new owner can go on. The time a partition's transaction waits for the
// Stage of other partitions counts as idle: keep the Stage well inside it.
func IdleInTransactionTimeout(d time.Duration) Opt {
	return pgOpt(func(c *pgConfig) { c.idleTimeout = d })
}

// New returns the Postgres sink writing to the database of pool.
// It validates the options and never connects; the offsets table must exist
// when a session opens (see [Sink.Migrate] and the DDL in the package
// documentation). The pool stays the caller's: close it after the pipeline
// stopped.
func New(pool *pgxpool.Pool, opts ...Opt) (*Sink, error) {
	if pool == nil {
		return nil, &sinks.ConfigError{Option: "pgsink.pool", Value: nil, Reason: "pool is nil: pgxpool.New failed? check its error"}
	}
	cfg := pgDefaults()
	for _, o := range opts {
		if o == nil {
			return nil, &sinks.ConfigError{Option: "pgsink.Opt", Value: nil, Reason: "nil option"}
		}
		o.apply(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pc := pool.Config()
	p := &Sink{
		pool:     pool,
		poolCfg:  pc,
		maxConns: int(pc.MaxConns),
		cfg:      cfg,
		table:    pgx.Identifier{cfg.schema, cfg.table},
		begin:    cfg.beginSQL(),
	}
	p.sql = newPgQueries(p.table.Sanitize())
	return p, nil
}

func (c *pgConfig) validate() error {
	if err := checkIdent("OffsetsTable", "schema", c.schema); err != nil {
		return err
	}
	if err := checkIdent("OffsetsTable", "table", c.table); err != nil {
		return err
	}
	switch {
	case c.backoffMin <= 0 || c.backoffMax < c.backoffMin:
		return &sinks.ConfigError{Option: "pgsink.RetryBackoff", Value: fmt.Sprintf("(%v, %v)", c.backoffMin, c.backoffMax), Reason: "need 0 < min <= max"}
	case c.idleTimeout < 0:
		return &sinks.ConfigError{Option: "pgsink.IdleInTransactionTimeout", Value: c.idleTimeout, Reason: "must not be negative"}
	case c.idleTimeout > 0 && c.idleTimeout < time.Millisecond:
		return &sinks.ConfigError{Option: "pgsink.IdleInTransactionTimeout", Value: c.idleTimeout, Reason: "the server counts in milliseconds; use 0 to keep the server's setting"}
	}
	o := c.txOpts
	switch o.IsoLevel {
	case "", pgx.Serializable, pgx.RepeatableRead, pgx.ReadCommitted, pgx.ReadUncommitted:
	default:
		return &sinks.ConfigError{Option: "pgsink.TxOptions", Value: fmt.Sprintf("IsoLevel %q", o.IsoLevel), Reason: "unknown isolation level"}
	}
	switch o.AccessMode {
	case "", pgx.ReadWrite:
	case pgx.ReadOnly:
		return &sinks.ConfigError{Option: "pgsink.TxOptions", Value: "AccessMode read only", Reason: "the offsets are written in the same transaction as the effects"}
	default:
		return &sinks.ConfigError{Option: "pgsink.TxOptions", Value: fmt.Sprintf("AccessMode %q", o.AccessMode), Reason: "unknown access mode"}
	}
	switch o.DeferrableMode {
	case "", pgx.Deferrable, pgx.NotDeferrable:
	default:
		return &sinks.ConfigError{Option: "pgsink.TxOptions", Value: fmt.Sprintf("DeferrableMode %q", o.DeferrableMode), Reason: "unknown deferrable mode"}
	}
	return nil
}

// CheckConfig implements [sinks.ConfigChecker]: it refuses an
// IdleInTransactionTimeout that a transaction may legitimately reach. A
// partition's transaction sits idle while the Stage of other partitions runs
// and until the commit, up to the pipeline's TransactionTimeout; a shorter
// idle timeout would make the server end such transactions (25P03) on every
// slow batch, which the pipeline would retry forever.
func (p *Sink) CheckConfig(cfg sinks.SessionConfig) error {
	if d := p.cfg.idleTimeout; d > 0 && d <= cfg.TransactionTimeout {
		return &sinks.ConfigError{Option: "pgsink.IdleInTransactionTimeout", Value: d,
			Reason: fmt.Sprintf("must be longer than the pipeline's TransactionTimeout %v: a partition's transaction may sit idle that long while the Stage runs, and the server would end it (25P03) on every slow batch; raise it, or 0 to keep the server's setting", cfg.TransactionTimeout)}
	}
	return nil
}

// checkIdent refuses identifiers Postgres would truncate or that are almost
// certainly a mistake; quoting makes any other name safe.
func checkIdent(opt, what, s string) error {
	bad := func(why string) error {
		return &sinks.ConfigError{Option: "pgsink." + opt, Value: fmt.Sprintf("%s %q", what, s), Reason: why}
	}
	switch {
	case s == "":
		return bad("must not be empty")
	case len(s) > 63:
		return bad("Postgres truncates identifiers longer than 63 bytes")
	case !utf8.ValidString(s) || strings.ContainsRune(s, 0):
		return bad("must be valid UTF-8 without NUL bytes")
	case strings.Contains(s, "."):
		return bad(`contains '.': pass the schema and the table separately, OffsetsTable("public", "exactly_offsets")`)
	}
	return nil
}

// Table is the quoted, schema-qualified name of the offsets table.
func (p *Sink) Table() string { return p.table.Sanitize() }

// beginSQL is the statement that begins each partition's transaction.
func (c *pgConfig) beginSQL() string {
	o := c.txOpts
	var b strings.Builder
	if o.BeginQuery != "" {
		b.WriteString(o.BeginQuery)
	} else {
		b.WriteString("begin")
		if o.IsoLevel != "" {
			b.WriteString(" isolation level " + string(o.IsoLevel))
		}
		if o.AccessMode != "" {
			b.WriteString(" " + string(o.AccessMode))
		}
		if o.DeferrableMode != "" {
			b.WriteString(" " + string(o.DeferrableMode))
		}
	}
	if c.idleTimeout > 0 {
		fmt.Fprintf(&b, "; set local idle_in_transaction_session_timeout = %d", c.idleTimeout.Milliseconds())
	}
	return b.String()
}

var (
	// errNotOwned: the partition was revoked or lost in a rebalance
	// between the poll and the commit.
	errNotOwned = errors.New("the partition was revoked or lost in a rebalance")
	// errFencedByOwner: the conditional offset update matched no row.
	errFencedByOwner = errors.New("another owner already committed past this batch (the offset compare-and-set matched no row)")
	// errStale: the batch is not the continuation of the partition's
	// committed offset as this session knows it.
	errStale = errors.New("the batch does not start at the partition's committed offset (records from before a rebalance or a rewind)")
	// errUnknownOutcome: the commit's outcome could not be resolved yet.
	errUnknownOutcome = errors.New("the commit's outcome is unknown; the partition's offset will be re-read from the database before it commits again")
)
