package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/exactlyonce/exactly/pipeline/doctor"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// exactly runs one command line and returns its exit status, stdout and
// stderr.
func exactly(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb)
	t.Logf("exactly %s -> %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
	return code, out.String(), errb.String()
}

// cluster starts a kfake cluster of n brokers and returns its addresses
// (comma separated) and an admin client.
func cluster(t *testing.T, n int) (string, *kadm.Client, []string) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(n))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return strings.Join(c.ListenAddrs(), ","), kadm.NewClient(cl), c.ListenAddrs()
}

// mkTopic creates a topic with partitions, rf and configs ("k=v").
func mkTopic(t *testing.T, adm *kadm.Client, name string, partitions int32, rf int16, kv ...string) {
	t.Helper()
	cfg := map[string]*string{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		cfg[k] = &v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := adm.CreateTopic(ctx, partitions, rf, cfg, name)
	require.NoError(t, err)
	require.NoError(t, r.Err, "creating %s: %s", name, r.ErrMessage)
}

// produceKeys writes records with the given keys to partition p of topic.
func produceKeys(t *testing.T, seeds []string, topic string, p int32, keys ...string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, k := range keys {
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Key: []byte(k), Value: []byte(`{"id":"` + k + `"}`)}).FirstErr())
	}
}

// TestDoctorCommand: exit codes with and without -strict, and -json.
func TestDoctorCommand(t *testing.T) {
	brokers, adm, _ := cluster(t, 3)
	mkTopic(t, adm, "weak", 1, 1)
	mkTopic(t, adm, "strong", 1, 3, "min.insync.replicas=2")

	code, out, errs := exactly(t, "doctor", "-brokers", brokers, "-topics", "weak", "-strict")
	require.Equal(t, exitFound, code)
	require.Contains(t, out, "RISK      replication-factor")
	require.Contains(t, out, "RISK      min-insync-replicas")
	require.Contains(t, errs, "risk(s) found (-strict)")

	code, _, _ = exactly(t, "doctor", "-brokers", brokers, "-topics", "weak")
	require.Equal(t, exitOK, code, "without -strict risks are reported, not fatal")

	code, out, _ = exactly(t, "doctor", "-brokers", brokers, "-topics", "strong", "-outputs", "strong", "-json", "-group", "g", "-txn-timeout", "20s", "-session-timeout", "15s", "-downtime", "1h")
	require.Equal(t, exitOK, code)
	var rep doctor.Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	tvs := rep.Find(doctor.CheckTxnVsSession)
	require.Len(t, tvs, 1)
	require.Equal(t, doctor.Risk, tvs[0].Severity, "20s transactions outlive 15s sessions")
	for _, f := range rep.Find(doctor.CheckReplicationFactor) {
		if f.Resource == "topic strong" {
			require.Equal(t, doctor.OK, f.Severity)
		}
	}
}

// TestDoctorUnreachableFailsFast: a closed port fails at once, naming the
// broker and the cause.
func TestDoctorUnreachableFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	start := time.Now()
	code, _, errs := exactly(t, "doctor", "-brokers", addr, "-topics", "x", "-timeout", "3s")
	require.Equal(t, exitError, code)
	require.Less(t, time.Since(start), 3*time.Second)
	require.Contains(t, errs, "cannot reach Kafka at "+addr)
	require.Contains(t, errs, "connection refused")
}

// TestUsageErrors: bad flags exit 2 with a message that names the flag.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "usage: exactly <command>"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"doctor"}, "-topics is required"},
		{[]string{"doctor", "-topics", "a", "b"}, `unexpected argument "b"`},
		{[]string{"doctor", "-topics", "a", "-downtime", "-1h"}, "-downtime -1h0m0s"},
		{[]string{"doctor", "-topics", "a", "-sasl-mechanism", "gssapi", "-sasl-user", "u"}, `-sasl-mechanism "gssapi" is not supported`},
		{[]string{"doctor", "-topics", "a", "-sasl-mechanism", "plain"}, "needs -sasl-user"},
		{[]string{"doctor", "-topics", "a", "-tls-cert", "c.pem"}, "-tls-cert and -tls-key go together"},
		{[]string{"doctor", "-topics", "a", "-tls-ca", "/nonexistent.pem"}, "-tls-ca"},
		{[]string{"doctor", "-topics", "a", "-brokers", " , "}, "-brokers is empty"},
		{[]string{"doctor", "-nope"}, "flag provided but not defined"},
		{[]string{"lag", "-topics", "a"}, "-group is required"},
		{[]string{"lag", "-group", "g"}, "-topics is required"},
		{[]string{"lag", "-topics", "a", "-group", "g", "-pg-table", "a.b.c"}, `-pg-table "a.b.c"`},
		{[]string{"verify", "-outputs", "b"}, "-topic is required"},
		{[]string{"verify", "-topic", "a"}, "-outputs is required"},
		{[]string{"verify", "-topic", "a", "-outputs", "b", "-by", "value"}, `-by "value" is not valid`},
		{[]string{"verify", "-topic", "a", "-sql", "select 1"}, "-pg and -sql go together"},
	} {
		code, _, errs := exactly(t, c.args...)
		require.Equal(t, exitError, code, "%v", c.args)
		require.Contains(t, errs, c.want, "%v", c.args)
	}
	code, out, _ := exactly(t, "help")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "doctor")
}

// TestLagCommand: the table, -json, a missing topic, and -watch flagging an
// open transaction under -strict.
func TestLagCommand(t *testing.T) {
	brokers, adm, seeds := cluster(t, 1)
	mkTopic(t, adm, "lag-in", 2, 1)
	produceKeys(t, seeds, "lag-in", 0, "a", "b", "c", "d")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := adm.CommitOffsets(ctx, "g", kadm.OffsetsFromRecords(kgo.Record{Topic: "lag-in", Partition: 0, Offset: 0}))
	require.NoError(t, err)

	code, out, _ := exactly(t, "lag", "-brokers", brokers, "-topics", "lag-in", "-group", "g")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "total lag 3 (group g, offsets from kafka")

	code, out, _ = exactly(t, "lag", "-brokers", brokers, "-topics", "lag-in", "-group", "g", "-json")
	require.Equal(t, exitOK, code)
	var rep doctor.LagReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Equal(t, int64(3), rep.Total)
	require.Equal(t, int64(1), rep.Partitions[0].Committed)

	code, _, errs := exactly(t, "lag", "-brokers", brokers, "-topics", "lag-nope", "-group", "g")
	require.Equal(t, exitError, code)
	require.Contains(t, errs, `topic "lag-nope" does not exist`)

	// An open transaction pins partition 1; -watch flags it once it has
	// been pinned longer than -hang-after.
	tx, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.TransactionalID("lag-cmd"), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionTimeout(time.Minute))
	require.NoError(t, err)
	defer tx.Close()
	require.NoError(t, tx.BeginTransaction())
	require.NoError(t, tx.ProduceSync(ctx, &kgo.Record{Topic: "lag-in", Partition: 1, Value: []byte("x")}).FirstErr())
	code, out, _ = exactly(t, "lag", "-brokers", brokers, "-topics", "lag-in", "-group", "g")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "run with -watch")
	code, out, errs = exactly(t, "lag", "-brokers", brokers, "-topics", "lag-in", "-group", "g", "-watch", "50ms", "-for", "1s", "-hang-after", "200ms", "-strict")
	require.Equal(t, exitFound, code)
	require.Contains(t, out, "WARN lag-in[1]: last stable offset 0 has stayed behind the high watermark 1")
	require.Contains(t, errs, "hanging transactions seen")
	require.NoError(t, tx.EndTransaction(ctx, kgo.TryAbort))
}

// TestVerifyCommand: exit 0 when exact, 1 on a planted duplicate, gap or
// reorder.
func TestVerifyCommand(t *testing.T) {
	brokers, adm, seeds := cluster(t, 1)
	for _, tp := range []string{"in", "exact", "dup", "gap", "reorder"} {
		mkTopic(t, adm, tp, 1, 1)
	}
	produceKeys(t, seeds, "in", 0, "a", "b", "c", "d")
	produceKeys(t, seeds, "exact", 0, "a", "b", "c", "d")
	produceKeys(t, seeds, "dup", 0, "a", "b", "b", "c", "d")
	produceKeys(t, seeds, "gap", 0, "a", "b", "d")
	produceKeys(t, seeds, "reorder", 0, "a", "c", "b", "d")

	code, out, _ := exactly(t, "verify", "-brokers", brokers, "-topic", "in", "-outputs", "exact")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "EXACT (by key): in=4 out=[exact=4]")
	code, out, _ = exactly(t, "verify", "-brokers", brokers, "-topic", "in", "-outputs", "dup", "-by", "json:id")
	require.Equal(t, exitFound, code)
	require.Contains(t, out, "duplicates=1")
	code, out, _ = exactly(t, "verify", "-brokers", brokers, "-topic", "in", "-outputs", "gap")
	require.Equal(t, exitFound, code)
	require.Contains(t, out, `missing: no output for input in[0]@2 (identity "c")`)
	code, out, _ = exactly(t, "verify", "-brokers", brokers, "-topic", "in", "-outputs", "reorder", "-json")
	require.Equal(t, exitFound, code)
	var rep doctor.VerifyReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Equal(t, 1, rep.OrderViolations)
	require.Zero(t, rep.Duplicates+rep.Missing)
}

// --- against the real services (skipped unless configured) ---

// unavailable skips the test, or fails it when EXACTLY_REQUIRE_SERVICES=1.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("EXACTLY_REQUIRE_SERVICES") == "1" {
		t.Fatalf("%s (EXACTLY_REQUIRE_SERVICES=1, so this fails instead of skipping)", msg)
	}
	t.Skip(msg)
}

// realAdmin returns the addresses in env and an admin client on them.
func realAdmin(t *testing.T, env string) (string, *kadm.Client) {
	t.Helper()
	addrs := os.Getenv(env)
	if addrs == "" {
		unavailable(t, "%s is not set; run `make services-up`", env)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := doctor.Dial(ctx, strings.Split(addrs, ","))
	if err != nil {
		unavailable(t, "%s: %v", env, err)
	}
	t.Cleanup(cl.Close)
	return addrs, kadm.NewClient(cl)
}

// realTopic creates a uniquely named topic, waits until every partition is
// led and in sync, and deletes it when the test ends.
func realTopic(t *testing.T, adm *kadm.Client, prefix string, rf int16, kv ...string) string {
	t.Helper()
	name := prefix + strconv.FormatUint(rand.Uint64(), 36)
	mkTopic(t, adm, name, 3, rf, kv...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopic(ctx, name)
	})
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		td, err := adm.ListTopics(ctx, name)
		cancel()
		require.NoError(t, err)
		ready := len(td[name].Partitions) == 3
		for _, p := range td[name].Partitions {
			ready = ready && p.Leader >= 0 && len(p.ISR) == int(rf)
		}
		if ready {
			return name
		}
		require.True(t, time.Now().Before(deadline), "topic %s never became ready", name)
		<-tick.C
	}
}

// TestAcceptanceRealBrokers is the acceptance of issue 12's doctor: the
// single RF-1 broker is a risk under -strict, the RF-3 / min-ISR-2 cluster
// is not.
func TestAcceptanceRealBrokers(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		brokers, adm := realAdmin(t, "EXACTLY_KAFKA_BROKERS")
		topic := realTopic(t, adm, "doctor-", 1)
		code, out, _ := exactly(t, "doctor", "-brokers", brokers, "-topics", topic, "-strict")
		require.Equal(t, exitFound, code)
		require.Regexp(t, `RISK +replication-factor +topic `+topic, out)
		require.Regexp(t, `RISK +min-insync-replicas +topic `+topic, out)
	})
	t.Run("cluster", func(t *testing.T) {
		brokers, adm := realAdmin(t, "EXACTLY_KAFKA_CLUSTER")
		topic := realTopic(t, adm, "doctor-", 3, "min.insync.replicas=2")
		code, out, _ := exactly(t, "doctor", "-brokers", brokers, "-topics", topic, "-strict")
		require.Equal(t, exitOK, code, out)
		require.Contains(t, out, "0 risk")
	})
}
