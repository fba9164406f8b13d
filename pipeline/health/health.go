package health

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/exactlyonce/exactly/pipeline"
)

// Check is one pipeline to report on: a name (its instance id, say) and
// where to read its state, usually the pipeline's State method.
type Check struct {
	Name  string
	State func() pipeline.StateInfo
}

// Handler serves /healthz and /readyz for a set of pipelines; any other
// path is 404. Liveness and Readiness return the two handlers alone, for a
// mux of your own.
type Handler struct {
	checks []Check
	mux    *http.ServeMux
}

// New returns the handler for checks. With no checks, both probes succeed.
func New(checks ...Check) *Handler {
	h := &Handler{checks: checks, mux: http.NewServeMux()}
	h.mux.Handle("/healthz", h.Liveness())
	h.mux.Handle("/readyz", h.Readiness())
	return h
}

// For is New with one pipeline's state function (p.State).
func For(state func() pipeline.StateInfo) *Handler { return New(Check{State: state}) }

// ServeHTTP routes /healthz and /readyz.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Liveness is the /healthz handler: 200 unless a pipeline stopped with an
// error (its Run returned one: a fatal error, such as being fenced), then
// 503. A pipeline that is retrying is alive: it recovers on its own, and a
// restart would not help.
func (h *Handler) Liveness() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.serve(w, r, func(s pipeline.StateInfo) bool { return !(s.State == pipeline.StateStopped && s.Cause != nil) })
	})
}

// Readiness is the /readyz handler: 200 if every pipeline is ready
// (pipeline.StateInfo.Ready: running, or going through a rebalance), 503
// otherwise.
func (h *Handler) Readiness() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.serve(w, r, pipeline.StateInfo.Ready)
	})
}

// Report is the JSON body of both probes.
type Report struct {
	OK        bool     `json:"ok"`
	Pipelines []Status `json:"pipelines"`
}

// Status is one pipeline's part of a Report.
type Status struct {
	Name  string    `json:"name,omitempty"`
	OK    bool      `json:"ok"`    // this pipeline passes the probe
	State string    `json:"state"` // pipeline.State's name: running, retrying, ...
	Ready bool      `json:"ready"`
	Cause string    `json:"cause,omitempty"` // StateInfo.Cause's message
	Since time.Time `json:"since,omitzero"`
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, pass func(pipeline.StateInfo) bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	rep := Report{OK: true, Pipelines: []Status{}}
	for _, c := range h.checks {
		s := c.State()
		st := Status{Name: c.Name, OK: pass(s), State: s.State.String(), Ready: s.Ready(), Since: s.Since}
		if s.Cause != nil {
			st.Cause = s.Cause.Error()
		}
		rep.OK = rep.OK && st.OK
		rep.Pipelines = append(rep.Pipelines, st)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !rep.OK {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	if r.Method == http.MethodHead {
		return
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(rep)
}

// Tracker keeps the last state a pipeline reported through its
// HookStateChanged, for a program that builds the health handler before it
// has the pipeline, or has no access to it: pass the Tracker with
// pipeline.Hooks and its State method to a Check. Safe for concurrent use.
type Tracker struct {
	mu  sync.Mutex
	cur pipeline.StateInfo
}

// OnStateChanged implements pipeline.HookStateChanged.
func (t *Tracker) OnStateChanged(s pipeline.StateInfo) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cur = s
}

// State returns the last state reported; idle before the first.
func (t *Tracker) State() pipeline.StateInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur
}

var _ pipeline.HookStateChanged = (*Tracker)(nil)
