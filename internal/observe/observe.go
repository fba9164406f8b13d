// Package observe holds what the metrics adapters (pipeline/promhooks,
// pipeline/otelhooks) share: the lists of abort reasons and states to
// pre-create series for, and a lag sampler fed by the committed offsets the
// pipeline's hooks report.
package observe

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/exactlyonce/exactly/pipeline"
	"github.com/exactlyonce/exactly/pipeline/doctor"
)

// AbortReasons are every pipeline.AbortReason, so an adapter can create a
// zero series for each before the first abort.
var AbortReasons = []pipeline.AbortReason{
	pipeline.AbortRebalance,
	pipeline.AbortStageError,
	pipeline.AbortRefused,
	pipeline.AbortTimeout,
	pipeline.AbortFenced,
	pipeline.AbortUnknownOutcome,
	pipeline.AbortShutdown,
	pipeline.AbortSinkError,
}

// States are every pipeline.State.
var States = []pipeline.State{
	pipeline.StateIdle,
	pipeline.StateStarting,
	pipeline.StateRunning,
	pipeline.StateRebalancing,
	pipeline.StateRetrying,
	pipeline.StateStopped,
}

// Defaults of LagConfig.
const (
	DefaultLagTimeout = 5 * time.Second
	DefaultLagMaxAge  = 5 * time.Second
)

// LagConfig configures a LagSampler.
type LagConfig struct {
	// Admin lists the topics' offsets. Required.
	Admin *kadm.Client
	// Topics to report. Empty: the topics the hooks have seen commits on.
	Topics []string
	// Committed, if set, is the committed offsets' source for a group (e.g.
	// doctor.KafkaCommitted), and every partition of the topics is
	// reported. Unset: the offsets the pipelines' commits reported, and
	// only the partitions a hook has seen a commit of.
	Committed func(ctx context.Context, group string) (doctor.Committed, error)
	// Timeout bounds one sample. Default DefaultLagTimeout.
	Timeout time.Duration
	// MaxAge is how long a sample is reused. Default DefaultLagMaxAge.
	MaxAge time.Duration
}

// LagSampler computes per-partition lag for every group it has seen,
// bounded in time. Observe is cheap (a map update under a mutex), so hooks
// can call it on Run's goroutine; Sample does the network calls, from a
// scrape or a reader's callback.
type LagSampler struct {
	cfg LagConfig

	mu      sync.Mutex
	offsets map[string]doctor.Committed // group → committed next offsets

	sem  chan struct{} // one sample at a time
	last Sample        // guarded by sem
}

// Sample is one lag sample of every group.
type Sample struct {
	At     time.Time
	Groups map[string]doctor.LagReport
	Err    error // the last sample's failure; Groups then holds the previous sample
}

// NewLagSampler returns a sampler; an error if cfg has no admin client.
func NewLagSampler(cfg LagConfig) (*LagSampler, error) {
	if cfg.Admin == nil {
		return nil, errors.New("lag: no admin client: pass kadm.NewClient(kgoClient)")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultLagTimeout
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultLagMaxAge
	}
	return &LagSampler{cfg: cfg, offsets: map[string]doctor.Committed{}, sem: make(chan struct{}, 1)}, nil
}

// Observe records the next offsets a commit of group reported. An offset
// never moves back: of two instances reporting one partition (one of them
// before a rebalance), the newer position wins.
func (s *LagSampler) Observe(group string, offsets map[string]map[int32]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.offsets[group]
	if c == nil {
		c = doctor.Committed{}
		s.offsets[group] = c
	}
	for t, ps := range offsets {
		for p, o := range ps {
			if cur, ok := c[t][p]; !ok || o > cur {
				c.Set(t, p, o)
			}
		}
	}
}

// Known registers group with no offsets yet, so that a sampler with a
// Committed source reports it before its first commit.
func (s *LagSampler) Known(group string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.offsets[group] == nil {
		s.offsets[group] = doctor.Committed{}
	}
}

// snapshot copies the observed offsets.
func (s *LagSampler) snapshot() map[string]doctor.Committed {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]doctor.Committed, len(s.offsets))
	for g, c := range s.offsets {
		cc := doctor.Committed{}
		for t, ps := range c {
			for p, o := range ps {
				cc.Set(t, p, o)
			}
		}
		out[g] = cc
	}
	return out
}

// Sample returns a sample at most MaxAge old, taking a new one (within
// Timeout, and within ctx) when the last is older. On failure it returns
// the previous sample's groups with Err set.
func (s *LagSampler) Sample(ctx context.Context) Sample {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	// Waiting for a sample in progress counts against the timeout too;
	// the waiter then gets that sample.
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return Sample{At: time.Now(), Err: fmt.Errorf("lag: waiting for the sample in progress: %w", ctx.Err())}
	}
	defer func() { <-s.sem }()
	if !s.last.At.IsZero() && s.last.Err == nil && time.Since(s.last.At) < s.cfg.MaxAge {
		return s.last
	}
	groups := map[string]doctor.LagReport{}
	var errs []error
	for g, observed := range s.snapshot() {
		rep, err := s.sampleGroup(ctx, g, observed)
		if err != nil {
			err = fmt.Errorf("lag of group %q: %w", g, err)
		}
		if err != nil {
			errs = append(errs, err)
			if prev, ok := s.last.Groups[g]; ok {
				groups[g] = prev
			}
			continue
		}
		groups[g] = rep
	}
	s.last = Sample{At: time.Now(), Groups: groups, Err: errors.Join(errs...)}
	return s.last
}

func (s *LagSampler) sampleGroup(ctx context.Context, group string, observed doctor.Committed) (doctor.LagReport, error) {
	committed, all := observed, false
	if s.cfg.Committed != nil {
		c, err := s.cfg.Committed(ctx, group)
		if err != nil {
			return doctor.LagReport{}, err
		}
		committed, all = c, true
	}
	topics := s.cfg.Topics
	if len(topics) == 0 {
		for t := range committed {
			topics = append(topics, t)
		}
		sort.Strings(topics)
	}
	if len(topics) == 0 {
		return doctor.LagReport{Group: group, At: time.Now()}, nil
	}
	rep, err := doctor.Lag(ctx, s.cfg.Admin, committed, topics...)
	if err != nil {
		return rep, err
	}
	rep.Group = group
	if !all {
		// Only partitions a commit was seen of: the others are another
		// instance's, whose position this process does not know.
		kept := rep.Partitions[:0]
		rep.Total = 0
		for _, p := range rep.Partitions {
			if p.Committed >= 0 {
				kept = append(kept, p)
				if p.Err == "" {
					rep.Total += p.Lag
				}
			}
		}
		rep.Partitions = kept
	}
	return rep, nil
}
