package health_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/pipeline/health"
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
