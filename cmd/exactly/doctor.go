package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/exactlyonce/exactly/pipeline/doctor"
)

// splitList splits a comma-separated flag value, dropping empty entries.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// runDoctor is "exactly doctor".
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("exactly doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		conn    connFlags
		topics  = fs.String("topics", "", "the pipeline's input topics, comma separated (required)")
		outputs = fs.String("outputs", "", "the pipeline's output topics (outputs and dead letters), comma separated")
		group   = fs.String("group", "", "the pipeline's consumer group (labels the report)")
		txn     = fs.Duration("txn-timeout", doctor.DefaultTransactionTimeout, "the pipeline's transaction timeout (pipeline.TransactionTimeout)")
		sess    = fs.Duration("session-timeout", doctor.DefaultSessionTimeout, "the pipeline's group session timeout (pipeline.SessionTimeout)")
		down    = fs.Duration("downtime", doctor.DefaultDowntime, "the longest the pipeline may be stopped without losing records (retention is checked against it)")
		pgMode  = fs.Bool("postgres-offsets", false, "the pipeline runs in Postgres mode (offsets in a table): skip the checks of Kafka-stored offsets")
		strict  = fs.Bool("strict", false, "exit 1 when any finding is a risk")
		asJSON  = fs.Bool("json", false, "print the report as JSON")
	)
	conn.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: exactly doctor -topics in1,in2 [-outputs out1] [flags]\n\nChecks every topic the pipeline touches, the transaction state log, the brokers and the\npipeline's timeouts for settings that can lose or duplicate records.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	if fs.NArg() > 0 {
		return fail(stderr, "doctor", fmt.Errorf("unexpected argument %q: flags only (did you mean -topics %s?)", fs.Arg(0), fs.Arg(0)))
	}
	req := doctor.Request{
		Inputs: splitList(*topics), Outputs: splitList(*outputs), Group: *group,
		TransactionTimeout: *txn, SessionTimeout: *sess, Downtime: *down, PostgresOffsets: *pgMode,
	}
	if len(req.Inputs) == 0 {
		return fail(stderr, "doctor", fmt.Errorf("-topics is required: name the pipeline's input topics"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"-txn-timeout", *txn}, {"-session-timeout", *sess}, {"-downtime", *down}} {
		if d.v <= 0 {
			return fail(stderr, "doctor", fmt.Errorf("%s %v: give a positive duration", d.name, d.v))
		}
	}
	opts, err := conn.opts()
	if err != nil {
		return fail(stderr, "doctor", err)
	}
	ctx, cancel := context.WithTimeout(ctx, conn.timeout)
	defer cancel()
	cl, err := doctor.Dial(ctx, conn.seeds(), opts...)
	if err != nil {
		return fail(stderr, "doctor", err)
	}
	defer cl.Close()
	rep, err := doctor.Check(ctx, cl, req)
	if err != nil {
		return fail(stderr, "doctor", err)
	}
	if *asJSON {
		b, err := rep.JSON()
		if err != nil {
			return fail(stderr, "doctor", err)
		}
		fmt.Fprintf(stdout, "%s\n", b)
	} else if err := rep.WriteText(stdout); err != nil {
		return fail(stderr, "doctor", err)
	}
	if *strict && rep.HasRisk() {
		fmt.Fprintf(stderr, "exactly doctor: %d risk(s) found (-strict)\n", rep.Count(doctor.Risk))
		return exitFound
	}
	return exitOK
}
