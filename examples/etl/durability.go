package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/pipeline/doctor"
)

// checkDurability runs the doctor's checks (the same as `exactly doctor` and
// a pipeline's preflight) on the run's topics once and prints a WARN line for
// every risk: on the embedded single-process cluster there are some, and a
// real cluster should have none.
func checkDurability(ctx context.Context, conn []kgo.Opt, tp topics, w io.Writer) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(conn...)
	if err != nil {
		fmt.Fprintf(w, "WARN durability check skipped: %v\n", err)
		return
	}
	defer cl.Close()
	rep, err := doctor.Check(ctx, cl, doctor.Request{Inputs: []string{tp.in}, Outputs: []string{tp.out, tp.dead}, Group: tp.group})
	if err != nil {
		fmt.Fprintf(w, "WARN durability check skipped: %v\n", err)
		return
	}
	for _, f := range rep.Findings {
		if f.Severity == doctor.Risk {
			fmt.Fprintf(w, "WARN durability risk: %s on %s (now %s); fix: %s\n", f.Check, f.Resource, f.Current, f.Fix)
		}
	}
}
