package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// FeederVerifiableProducer is Cell.Feeder for Apache Kafka's own
// kafka-verifiable-producer (org.apache.kafka.tools.VerifiableProducer from
// org.apache.kafka:kafka-tools, the broker's version), so that a client we
// did not write produces what the workers consume.
const FeederVerifiableProducer = "verifiable-producer"

// vpMainClass is the tool's class (bin/kafka-verifiable-producer.sh runs it).
const vpMainClass = "org.apache.kafka.tools.VerifiableProducer"

func (r *Run) runFeeder(ctx context.Context) error {
	switch r.Cell.Feeder {
	case "":
		return r.feed(ctx)
	case FeederVerifiableProducer:
		return r.feedVP(ctx)
	default:
		return fmt.Errorf("cell %s: unknown Feeder %q (want \"\" or %q)", r.Cell.Name, r.Cell.Feeder, FeederVerifiableProducer)
	}
}

// vpAcks is what kafka-verifiable-producer reported on stdout.
type vpAcks struct {
	mu       sync.Mutex
	acked    map[int32][]int64 // offsets acknowledged per partition, in report order
	n        int
	errors   int
	firstErr string
	toolData string // its final "tool_data" line
}

// vpEvent is one JSON line of the tool's stdout (only the fields we use).
type vpEvent struct {
	Name      string  `json:"name"`
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Offset    int64   `json:"offset"`
	Value     *string `json:"value"`
	Exception string  `json:"exception"`
	Message   string  `json:"message"`
	Sent      int64   `json:"sent"`
	Acked     int64   `json:"acked"`
}

func (a *vpAcks) line(l string) {
	var e vpEvent
	if err := json.Unmarshal([]byte(l), &e); err != nil {
		return // not a JSON event (the tool prints only those on stdout)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch e.Name {
	case "producer_send_success":
		a.acked[e.Partition] = append(a.acked[e.Partition], e.Offset)
		a.n++
	case "producer_send_error":
		a.errors++
		if a.firstErr == "" {
			a.firstErr = strings.TrimSpace(e.Exception + ": " + e.Message)
		}
	case "tool_data":
		a.toolData = l
	}
}

func (a *vpAcks) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// feedVP runs kafka-verifiable-producer with acks=all (and idempotence,
// the Java client's default with acks=all) throttled to the cell's rate, so
// the faults land mid-stream. Its JSON lines go to vp.jsonl and its stderr
// to vp.stderr.log in the cell's directory; every acknowledged
// (partition, offset) is kept for the check (checkVPAcks).
func (r *Run) feedVP(ctx context.Context) error {
	if r.Cfg.ToolsDir == "" {
		return fmt.Errorf("cell %s uses %s but Config.ToolsDir is empty: run `scripts/kafka.sh tools-fetch` with EXACTLY_KAFKA_VERSION=%s and pass its output",
			r.Cell.Name, FeederVerifiableProducer, r.Cfg.KafkaVersion)
	}
	if _, err := os.Stat(r.Cfg.ToolsDir); err != nil {
		return fmt.Errorf("kafka-tools jars: %w (run `scripts/kafka.sh tools-fetch`)", err)
	}
	props := filepath.Join(r.Dir, "vp.properties")
	// The tool sets retries=0 (which turns idempotence off) unless its
	// config says otherwise; a broker bounce must not fail a send, nor a
	// retry duplicate one: idempotent, retrying for up to two minutes.
	// (--producer.config: 4.4 calls it deprecated for --command-config,
	// which 4.1 does not know.)
	conf := "enable.idempotence=true\nretries=2147483647\nmax.in.flight.requests.per.connection=5\ndelivery.timeout.ms=120000\nrequest.timeout.ms=10000\nlinger.ms=5\n"
	if err := os.WriteFile(props, []byte(conf), 0o644); err != nil {
		return err
	}
	stdout, err := os.Create(filepath.Join(r.Dir, "vp.jsonl"))
	if err != nil {
		return err
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(r.Dir, "vp.stderr.log"))
	if err != nil {
		return err
	}
	defer stderr.Close()
	args := []string{
		"-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dlog4j2.configurationFile=" + filepath.Join(r.Cfg.ToolsDir, "log4j2.properties"), // logs to stderr: stdout is the events
		"-cp", filepath.Join(r.Cfg.ToolsDir, "*"), vpMainClass,
		"--topic", r.in,
		"--bootstrap-server", strings.Join(r.Cfg.Brokers, ","),
		"--max-messages", strconv.Itoa(r.Cell.Records),
		"--throughput", strconv.Itoa(r.Cell.Rate),
		"--acks", "-1",
		"--repeating-keys", "1000", // keys 0..999: spread over every partition
		"--producer.config", props,
	}
	cmd := exec.Command("java", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	acks := &vpAcks{acked: map[int32][]int64{}}
	r.mu.Lock()
	r.vp = acks
	r.mu.Unlock()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s (java): %w", FeederVerifiableProducer, err)
	}
	r.logf("%s started (pid %d): %d records at %d/s, acks=all", FeederVerifiableProducer, cmd.Process.Pid, r.Cell.Records, r.Cell.Rate)
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l := sc.Text()
			fmt.Fprintln(stdout, l)
			acks.line(l)
			r.fed.Store(int64(acks.count()))
		}
	}()
	waited := make(chan error, 1)
	go func() {
		<-read // Wait closes the pipe: read it to the end first
		waited <- cmd.Wait()
	}()
	select {
	case err = <-waited:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-waited
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("%s failed after %v: %w (stderr in %s)", FeederVerifiableProducer, time.Since(start).Round(time.Millisecond), err, stderr.Name())
	}
	acks.mu.Lock()
	defer acks.mu.Unlock()
	r.Note("%s (Kafka %s): %d of %d records acknowledged (acks=all), %d send errors, in %v; %s",
		FeederVerifiableProducer, r.Cfg.KafkaVersion, acks.n, r.Cell.Records, acks.errors, time.Since(start).Round(time.Millisecond), acks.toolData)
	if acks.n != r.Cell.Records || acks.errors > 0 {
		return fmt.Errorf("%s acknowledged %d of %d records with %d send errors (first: %s); its output is in %s",
			FeederVerifiableProducer, acks.n, r.Cell.Records, acks.errors, acks.firstErr, stdout.Name())
	}
	return nil
}

// checkVPAcks checks the input the verifier read against what the
// verifiable producer acknowledged: every partition holds exactly the
// offsets it acknowledged, 0..n-1 (a non-transactional producer leaves no
// holes), none twice.
func (r *Run) checkVPAcks(ctx context.Context) {
	r.mu.Lock()
	acks := r.vp
	r.mu.Unlock()
	if acks == nil {
		return
	}
	ends, err := r.inputEnds(ctx)
	if err != nil {
		r.Fail("reading the input's end offsets: %v", err)
		return
	}
	acks.mu.Lock()
	defer acks.mu.Unlock()
	for p, end := range ends {
		offs := acks.acked[p]
		seen := make(map[int64]bool, len(offs))
		for _, o := range offs {
			if seen[o] || o < 0 || o >= end {
				r.Fail("%s acknowledged %s[%d]@%d twice or beyond the partition's end %d", FeederVerifiableProducer, r.in, p, o, end)
				return
			}
			seen[o] = true
		}
		if int64(len(offs)) != end {
			r.Fail("input partition %d ends at %d but %s acknowledged %d records there", p, end, FeederVerifiableProducer, len(offs))
			return
		}
	}
	for p := range acks.acked {
		if _, ok := ends[p]; !ok {
			r.Fail("%s acknowledged records in partition %d, which the input does not have", FeederVerifiableProducer, p)
		}
	}
	r.Note("the input holds exactly the %d records %s acknowledged (offsets 0..n-1 of each of %d partitions)", acks.n, FeederVerifiableProducer, len(ends))
}

// ToolsDir fetches Kafka's command-line tools of the cluster's version
// (`kafka.sh tools-fetch`, cached outside git) and returns the directory of
// their jars, for Config.ToolsDir.
func (c *Cluster) ToolsDir(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Script, "tools-fetch")
	cmd.Env = append(os.Environ(), "EXACTLY_STATE="+c.State, "EXACTLY_KAFKA_PORT_BASE="+strconv.Itoa(c.PortBase))
	if c.Version != "" {
		cmd.Env = append(cmd.Env, "EXACTLY_KAFKA_VERSION="+c.Version)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("kafka.sh tools-fetch (Kafka %s): %w\n%s", c.Version, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	dir := lines[len(lines)-1]
	if _, err := os.Stat(filepath.Join(dir, "log4j2.properties")); err != nil {
		return "", fmt.Errorf("kafka.sh tools-fetch printed %q, which holds no tools: %w", dir, err)
	}
	return dir, nil
}

// firstCommitOrDone waits for p's first commit like Proc.FirstCommit, but
// returns 0 and no error once the feeder wrote every record and all are
// committed (InputCommitted): then p has nothing left to commit (a fault
// landing after the input ran out, as in the short cells).
func (r *Run) firstCommitOrDone(ctx context.Context, p *Proc, timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	var checked time.Time
	for {
		p.mu.Lock()
		fc := p.firstCommit
		p.mu.Unlock()
		done := false
		if time.Since(checked) >= time.Second {
			done = r.InputCommitted(ctx)
			checked = time.Now()
		}
		switch {
		case !fc.IsZero():
			return fc.Sub(p.Started), nil
		case done:
			return 0, nil
		case !p.Alive():
			_, _, line := p.ExitStatus()
			return 0, fmt.Errorf("worker %s.%d exited before its first commit (%s)", p.ID, p.Gen, line)
		case time.Now().After(deadline):
			return 0, fmt.Errorf("worker %s.%d did not commit within %v of its start", p.ID, p.Gen, timeout)
		}
		if err := r.waitChange(ctx, 100*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// feed writes the cell's records at its rate: keys k0.., values of ~100 B.
func (r *Run) feed(ctx context.Context) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.Cfg.Brokers...), kgo.DefaultProduceTopic(r.in),
		kgo.RecordDeliveryTimeout(2*time.Minute))
	if err != nil {
		return err
	}
	defer cl.Close()
	const tick = 50 * time.Millisecond
	per := max(1, r.Cell.Rate*int(tick/time.Millisecond)/1000)
	t := time.NewTicker(tick)
	defer t.Stop()
	pad := strings.Repeat("x", 90)
	for i := 0; i < r.Cell.Records; {
		end := min(r.Cell.Records, i+per)
		var rs []*kgo.Record
		for ; i < end; i++ {
			rs = append(rs, &kgo.Record{Key: []byte("k" + strconv.Itoa(i)), Value: []byte(fmt.Sprintf("v%08d-%s", i, pad))})
		}
		if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			return fmt.Errorf("feeding record %d: %w", i, err)
		}
		r.fed.Store(int64(i))
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
