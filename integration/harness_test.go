package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// harnessTopic creates a fresh topic and deletes it when the test ends.
func harnessTopic(t *testing.T, brokers []string, rf int16) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	topic := fmt.Sprintf("harness-%s-%d", t.Name(), time.Now().UnixNano())
	resp, err := adm.CreateTopic(ctx, 1, rf, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		cl.Close()
		t.Fatalf("create topic %s: %v", topic, err)
	}
	t.Cleanup(func() {
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := adm.DeleteTopic(ctx, topic); err != nil {
			t.Logf("delete topic %s: %v", topic, err)
		}
	})
	return topic
}

func produceOne(t *testing.T, brokers []string, topic, value string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(value)}).FirstErr(); err != nil {
		t.Fatalf("produce to %s: %v", topic, err)
	}
}

// consumeN reads the first n records of topic from the start.
func consumeN(t *testing.T, brokers []string, topic string, n int) []string {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var got []string
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records from %s: %v", len(got), n, topic, err)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Logf("fetch %s/%d: %v", topic, p, err)
		})
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	return got
}

func TestHarnessKafkaRoundTrip(t *testing.T) {
	brokers := Brokers(t)
	t.Logf("Kafka at %v, version %s", brokers, BrokerVersion(t, brokers))
	topic := harnessTopic(t, brokers, 1)
	want := fmt.Sprintf("hello %d", time.Now().UnixNano())
	produceOne(t, brokers, topic, want)
	if got := consumeN(t, brokers, topic, 1); got[0] != want {
		t.Fatalf("consumed %q, want %q", got[0], want)
	}
}

func TestHarnessPostgres(t *testing.T) {
	url := PGURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var one int
	if err := conn.QueryRow(ctx, "select 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	if one != 1 {
		t.Fatalf("select 1 returned %d", one)
	}
	var version string
	if err := conn.QueryRow(ctx, "show server_version").Scan(&version); err == nil {
		t.Logf("PostgreSQL %s", version)
	}
}

// TestHarnessClusterBounce kills the leader of an RF=3 partition, produces with
// acks=all while it is down (min.insync.replicas=2 still holds), starts it again,
// and reads everything back.
func TestHarnessClusterBounce(t *testing.T) {
	brokers := ClusterBrokers(t)
	t.Logf("Kafka cluster at %v, version %s", brokers, BrokerVersion(t, brokers))
	topic := harnessTopic(t, brokers, 3)
	produceOne(t, brokers, topic, "before")

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	td, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	leader := int(td[topic].Partitions[0].Leader)
	if leader < 1 || leader > 3 {
		t.Fatalf("unexpected leader %d for %s/0", leader, topic)
	}

	KillBroker(t, leader)
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			StartBroker(t, leader)
		}
	})
	produceOne(t, brokers, topic, "while-down")
	StartBroker(t, leader)
	restarted = true
	produceOne(t, brokers, topic, "after")

	got := consumeN(t, brokers, topic, 3)
	want := []string{"before", "while-down", "after"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("consumed %q, want %q", got, want)
		}
	}
}
