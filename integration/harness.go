package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Environment variables read by the harness (see doc.go).
const (
	EnvKafkaBrokers    = "EXACTLY_KAFKA_BROKERS"
	EnvKafkaCluster    = "EXACTLY_KAFKA_CLUSTER"
	EnvPGURL           = "EXACTLY_PG_URL"
	EnvRequireServices = "EXACTLY_REQUIRE_SERVICES"
	EnvKafkaScript     = "EXACTLY_KAFKA_SCRIPT"
)

// probeTimeout bounds each reachability check of a service.
const probeTimeout = 10 * time.Second

// RequireServices reports whether EXACTLY_REQUIRE_SERVICES=1: then a missing or
// unreachable service fails the test instead of skipping it (as in `make integration`).
func RequireServices() bool { return os.Getenv(EnvRequireServices) == "1" }

// serviceUnavailable skips the test, or fails it when services are required.
func serviceUnavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if RequireServices() {
		t.Fatalf("%s (%s=1, so this fails instead of skipping)", msg, EnvRequireServices)
	}
	t.Skip(msg)
}

// Failed probes are remembered per process, so that a suite run without services
// skips each test at once instead of waiting probeTimeout in every test.
// Successes are not remembered: tests stop and start brokers.
var probeFailures sync.Map // key string -> error

func probe(key string, fn func(context.Context) error) error {
	if err, ok := probeFailures.Load(key); ok {
		return err.(error)
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	err := fn(ctx)
	if err != nil {
		probeFailures.Store(key, err)
	}
	return err
}

// Brokers returns the single Kafka broker's addresses from EXACTLY_KAFKA_BROKERS
// (`make kafka-up`: 127.0.0.1:9092), after checking that it answers.
func Brokers(t testing.TB) []string {
	t.Helper()
	return kafkaFromEnv(t, EnvKafkaBrokers, 1)
}

// ClusterBrokers returns the 3-node Kafka cluster's addresses from
// EXACTLY_KAFKA_CLUSTER (`make kafka-cluster-up`: 127.0.0.1:9192,9193,9194 for
// node ids 1,2,3), after checking that all three brokers are live.
func ClusterBrokers(t testing.TB) []string {
	t.Helper()
	return kafkaFromEnv(t, EnvKafkaCluster, 3)
}

func kafkaFromEnv(t testing.TB, env string, minBrokers int) []string {
	t.Helper()
	brokers := splitAddrs(os.Getenv(env))
	if len(brokers) == 0 {
		serviceUnavailable(t, "%s is not set; run `make services-up` and `make integration`", env)
	}
	key := env + "=" + strings.Join(brokers, ",")
	err := probe(key, func(ctx context.Context) error {
		return kafkaLive(ctx, brokers, minBrokers)
	})
	if err != nil {
		serviceUnavailable(t, "Kafka at %s (%s) is not usable: %v", strings.Join(brokers, ","), env, err)
	}
	return brokers
}

func splitAddrs(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// kafkaLive checks that the brokers answer a Metadata request listing at least
// minBrokers live brokers.
func kafkaLive(ctx context.Context, brokers []string, minBrokers int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DialTimeout(3*time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	md, err := kadm.NewClient(cl).BrokerMetadata(ctx)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	if len(md.Brokers) < minBrokers {
		return fmt.Errorf("metadata lists %d live broker(s) %v, want at least %d", len(md.Brokers), md.Brokers.NodeIDs(), minBrokers)
	}
	return nil
}

// PGURL returns EXACTLY_PG_URL (`make pg-up`:
// postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable), after
// checking that it accepts a connection.
func PGURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv(EnvPGURL)
	if url == "" {
		serviceUnavailable(t, "%s is not set; run `make services-up` and `make integration`", EnvPGURL)
	}
	err := probe(EnvPGURL+"="+url, func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		return conn.Ping(ctx)
	})
	if err != nil {
		serviceUnavailable(t, "PostgreSQL at %s is not usable: %v", redactURL(url), err)
	}
	return url
}

// redactURL hides the password in messages.
func redactURL(url string) string {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return "(unparsable URL)"
	}
	return fmt.Sprintf("%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
}

// BrokerVersion reports the Kafka version the brokers run, as guessed by franz-go
// from their ApiVersions answer (Kafka does not send its release number), e.g.
// "v4.1". Different guesses from different brokers are joined with ", ". On error
// it returns "unknown (...)"; it is meant for logging.
func BrokerVersion(t testing.TB, brokers []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return fmt.Sprintf("unknown (%v)", err)
	}
	defer cl.Close()
	vs, err := kadm.NewClient(cl).ApiVersions(ctx)
	if err != nil {
		return fmt.Sprintf("unknown (%v)", err)
	}
	seen := map[string]bool{}
	var guesses []string
	var lastErr error
	vs.Each(func(v kadm.BrokerApiVersions) {
		if v.Err != nil {
			lastErr = v.Err
			return
		}
		if g := v.VersionGuess(); !seen[g] {
			seen[g] = true
			guesses = append(guesses, g)
		}
	})
	if len(guesses) == 0 {
		if lastErr == nil {
			lastErr = errors.New("no broker answered")
		}
		return fmt.Sprintf("unknown (%v)", lastErr)
	}
	sort.Strings(guesses)
	return strings.Join(guesses, ", ")
}

// KillBroker kills node nodeID (1, 2 or 3) of the 3-node cluster with SIGKILL
// (`scripts/kafka.sh kill N`) and returns once the process is gone. The node's
// data stays; StartBroker brings it back.
func KillBroker(t testing.TB, nodeID int) {
	t.Helper()
	runKafkaScript(t, time.Minute, "kill", strconv.Itoa(nodeID))
}

// StartBroker starts node nodeID of the 3-node cluster again on its data
// (`scripts/kafka.sh start N`) and returns once it serves metadata, and, when
// all three nodes run, once every partition has its full ISR again.
func StartBroker(t testing.TB, nodeID int) {
	t.Helper()
	runKafkaScript(t, 3*time.Minute, "start", strconv.Itoa(nodeID))
}

func runKafkaScript(t testing.TB, timeout time.Duration, args ...string) {
	t.Helper()
	script, err := kafkaScript()
	if err != nil {
		t.Fatalf("kafka.sh %s: %v", strings.Join(args, " "), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, args...)
	cmd.Stdin = nil
	// The script starts brokers in their own session with all fds redirected, but
	// never wait on a straggler holding our pipe for long.
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start).Round(100 * time.Millisecond)
	if err != nil {
		t.Fatalf("%s %s failed after %s: %v\n%s", script, strings.Join(args, " "), took, err, out)
	}
	t.Logf("%s %s (%s):\n%s", filepath.Base(script), strings.Join(args, " "), took, strings.TrimRight(string(out), "\n"))
}

// kafkaScript is $EXACTLY_KAFKA_SCRIPT, else scripts/kafka.sh in the module root.
func kafkaScript() (string, error) {
	if s := os.Getenv(EnvKafkaScript); s != "" {
		return s, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", fmt.Errorf("%s not set and %w", EnvKafkaScript, err)
	}
	return filepath.Join(root, "scripts", "kafka.sh"), nil
}

// moduleRoot finds the directory holding go.mod, from the working directory (go
// test runs in the package directory) or else from this file's path.
func moduleRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				if _, err := os.Stat(filepath.Join(d, "scripts", "kafka.sh")); err == nil {
					return d, nil
				}
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", errors.New("cannot find the module root (go.mod with scripts/kafka.sh)")
}
