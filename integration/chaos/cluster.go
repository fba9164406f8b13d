package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Cluster is the suite's own 3-node Apache Kafka cluster, run by
// scripts/kafka.sh with its own port base and state directory, so that its
// nodes can be killed without touching anyone else's.
type Cluster struct {
	Script   string // scripts/kafka.sh
	State    string // EXACTLY_STATE for it
	PortBase int    // EXACTLY_KAFKA_PORT_BASE for it
	Version  string // EXACTLY_KAFKA_VERSION (what the script runs)
	// Env is more of kafka.sh's environment (EXACTLY_KAFKA_REQUEST_TIMEOUT_MS=...)
	// for every call, so a node restarted after a kill gets the same settings.
	Env []string
	Log func(format string, args ...any)
}

// Brokers are the cluster's broker addresses (kafka.sh: BASE+100..102).
func (c *Cluster) Brokers() []string {
	return []string{
		"127.0.0.1:" + strconv.Itoa(c.PortBase+100),
		"127.0.0.1:" + strconv.Itoa(c.PortBase+101),
		"127.0.0.1:" + strconv.Itoa(c.PortBase+102),
	}
}

func (c *Cluster) script(ctx context.Context, timeout time.Duration, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Script, args...)
	cmd.Env = append(os.Environ(),
		"EXACTLY_STATE="+c.State,
		"EXACTLY_KAFKA_PORT_BASE="+strconv.Itoa(c.PortBase),
	)
	if c.Version != "" {
		cmd.Env = append(cmd.Env, "EXACTLY_KAFKA_VERSION="+c.Version)
	}
	cmd.Env = append(cmd.Env, c.Env...)
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start).Round(100 * time.Millisecond)
	if err != nil {
		return fmt.Errorf("kafka.sh %s failed after %v: %w\n%s", strings.Join(args, " "), took, err, out)
	}
	if c.Log != nil {
		c.Log("kafka.sh %s (%v)", strings.Join(args, " "), took)
	}
	return nil
}

// Up starts the cluster (or restarts missing nodes) and waits until it serves.
func (c *Cluster) Up(ctx context.Context) error { return c.script(ctx, 5*time.Minute, "cluster-up") }

// Down stops the cluster and removes its data.
func (c *Cluster) Down(ctx context.Context) error {
	return c.script(ctx, 2*time.Minute, "down", "cluster")
}

// Kill kill -9s node id (1-3) and waits until it is gone.
func (c *Cluster) Kill(ctx context.Context, id int) error {
	return c.script(ctx, time.Minute, "kill", strconv.Itoa(id))
}

// Start starts node id again on its data and waits until it serves (and,
// with all three up, until every partition has its full ISR).
func (c *Cluster) Start(ctx context.Context, id int) error {
	return c.script(ctx, 4*time.Minute, "start", strconv.Itoa(id))
}
