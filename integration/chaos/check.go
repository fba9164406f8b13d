package chaos

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/verify"
)

// Result is one cell's outcome: a row of the table.
type Result struct {
	Cell, Fault, Mode, Kafka string
	Records                  int
	Checked                  bool // the verifier ran to the end
	In, Out                  int
	Duplicates               int
	Missing                  int
	OrderViolations          int
	Unknown                  int
	OpenTxns                 int
	Restarts                 []time.Duration // restart to first commit
	Passed                   bool
	Took                     time.Duration
	Notes                    []string
	Failures                 []string
	Problems                 []string // the verifier's first problems
}

// Apply copies a verifier report into the result.
func (res *Result) Apply(rep verify.Report) {
	res.Checked = true
	res.In, res.Out = rep.In, rep.TotalOut()
	res.Duplicates, res.Missing = rep.Duplicates, rep.Missing
	res.OrderViolations, res.Unknown = rep.OrderViolations, rep.Unknown
	res.Problems = rep.Problems
}

// Exact is the verdict on the output alone: the verifier ran and found
// nothing, and no transaction is open.
func (res *Result) Exact() bool {
	return res.Checked && res.Duplicates == 0 && res.Missing == 0 && res.OrderViolations == 0 &&
		res.Unknown == 0 && res.OpenTxns == 0
}

func (r *Run) check(ctx context.Context, res *Result) {
	var (
		rep verify.Report
		err error
	)
	if r.Cell.Mode == Kafka {
		rep, err = KafkaReport(ctx, r.Cfg.Brokers, r.in, r.out)
	} else {
		rep, err = r.checkPG(ctx)
	}
	if err != nil {
		r.Fail("verifier: %v", err)
	} else {
		res.Apply(rep)
		if rep.In != r.Cell.Records {
			r.Fail("the input holds %d records, want %d", rep.In, r.Cell.Records)
		}
	}
	r.checkVPAcks(ctx)
	open, err := r.settledTxns(ctx, settleGrace)
	if err != nil {
		r.Fail("checking for open transactions: %v", err)
	}
	res.OpenTxns = len(open)
	for _, o := range open {
		r.Note("open: %s", o)
	}
}

// settleGrace bounds the wait for transactions whose outcome is decided
// but whose markers the coordinator is still writing.
const settleGrace = 30 * time.Second

// settledTxns is openTxns once the coordinators finished what they had
// decided. A transaction in PrepareCommit or PrepareAbort has its outcome
// written to the transaction log; its coordinator is still writing the
// markers (after a broker kill, to a partition leader that is just back) and
// completes them on its own. Until it has, the state is listed and a
// partition's last stable offset may stay below its high watermark, so this
// polls for up to grace while everything open is of that kind. An Ongoing
// transaction after the workers stopped is open for good (only its timeout
// would end it): it is reported at once.
func (r *Run) settledTxns(ctx context.Context, grace time.Duration) ([]string, error) {
	start := time.Now()
	for {
		o, err := r.openTxns(ctx)
		if err != nil {
			return nil, err
		}
		open := o.lines
		if len(open) == 0 {
			if waited := time.Since(start); waited > time.Second {
				r.Note("open transactions: none once the coordinators had written the markers of decided transactions, %v after the workers stopped", waited.Round(100*time.Millisecond))
			}
			return nil, nil
		}
		if !o.onlyCompleting() || time.Since(start) >= grace {
			return open, nil
		}
		select {
		case <-ctx.Done():
			return open, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// openSet is what openTxns found left open: a line for each, and how many
// of them are transactions whose outcome is decided (PrepareCommit,
// PrepareAbort) and partitions whose last stable offset lags.
type openSet struct {
	lines              []string
	completing, lsoLag int
}

// onlyCompleting: some transactions are completing, and everything else
// open is a partition whose last stable offset lags (which they explain).
func (o openSet) onlyCompleting() bool {
	return o.completing > 0 && o.completing+o.lsoLag == len(o.lines)
}

// KafkaReport is the Kafka-mode verifier: the input and the output read to
// their ends with read_committed consumers, each output naming its source
// in its headers.
func KafkaReport(ctx context.Context, brokers []string, in, out string) (verify.Report, error) {
	return verify.Check(ctx, verify.Options{
		ClientOpts: []kgo.Opt{kgo.SeedBrokers(brokers...)},
		Input:      in,
		Outputs:    []string{out},
		SourceOf:   verify.SourceFromHeaders,
		Timeout:    2 * time.Minute,
	})
}

// checkPG is the SQL verifier of Postgres mode: the input read with
// read_committed against the result rows in insertion order (id).
func (r *Run) checkPG(ctx context.Context) (verify.Report, error) {
	in, err := verify.ReadAll(ctx, []kgo.Opt{kgo.SeedBrokers(r.Cfg.Brokers...)}, r.in, 2*time.Minute)
	if err != nil {
		return verify.Report{}, err
	}
	inputs := make([]verify.Source, len(in))
	for i, rec := range in {
		inputs[i] = verify.Source{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset}
	}
	rows, err := r.pool.Query(ctx, `SELECT part, off FROM `+pgx.Identifier{r.Cfg.PGSchema, r.table}.Sanitize()+` ORDER BY id`)
	if err != nil {
		return verify.Report{}, err
	}
	defer rows.Close()
	var outs []RowSource
	for rows.Next() {
		var s RowSource
		if err := rows.Scan(&s.Partition, &s.Offset); err != nil {
			return verify.Report{}, err
		}
		outs = append(outs, s)
	}
	if err := rows.Err(); err != nil {
		return verify.Report{}, err
	}
	rep := CompareRows(inputs, r.in, r.table, outs)
	// The same duplicate count in SQL alone, as a cross-check of the scan.
	var total, distinct int
	if err := r.pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT (part, off)) FROM `+
		pgx.Identifier{r.Cfg.PGSchema, r.table}.Sanitize()).Scan(&total, &distinct); err != nil {
		return rep, err
	}
	if total-distinct != rep.Duplicates {
		r.Fail("SQL counts %d duplicate rows, the scan %d", total-distinct, rep.Duplicates)
	}
	return rep, nil
}

// RowSource is one result row of Postgres mode: the input record it names.
type RowSource struct {
	Partition int32
	Offset    int64
}

// CompareRows checks result rows (in insertion order) against the input
// records of topic with the verifier's Compare: one ordering domain for the
// whole table, so the rows of each input partition must be in offset order.
func CompareRows(inputs []verify.Source, topic, table string, rows []RowSource) verify.Report {
	outs := make([]verify.Output, len(rows))
	for i, s := range rows {
		outs[i] = verify.Output{Where: table, Domain: 0, Source: verify.Source{Topic: topic, Partition: s.Partition, Offset: s.Offset}}
	}
	return verify.Compare(inputs, outs)
}

// openTxns lists what is left open: transactions of the cell's group that
// are not complete, and partitions of its topics whose last stable offset
// is below the high watermark (and, in Postgres mode, worker sessions idle
// in transaction).
func (r *Run) openTxns(ctx context.Context) (openSet, error) {
	var o openSet
	txns, err := r.adm.ListTransactions(ctx, nil, nil)
	if err != nil {
		return openSet{}, err
	}
	for _, t := range txns.Sorted() {
		if !strings.HasPrefix(t.TxnID, r.group+":") {
			continue
		}
		switch t.State {
		case "PrepareCommit", "PrepareAbort":
			o.completing++
			fallthrough
		case "Ongoing", "PrepareEpochFence":
			o.lines = append(o.lines, fmt.Sprintf("transaction %s is %s", t.TxnID, t.State))
		}
	}
	topics := []string{r.in}
	if r.Cell.Mode == Kafka {
		topics = append(topics, r.out)
	}
	hw, err := r.adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = hw.Error()
	}
	if err != nil {
		return openSet{}, err
	}
	lso, err := r.adm.ListCommittedOffsets(ctx, topics...)
	if err == nil {
		err = lso.Error()
	}
	if err != nil {
		return openSet{}, err
	}
	hw.Each(func(h kadm.ListedOffset) {
		if l, ok := lso.Lookup(h.Topic, h.Partition); ok && l.Offset < h.Offset {
			o.lsoLag++
			o.lines = append(o.lines, fmt.Sprintf("%s[%d]: last stable offset %d < high watermark %d", h.Topic, h.Partition, l.Offset, h.Offset))
		}
	})
	if r.pool != nil {
		var n int
		if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE application_name LIKE $1 AND application_name <> $2 AND state LIKE 'idle in transaction%'`,
			"chaos-"+r.Cfg.RunID+"-%", "chaos-"+r.Cfg.RunID+"-driver").Scan(&n); err != nil {
			return openSet{}, err
		}
		if n > 0 {
			o.lines = append(o.lines, fmt.Sprintf("%d Postgres sessions of the workers idle in transaction", n))
		}
	}
	sort.Strings(o.lines)
	return o, nil
}

// Percentile is the p-th percentile (0..100, nearest rank) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Table formats the results: a header, a row per cell, the notes and
// failures, and as its last line the summary
// "chaos: cells=N passed=P duplicates=D missing=M".
func Table(results []Result) string {
	var b strings.Builder
	header := []string{"cell", "fault", "mode", "kafka version", "records", "duplicates", "missing", "order violations", "open transactions", "restart to first commit p50/max", "result"}
	rows := [][]string{header}
	passed, dups, missing := 0, 0, 0
	for _, r := range results {
		restart := "-"
		if len(r.Restarts) > 0 {
			restart = fmt.Sprintf("%v / %v (n=%d)", Percentile(r.Restarts, 50).Round(time.Millisecond),
				Percentile(r.Restarts, 100).Round(time.Millisecond), len(r.Restarts))
		}
		verdict := "FAIL"
		if r.Passed {
			verdict = "pass"
			passed++
		}
		dups += r.Duplicates
		missing += r.Missing
		num := func(n int) string {
			if !r.Checked {
				return "?"
			}
			return fmt.Sprint(n)
		}
		rows = append(rows, []string{r.Cell, r.Fault, r.Mode, r.Kafka, fmt.Sprint(r.Records),
			num(r.Duplicates), num(r.Missing), num(r.OrderViolations), fmt.Sprint(r.OpenTxns), restart, verdict})
	}
	width := make([]int, len(header))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len(c))
		}
	}
	for i, row := range rows {
		b.WriteString("|")
		for j, c := range row {
			fmt.Fprintf(&b, " %-*s |", width[j], c)
		}
		b.WriteString("\n")
		if i == 0 {
			b.WriteString("|")
			for j := range row {
				b.WriteString(strings.Repeat("-", width[j]+2) + "|")
			}
			b.WriteString("\n")
		}
	}
	for _, r := range results {
		if len(r.Notes)+len(r.Failures)+len(r.Problems) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n%s on Kafka %s (%v, %d restarts measured):\n", r.Cell, r.Kafka, r.Took.Round(time.Second), len(r.Restarts))
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "  FAIL %s\n", f)
		}
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "  verifier: %s\n", p)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "  %s\n", n)
		}
	}
	fmt.Fprintf(&b, "\nchaos: cells=%d passed=%d duplicates=%d missing=%d\n", len(results), passed, dups, missing)
	return b.String()
}
