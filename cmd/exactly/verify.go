package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/pipeline/doctor"
)

// runVerify is "exactly verify".
func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("exactly verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		conn    connFlags
		input   = fs.String("topic", "", "the input topic (required)")
		outputs = fs.String("outputs", "", "the output topics, comma separated (required unless -sql)")
		by      = fs.String("by", "key", "how an output is matched to its input: key, header:<name> or json:<field> (dot path)")
		read    = fs.Duration("read-timeout", time.Minute, "how long reading each topic to its end may take (an open transaction pins it)")
		pgURL   = fs.String("pg", "", "Postgres variant: read the outputs with -sql from this database instead of Kafka")
		query   = fs.String("sql", "", "Postgres variant: a query returning one column, the identity of each result row, in write order (e.g. select id from t order by seq)")
		asJSON  = fs.Bool("json", false, "print the report as JSON")
	)
	conn.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: exactly verify -topic in -outputs out1,out2 [-by key|header:<name>|json:<field>] [flags]\n       exactly verify -topic in -pg postgres://... -sql 'select id from t order by seq' [-by ...]\n\nExit status 1 when the outputs are not exactly the inputs (duplicates, missing, unknown, order).\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	if fs.NArg() > 0 {
		return fail(stderr, "verify", fmt.Errorf("unexpected argument %q: flags only", fs.Arg(0)))
	}
	b, err := doctor.ParseBy(*by)
	if err != nil {
		return fail(stderr, "verify", err)
	}
	outs := splitList(*outputs)
	switch {
	case *input == "":
		return fail(stderr, "verify", errors.New("-topic is required: the input topic"))
	case (*pgURL == "") != (*query == ""):
		return fail(stderr, "verify", errors.New("-pg and -sql go together: the database and the query that lists the result rows' identities"))
	case *pgURL == "" && len(outs) == 0:
		return fail(stderr, "verify", errors.New("-outputs is required (or -pg with -sql): the output topics to compare with the input"))
	case *pgURL != "" && len(outs) > 0:
		return fail(stderr, "verify", errors.New("give either -outputs (Kafka) or -pg with -sql (Postgres), not both"))
	case *read <= 0:
		return fail(stderr, "verify", fmt.Errorf("-read-timeout %v: give a positive duration", *read))
	}
	opts, err := conn.opts()
	if err != nil {
		return fail(stderr, "verify", err)
	}
	dctx, cancel := context.WithTimeout(ctx, conn.timeout)
	cl, err := doctor.Dial(dctx, conn.seeds(), opts...)
	cancel()
	if err != nil {
		return fail(stderr, "verify", err)
	}
	cl.Close()
	clientOpts := append([]kgo.Opt{kgo.SeedBrokers(conn.seeds()...)}, opts...)

	var rep doctor.VerifyReport
	if *pgURL == "" {
		rep, err = doctor.Verify(ctx, clientOpts, doctor.VerifyRequest{Input: *input, Outputs: outs, By: b, Timeout: *read})
	} else {
		rep, err = verifySQL(ctx, clientOpts, *input, b, *read, *pgURL, *query, conn.timeout)
	}
	if err != nil {
		return fail(stderr, "verify", err)
	}
	if *asJSON {
		j, err := rep.JSON()
		if err != nil {
			return fail(stderr, "verify", err)
		}
		fmt.Fprintf(stdout, "%s\n", j)
	} else if err := rep.WriteText(stdout); err != nil {
		return fail(stderr, "verify", err)
	}
	if !rep.OK() {
		return exitFound
	}
	return exitOK
}

// verifySQL compares the input topic with the rows query lists.
func verifySQL(ctx context.Context, clientOpts []kgo.Opt, input string, by doctor.By, read time.Duration, url, query string, connTimeout time.Duration) (doctor.VerifyReport, error) {
	recs, err := doctor.ReadCommitted(ctx, clientOpts, input, read)
	if err != nil {
		return doctor.VerifyReport{}, err
	}
	var inputs []doctor.Keyed
	for _, r := range recs {
		id, err := by.ID(r)
		if err != nil {
			return doctor.VerifyReport{}, fmt.Errorf("input %s[%d]@%d has no identity by %s: %v; choose a -by every input record carries", r.Topic, r.Partition, r.Offset, by, err)
		}
		inputs = append(inputs, doctor.Keyed{Pos: doctor.Position{Where: r.Topic, Domain: r.Partition, Offset: r.Offset}, ID: id})
	}
	pctx, cancel := context.WithTimeout(ctx, connTimeout)
	conn, err := pgConnect(pctx, url)
	cancel()
	if err != nil {
		return doctor.VerifyReport{}, err
	}
	defer conn.Close(context.Background())
	qctx, cancel := context.WithTimeout(ctx, read)
	defer cancel()
	outputs, err := pgOutputs(qctx, conn, query)
	if err != nil {
		return doctor.VerifyReport{}, err
	}
	rep := doctor.Compare(inputs, outputs)
	rep.By = by.String()
	if _, ok := rep.Out["sql"]; !ok {
		rep.Out["sql"] = 0
	}
	return rep, nil
}
