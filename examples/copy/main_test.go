package main

import (
	"context"
	"log/slog"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCopiesExactlyOnceOnTheEmbeddedCluster(t *testing.T) {
	line, err := run(context.Background(), "", 2_000, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Equal(t, "copied exactly once: in=2000 out=2000 duplicates=0 missing=0", line)
}

// A Kafka-only program links no database driver: the packages it needs
// (pipeline, sinks, sinks/kafkasink, txn) must not pull pgx in.
func TestKafkaOnlyProgramLinksNoPgx(t *testing.T) {
	for _, pkg := range []string{".", "../../pipeline", "../../sinks", "../../sinks/kafkasink", "../../txn"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		require.NoError(t, err, "%s", out)
		var pgx []string
		for _, dep := range strings.Fields(string(out)) {
			if strings.Contains(dep, "jackc") {
				pgx = append(pgx, dep)
			}
		}
		require.Empty(t, pgx, "go list -deps %s links database packages", pkg)
		require.Contains(t, string(out), "github.com/twmb/franz-go/pkg/kgo", "the check must see the real dependency list of %s", pkg)
	}
}
