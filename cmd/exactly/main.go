// Command exactly holds the operator tools for pipelines built with
// github.com/exactlyonce/exactly:
//
//	exactly doctor   the loss-risk check of a pipeline's topics and brokers
//	exactly lag      committed offset, high watermark, last stable offset and
//	                 lag per partition; hanging transactions with -watch
//	exactly verify   the independent exactly-once checker: input vs outputs
//
// Run "exactly <command> -h" for a command's flags. Exit status: 0 when all
// is well, 1 when the check found what it looks for (a risk under -strict,
// outputs that are not exact, a hanging transaction), 2 when the command
// could not run (bad flags, unreachable brokers, a missing topic).
// docs/OPERATIONS.md describes every check.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit statuses.
const (
	exitOK    = 0
	exitFound = 1
	exitError = 2
)

// main runs the command line and exits with its status; SIGINT and SIGTERM
// end a -watch cleanly.
func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: exactly <command> [flags]

commands:
  doctor   check a pipeline's topics, brokers and timeouts for loss and duplicate risks
  lag      per partition: committed offset, high watermark, last stable offset, lag
  verify   compare an input topic with output topics: duplicates, missing, order

Run "exactly <command> -h" for the flags of a command.
`

// run executes one command line and returns the exit status. It is main
// without the process: tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError
	}
	switch args[0] {
	case "doctor":
		return runDoctor(ctx, args[1:], stdout, stderr)
	case "lag":
		return runLag(ctx, args[1:], stdout, stderr)
	case "verify":
		return runVerify(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "exactly: unknown command %q\n\n%s", args[0], usage)
	return exitError
}

// fail prints err as the command's error and returns exitError.
func fail(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "exactly %s: %s\n", cmd, strings.TrimPrefix(err.Error(), "doctor: "))
	return exitError
}
