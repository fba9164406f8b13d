package pipeline

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/pipeline/doctor"
)

// PreflightPolicy says what Run does with the loss risks that the doctor
// (package pipeline/doctor, the same checks as `exactly doctor`) finds in the
// cluster before the pipeline starts: replication factor, min.insync.replicas,
// unclean leader election, retention, the transaction timeout against the
// broker's limits, and more.
type PreflightPolicy int

const (
	// PreflightWarn logs each risk and warning at WARN, with the current
	// value and the fix, and starts. The default.
	PreflightWarn PreflightPolicy = iota
	// PreflightRefuse makes Run return a *PreflightError when any finding
	// is a risk, before it joins the group.
	PreflightRefuse
	// PreflightOff skips the check.
	PreflightOff
)

// Preflight sets the preflight policy. Default PreflightWarn.
func Preflight(p PreflightPolicy) Opt { return opt(func(c *config) { c.preflight = p }) }

// Outputs names the topics the Stage writes (outputs and dead letters), so
// the preflight check covers them too. Optional: the pipeline cannot know
// them otherwise.
func Outputs(topics ...string) Opt {
	return opt(func(c *config) { c.outputs = append(c.outputs, topics...) })
}

// preflightTimeout bounds the check: it never holds a start up for long.
const preflightTimeout = 10 * time.Second

// PreflightError is the refusal of PreflightRefuse: the risks found.
type PreflightError struct {
	Risks []doctor.Finding
}

// Error lists each risk with its current value and fix.
func (e *PreflightError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pipeline: the cluster has %d loss risk(s) and the preflight policy refuses to start (pipeline.Preflight(pipeline.PreflightWarn) starts anyway):", len(e.Risks))
	for _, f := range e.Risks {
		fmt.Fprintf(&b, "\n  %s on %s: %s (now %s); fix: %s", f.Check, f.Resource, f.Risk, f.Current, f.Fix)
	}
	return b.String()
}

// preflight runs the doctor's checks and applies the policy.
func (p *Pipeline[W]) preflight(ctx context.Context) error {
	if p.cfg.preflight == PreflightOff {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, min(preflightTimeout, p.cfg.startTimeout))
	defer cancel()
	cl, err := kgo.NewClient(p.cfg.connOpts()...)
	if err == nil {
		defer cl.Close()
		var rep doctor.Report
		rep, err = doctor.Check(ctx, cl, doctor.Request{
			Inputs: p.cfg.topics, Outputs: p.cfg.outputs, Group: p.cfg.group,
			TransactionTimeout: p.cfg.txnTimeout, SessionTimeout: p.cfg.sessTimeout,
		})
		if err == nil {
			return p.applyPreflight(rep)
		}
	}
	if p.cfg.preflight == PreflightRefuse {
		return fmt.Errorf("pipeline: the preflight check could not run (pipeline.Preflight(pipeline.PreflightWarn) starts anyway): %w", err)
	}
	p.log.Warn("the preflight check of the cluster's loss risks could not run; starting anyway", "err", err)
	return nil
}

func (p *Pipeline[W]) applyPreflight(rep doctor.Report) error {
	var risks []doctor.Finding
	for _, f := range rep.Findings {
		switch f.Severity {
		case doctor.Risk:
			risks = append(risks, f)
			p.log.Warn("durability risk: "+f.Risk, "check", f.Check, "resource", f.Resource, "current", f.Current, "fix", f.Fix)
		case doctor.Warn:
			p.log.Warn("durability warning: "+f.Risk, "check", f.Check, "resource", f.Resource, "current", f.Current, "fix", f.Fix)
		}
	}
	if len(risks) > 0 && p.cfg.preflight == PreflightRefuse {
		return &PreflightError{Risks: risks}
	}
	return nil
}
