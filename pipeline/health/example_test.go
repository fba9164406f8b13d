package health_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/pipeline/health"
	"github.com/exactlyonce/exactly/sinks"
	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// Probes for a pipeline: pass p.State (here a stand-in) and serve the
// handler, e.g. next to /metrics.
func Example() {
	state := func() pipeline.StateInfo { // p.State
		return pipeline.StateInfo{State: pipeline.StateRetrying, Since: time.Now()}
	}
	mux := http.NewServeMux()
	mux.Handle("/", health.New(health.Check{Name: "worker-0", State: state}))
	// go http.ListenAndServe("127.0.0.1:9464", mux)

	for _, path := range []string{"/healthz", "/readyz"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		fmt.Println(path, rec.Code)
	}
	// Output:
	// /healthz 200
	// /readyz 503
}

// The probes of a real pipeline, next to its metrics: p.State is the
// state function.
func Example_pipeline() {
	stage := pipeline.StageFunc[*kafkasink.Writer](func(ctx context.Context, b *sinks.Batch, w *kafkasink.Writer) error {
		for _, r := range b.Records {
			w.Produce(&kgo.Record{Topic: "orders-out", Key: r.Key, Value: r.Value})
		}
		return nil
	})
	p, err := pipeline.New(kafkasink.New(), stage,
		pipeline.Brokers("127.0.0.1:9092"),
		pipeline.Group("orders"),
		pipeline.Topics("orders"),
		pipeline.InstanceID("worker-0"),
	)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	probes := health.New(health.Check{Name: "worker-0", State: p.State})
	mux.Handle("/healthz", probes)
	mux.Handle("/readyz", probes)
	srv := &http.Server{Addr: "127.0.0.1:9464", Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { log.Print(srv.ListenAndServe()) }()
	defer srv.Close()
	_ = p // p.Run(ctx) until shutdown
}
