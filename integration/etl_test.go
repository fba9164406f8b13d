package integration

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestETLEndToEnd builds examples/etl and runs it against the single broker
// with 20,000 order events, as a user would: it must exit 0 and print, last,
// that the independent verifier found every event once in the output or the
// dead-letter topic.
func TestETLEndToEnd(t *testing.T) {
	brokers := Brokers(t)
	t.Logf("Apache Kafka %s at %v", BrokerVersion(t, brokers), brokers)
	root, err := moduleRoot()
	require.NoError(t, err)
	goBin, err := exec.LookPath("go")
	require.NoError(t, err, "the go command is needed to build examples/etl")

	bin := filepath.Join(t.TempDir(), "etl")
	bctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	build := exec.CommandContext(bctx, goBin, "build", "-o", bin, "./examples/etl")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build ./examples/etl:\n%s", out)
	t.Logf("built examples/etl in %v", time.Since(start).Round(time.Millisecond))

	const records = 20_000
	rctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	run := exec.CommandContext(rctx, bin, "-brokers", strings.Join(brokers, ","), "-records", strconv.Itoa(records), "-timeout", "3m")
	run.Stdout, run.Stderr = &stdout, &stderr
	start = time.Now()
	err = run.Run()
	took := time.Since(start)
	t.Logf("etl output (%v):\n%s", took.Round(time.Millisecond), stdout.String())
	if stderr.Len() > 0 {
		t.Logf("etl stderr:\n%s", stderr.String())
	}
	require.NoError(t, err, "the ETL must exit 0")

	var last string
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			last = line
		}
	}
	m := regexp.MustCompile(`^exactly-once verified: in=(\d+) out=(\d+) dead=(\d+) duplicates=0 missing=0$`).FindStringSubmatch(last)
	require.NotNil(t, m, "last line: %q", last)
	in, _ := strconv.Atoi(m[1])
	outN, _ := strconv.Atoi(m[2])
	dead, _ := strconv.Atoi(m[3])
	require.Equal(t, records, in, "input events")
	require.Equal(t, records, outN+dead, "enriched plus dead-lettered events")
	require.Positive(t, dead, "the generator makes about 3%% malformed events; none reached the dead letters")
	require.Positive(t, outN)
}
