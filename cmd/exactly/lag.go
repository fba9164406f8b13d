package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/exactlyonce/exactly/pipeline/doctor"
)

// runLag is "exactly lag".
func runLag(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("exactly lag", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		conn   connFlags
		topics = fs.String("topics", "", "the pipeline's input topics, comma separated (required)")
		group  = fs.String("group", "", "the pipeline's consumer group (required)")
		pgURL  = fs.String("pg", "", "Postgres mode: read committed offsets from this database (postgres://...) instead of Kafka")
		pgTbl  = fs.String("pg-table", "public.exactly_offsets", "Postgres mode: the offsets table (columns consumer_group, topic, partition, next_offset)")
		watch  = fs.Duration("watch", 0, "sample every this long and track last stable offsets (0: one sample)")
		forDur = fs.Duration("for", 0, "with -watch: stop after this long (0: until interrupted)")
		hang   = fs.Duration("hang-after", doctor.DefaultTransactionTimeout, "with -watch: warn when a partition's last stable offset stays behind its high watermark longer than this (the longest transaction timeout of the topics' producers)")
		strict = fs.Bool("strict", false, "with -watch: exit 1 when a hanging transaction was seen")
		asJSON = fs.Bool("json", false, "print JSON (with -watch: one object per line per sample)")
	)
	conn.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: exactly lag -topics in1,in2 -group g [-pg postgres://... [-pg-table s.t]] [-watch 5s] [flags]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	if fs.NArg() > 0 {
		return fail(stderr, "lag", fmt.Errorf("unexpected argument %q: flags only", fs.Arg(0)))
	}
	ts := splitList(*topics)
	switch {
	case len(ts) == 0:
		return fail(stderr, "lag", errors.New("-topics is required: name the pipeline's input topics"))
	case *group == "":
		return fail(stderr, "lag", errors.New("-group is required: the pipeline's consumer group"))
	case *watch < 0 || *forDur < 0 || *hang < 0:
		return fail(stderr, "lag", errors.New("-watch, -for and -hang-after take positive durations"))
	}
	table, err := pgTable(*pgTbl)
	if err != nil {
		return fail(stderr, "lag", err)
	}
	opts, err := conn.opts()
	if err != nil {
		return fail(stderr, "lag", err)
	}
	dctx, cancel := context.WithTimeout(ctx, conn.timeout)
	cl, err := doctor.Dial(dctx, conn.seeds(), opts...)
	cancel()
	if err != nil {
		return fail(stderr, "lag", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	var pg *pgx.Conn
	source := "kafka"
	if *pgURL != "" {
		pctx, cancel := context.WithTimeout(ctx, conn.timeout)
		pg, err = pgConnect(pctx, *pgURL)
		cancel()
		if err != nil {
			return fail(stderr, "lag", err)
		}
		defer pg.Close(context.Background())
		source = "postgres " + table
	}
	sample := func(ctx context.Context) (doctor.LagReport, error) {
		ctx, cancel := context.WithTimeout(ctx, conn.timeout)
		defer cancel()
		var committed doctor.Committed
		var err error
		if pg != nil {
			committed, err = pgCommitted(ctx, pg, table, *group, ts)
		} else {
			committed, err = doctor.KafkaCommitted(ctx, adm, *group, ts...)
		}
		if err != nil {
			return doctor.LagReport{}, err
		}
		rep, err := doctor.Lag(ctx, adm, committed, ts...)
		rep.Group, rep.Source = *group, source
		return rep, err
	}
	print := func(rep doctor.LagReport, compact bool) error {
		if *asJSON {
			b, err := rep.JSON()
			if compact {
				b, err = json.Marshal(rep)
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "%s\n", b)
			return err
		}
		return rep.WriteText(stdout)
	}

	if *watch == 0 {
		rep, err := sample(ctx)
		if err != nil {
			return fail(stderr, "lag", err)
		}
		if err := print(rep, false); err != nil {
			return fail(stderr, "lag", err)
		}
		for _, p := range rep.Partitions {
			if p.Open > 0 && !*asJSON {
				fmt.Fprintf(stdout, "note: %d partition(s) have open transactions (last stable offset below the high watermark); run with -watch 5s to tell a normal one from a hanging one\n", countOpen(rep))
				break
			}
		}
		return exitOK
	}

	wctx := ctx
	if *forDur > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, *forDur)
		defer cancel()
	}
	hanging := 0
	err = doctor.Watch(wctx, *watch, *hang, sample, func(rep doctor.LagReport) error {
		hanging += len(rep.Hanging())
		if !*asJSON {
			fmt.Fprintln(stdout)
		}
		return print(rep, true)
	})
	if err != nil && wctx.Err() == nil {
		return fail(stderr, "lag", err)
	}
	if *strict && hanging > 0 {
		fmt.Fprintf(stderr, "exactly lag: hanging transactions seen (-strict)\n")
		return exitFound
	}
	return exitOK
}

// countOpen counts rep's partitions with an open transaction.
func countOpen(rep doctor.LagReport) int {
	n := 0
	for _, p := range rep.Partitions {
		if p.Open > 0 {
			n++
		}
	}
	return n
}
