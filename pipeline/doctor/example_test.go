package doctor_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/pipeline/doctor"
)

// Check a pipeline's topics before running it, and refuse to start when
// anything could lose records. Here the cluster is an in-process kfake and
// the input topic has one replica.
func ExampleCheck() {
	c, err := kfake.NewCluster(kfake.NumBrokers(3))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	cl, err := doctor.Dial(ctx, c.ListenAddrs())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, "orders"); err != nil {
		fmt.Println(err)
		return
	}

	rep, err := doctor.Check(ctx, cl, doctor.Request{Inputs: []string{"orders"}, Group: "billing"})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range rep.Find(doctor.CheckReplicationFactor) {
		if f.Resource == "topic orders" {
			fmt.Printf("%s %s on %s: %s\n", f.Severity, f.Check, f.Resource, f.Current)
		}
	}
	fmt.Println("has risk:", rep.HasRisk())
	// Output:
	// risk replication-factor on topic orders: 1
	// has risk: true
}

// Compare works on identities from any source: here a table's rows (the
// order of an "order by seq" query) against input records.
func ExampleCompare() {
	in := []doctor.Keyed{
		{Pos: doctor.Position{Where: "orders", Domain: 0, Offset: 0}, ID: "o-1"},
		{Pos: doctor.Position{Where: "orders", Domain: 0, Offset: 1}, ID: "o-2"},
		{Pos: doctor.Position{Where: "orders", Domain: 0, Offset: 2}, ID: "o-3"},
	}
	rows := []doctor.Keyed{
		{Pos: doctor.Position{Where: "sql", Offset: 0}, ID: "o-1"},
		{Pos: doctor.Position{Where: "sql", Offset: 1}, ID: "o-1"},
		{Pos: doctor.Position{Where: "sql", Offset: 2}, ID: "o-3"},
	}
	rep := doctor.Compare(in, rows)
	rep.By = "json:id"
	_ = rep.WriteText(os.Stdout)
	// Output:
	// NOT EXACT (by json:id): in=3 out=[sql=3] duplicates=1 missing=1 unknown=0 order_violations=0 input_repeats=0
	//   duplicate: sql[0]@1 repeats identity "o-1" of input orders[0]@0
	//   missing: no output for input orders[0]@1 (identity "o-2")
}

// Lag with committed offsets from anywhere — here a map, as Postgres mode
// would read it from its offsets table.
func ExampleLag() {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "events"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("events"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cl.Close()
	for range 5 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("e")}).FirstErr(); err != nil {
			fmt.Println(err)
			return
		}
	}
	committed := doctor.Committed{}
	committed.Set("events", 0, 2)
	rep, err := doctor.Lag(ctx, kadm.NewClient(cl), committed, "events")
	if err != nil {
		fmt.Println(err)
		return
	}
	p := rep.Partitions[0]
	fmt.Printf("committed %d, end %d, stable %d, lag %d\n", p.Committed, p.End, p.Stable, p.Lag)
	// Output:
	// committed 2, end 5, stable 5, lag 3
}
