// Command kafkaready waits until a Kafka cluster answers real requests.
//
// scripts/kafka.sh builds and runs it after starting broker processes. It sends a
// Metadata request to every broker given with -brokers (each one directly, not just
// to whichever answers first) and succeeds once every one of them lists at least
// -expect live brokers. Optionally it then proves the cluster can do work
// (-check-topic: create, wait for a leader, delete) and waits until every
// partition's ISR is full again (-full-isr, used after a node restart).
//
// Exit codes: 0 ready, 1 not ready before -timeout, 2 bad usage, 3 a watched
// process (-pids) exited while we were waiting.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type config struct {
	brokers    []string
	timeout    time.Duration
	expect     int
	pids       []int
	checkTopic bool
	fullISR    bool
	quiet      bool
}

// errProcessGone is returned when one of the -pids exited.
var errProcessGone = errors.New("process exited")

func main() {
	var (
		cfg     config
		brokers string
		pids    string
	)
	flag.StringVar(&brokers, "brokers", "127.0.0.1:9092", "comma-separated broker addresses; each one must answer")
	flag.DurationVar(&cfg.timeout, "timeout", 90*time.Second, "give up after this long")
	flag.IntVar(&cfg.expect, "expect", 1, "minimum number of live brokers each broker must list in its metadata")
	flag.StringVar(&pids, "pids", "", "comma-separated pids of the broker processes; fail at once if one exits")
	flag.BoolVar(&cfg.checkTopic, "check-topic", false, "also create a topic (replication factor min(expect,3)), wait for its leader, and delete it")
	flag.BoolVar(&cfg.fullISR, "full-isr", false, "also wait until every partition (internal topics included) has its full ISR")
	flag.BoolVar(&cfg.quiet, "quiet", false, "print only errors")
	flag.Parse()

	cfg.brokers = splitList(brokers)
	if len(cfg.brokers) == 0 || cfg.expect < 1 || cfg.timeout <= 0 || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	for _, p := range splitList(pids) {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "kafkaready: bad pid %q\n", p)
			os.Exit(2)
		}
		cfg.pids = append(cfg.pids, n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "kafkaready: %v\n", err)
		if errors.Is(err, errProcessGone) {
			os.Exit(3)
		}
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func run(ctx context.Context, cfg config) error {
	start := time.Now()
	logf := func(format string, args ...any) {
		if !cfg.quiet {
			fmt.Printf("kafkaready: "+format+"\n", args...)
		}
	}

	cl, err := kgo.NewClient(
		kgo.SeedBrokers(cfg.brokers...),
		kgo.DialTimeout(2*time.Second),
		kgo.RequestTimeoutOverhead(5*time.Second),
		kgo.RetryTimeout(5*time.Second),
		kgo.MetadataMinAge(250*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	// wait polls fn until it returns nil, the context ends, or a watched process dies.
	wait := func(what string, fn func(context.Context) error) error {
		var last error
		for {
			if err := checkPids(cfg.pids); err != nil {
				return err
			}
			attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
			last = fn(attempt)
			cancel()
			if last == nil {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: not done after %s; last error: %v", what, cfg.timeout, last)
			case <-time.After(250 * time.Millisecond):
			}
		}
	}

	// 1. Every given broker answers Metadata listing >= expect brokers.
	var ids []int32
	err = wait(fmt.Sprintf("metadata from %s listing >= %d brokers", strings.Join(cfg.brokers, ","), cfg.expect),
		func(ctx context.Context) error {
			var err error
			ids, err = metadataFromEachSeed(ctx, cl, cfg.brokers, cfg.expect)
			return err
		})
	if err != nil {
		return err
	}
	logf("%d broker(s) up %v at %s after %s", len(ids), ids, strings.Join(cfg.brokers, ","), time.Since(start).Round(100*time.Millisecond))

	// 2. Version guess from ApiVersions (Kafka does not report its release over the wire).
	if !cfg.quiet {
		if guess, err := versionGuess(ctx, adm); err == nil {
			logf("broker version (guessed from ApiVersions): %s", guess)
		} else {
			logf("could not get ApiVersions: %v", err)
		}
	}

	// 3. Optionally create, use and delete a topic.
	if cfg.checkTopic {
		rf := min(cfg.expect, 3)
		topic := fmt.Sprintf("exactly-kafkaready-%d", time.Now().UnixNano())
		err = wait("create topic "+topic, func(ctx context.Context) error {
			return createTopic(ctx, adm, topic, int16(rf))
		})
		if err != nil {
			return err
		}
		err = wait("leader for "+topic, func(ctx context.Context) error {
			return topicHealthy(ctx, adm, topic)
		})
		if err != nil {
			return err
		}
		err = wait("delete topic "+topic, func(ctx context.Context) error {
			return deleteTopic(ctx, adm, topic)
		})
		if err != nil {
			return err
		}
		logf("created and deleted topic with replication factor %d", rf)
	}

	// 4. Optionally wait until no partition is under-replicated.
	if cfg.fullISR {
		err = wait("full ISR on all partitions", func(ctx context.Context) error {
			return allISRFull(ctx, adm)
		})
		if err != nil {
			return err
		}
		logf("all partitions have their full ISR")
	}
	logf("ready after %s", time.Since(start).Round(100*time.Millisecond))
	return nil
}

// checkPids reports errProcessGone if any pid no longer exists (or is a zombie).
func checkPids(pids []int) error {
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err != nil {
			return fmt.Errorf("pid %d: %w", pid, errProcessGone)
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			// Field 3 is the state; after the ")" that ends the command name.
			if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
				return fmt.Errorf("pid %d (zombie): %w", pid, errProcessGone)
			}
		}
	}
	return nil
}

// metadataFromEachSeed sends a Metadata request (no topics) to each seed broker and
// returns the live broker ids of the last answer once all list at least expect.
func metadataFromEachSeed(ctx context.Context, cl *kgo.Client, addrs []string, expect int) ([]int32, error) {
	var ids []int32
	seeds := cl.SeedBrokers()
	for i, b := range seeds {
		name := fmt.Sprintf("seed %d", i)
		if len(seeds) == len(addrs) {
			name = addrs[i]
		}
		req := kmsg.NewPtrMetadataRequest()
		req.Topics = []kmsg.MetadataRequestTopic{} // non-nil, empty: brokers only
		resp, err := b.Request(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		mr := resp.(*kmsg.MetadataResponse)
		ids = ids[:0]
		for _, br := range mr.Brokers {
			ids = append(ids, br.NodeID)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		if len(ids) < expect {
			return nil, fmt.Errorf("%s lists %d live broker(s) %v, want >= %d", name, len(ids), ids, expect)
		}
	}
	return ids, nil
}

func versionGuess(ctx context.Context, adm *kadm.Client) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	vs, err := adm.ApiVersions(ctx)
	if err != nil {
		return "", err
	}
	guesses := map[string]bool{}
	var out []string
	var lastErr error
	vs.Each(func(v kadm.BrokerApiVersions) {
		if v.Err != nil {
			lastErr = v.Err
			return
		}
		g := v.VersionGuess()
		if !guesses[g] {
			guesses[g] = true
			out = append(out, g)
		}
	})
	if len(out) == 0 {
		if lastErr == nil {
			lastErr = errors.New("no broker answered")
		}
		return "", lastErr
	}
	sort.Strings(out)
	return strings.Join(out, ", "), nil
}

func createTopic(ctx context.Context, adm *kadm.Client, topic string, rf int16) error {
	resp, err := adm.CreateTopic(ctx, 1, rf, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if errors.Is(err, kerr.TopicAlreadyExists) {
		return nil
	}
	return err
}

func topicHealthy(ctx context.Context, adm *kadm.Client, topic string) error {
	td, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return err
	}
	t, ok := td[topic]
	if !ok {
		return fmt.Errorf("topic %s not in metadata yet", topic)
	}
	if t.Err != nil {
		return t.Err
	}
	for _, p := range t.Partitions {
		if p.Err != nil {
			return p.Err
		}
		if p.Leader < 0 {
			return fmt.Errorf("partition %d has no leader", p.Partition)
		}
		if len(p.ISR) < len(p.Replicas) {
			return fmt.Errorf("partition %d: ISR %v of replicas %v", p.Partition, p.ISR, p.Replicas)
		}
	}
	return nil
}

func deleteTopic(ctx context.Context, adm *kadm.Client, topic string) error {
	resp, err := adm.DeleteTopic(ctx, topic)
	if err == nil {
		err = resp.Err
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return nil
	}
	return err
}

func allISRFull(ctx context.Context, adm *kadm.Client) error {
	td, err := adm.ListTopicsWithInternal(ctx)
	if err != nil {
		return err
	}
	var bad []string
	for _, t := range td.Sorted() {
		if t.Err != nil {
			return fmt.Errorf("topic %s: %w", t.Topic, t.Err)
		}
		for _, p := range t.Partitions.Sorted() {
			if p.Leader < 0 || len(p.ISR) < len(p.Replicas) {
				bad = append(bad, fmt.Sprintf("%s/%d (leader %d, isr %v, replicas %v)", t.Topic, p.Partition, p.Leader, p.ISR, p.Replicas))
			}
		}
	}
	if len(bad) > 0 {
		more := ""
		if len(bad) > 3 {
			more = fmt.Sprintf(" and %d more", len(bad)-3)
			bad = bad[:3]
		}
		return fmt.Errorf("under-replicated: %s%s", strings.Join(bad, "; "), more)
	}
	return nil
}
