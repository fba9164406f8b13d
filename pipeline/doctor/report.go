package doctor

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// Severity grades a Finding. The zero value is OK.
type Severity int

// The severities, from harmless to dangerous.
const (
	// OK: the setting is what exactly-once needs.
	OK Severity = iota
	// Info: nothing to change, but worth knowing (what a default means).
	Info
	// Warn: a weaker setting that opens a stall, or a loss only under
	// more than one fault.
	Warn
	// Risk: a single ordinary fault (one broker or disk lost, a pipeline
	// stopped too long, a paused instance) loses or duplicates records, or
	// the pipeline cannot run at all.
	Risk
)

var severityNames = [...]string{OK: "ok", Info: "info", Warn: "warn", Risk: "risk"}

// String returns "ok", "info", "warn" or "risk".
func (s Severity) String() string {
	if s < 0 || int(s) >= len(severityNames) {
		return fmt.Sprintf("severity(%d)", int(s))
	}
	return severityNames[s]
}

// MarshalText encodes the severity as its name, so JSON carries "risk"
// rather than 3.
func (s Severity) MarshalText() ([]byte, error) {
	if s < 0 || int(s) >= len(severityNames) {
		return nil, fmt.Errorf("doctor: severity %d is not one of ok, info, warn, risk", int(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText decodes a severity name ("ok", "info", "warn", "risk").
func (s *Severity) UnmarshalText(b []byte) error {
	for i, n := range severityNames {
		if n == string(b) {
			*s = Severity(i)
			return nil
		}
	}
	return fmt.Errorf("doctor: severity %q is not one of ok, info, warn, risk", b)
}

// Finding is the result of one check on one resource.
type Finding struct {
	// Check names the rule, e.g. "replication-factor" (docs/OPERATIONS.md
	// lists them all).
	Check string `json:"check"`
	// Resource is what was checked: "topic orders", "broker 1",
	// "brokers 1,2,3" or "pipeline".
	Resource string `json:"resource"`
	// Severity grades the finding.
	Severity Severity `json:"severity"`
	// Current is the value found, e.g. "1" or "retention.ms=3600000 (1h0m0s)".
	Current string `json:"current"`
	// Risk says, in words, which loss or duplicate scenario the current
	// value opens (or, for OK, why it is safe).
	Risk string `json:"risk"`
	// Fix is the exact change to make; empty when there is nothing to do.
	Fix string `json:"fix,omitempty"`
}

// Report is everything Check found, worst first.
type Report struct {
	// Brokers are the seed brokers' node ids as the cluster reported them.
	Brokers []int32 `json:"brokers"`
	// Findings, sorted by severity (worst first), then check and resource.
	Findings []Finding `json:"findings"`
}

// HasRisk reports whether any finding has Severity Risk.
func (r Report) HasRisk() bool { return r.Worst() == Risk }

// Worst returns the highest severity among the findings (OK when there are
// none).
func (r Report) Worst() Severity {
	w := OK
	for _, f := range r.Findings {
		if f.Severity > w {
			w = f.Severity
		}
	}
	return w
}

// Count returns how many findings have severity s.
func (r Report) Count(s Severity) int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == s {
			n++
		}
	}
	return n
}

// Find returns the findings of one check, in report order.
func (r Report) Find(check string) []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

// JSON returns the report as indented JSON; it is the same as
// json.MarshalIndent(r, "", "  ").
func (r Report) JSON() ([]byte, error) { return json.MarshalIndent(r, "", "  ") }

// WriteText renders the report as a table for a terminal: one line per
// finding with severity, check, resource and current value, followed by the
// risk and the fix of every finding that is not OK, and a summary line.
func (r Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tCHECK\tRESOURCE\tCURRENT")
	for _, f := range r.Findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", strings.ToUpper(f.Severity.String()), f.Check, f.Resource, f.Current)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	n := 0
	for _, f := range r.Findings {
		if f.Severity == OK {
			continue
		}
		if n == 0 {
			fmt.Fprintln(w)
		}
		n++
		fmt.Fprintf(w, "%d. [%s] %s on %s (current: %s)\n   risk: %s\n", n, f.Severity, f.Check, f.Resource, f.Current, f.Risk)
		if f.Fix != "" {
			fmt.Fprintf(w, "   fix:  %s\n", f.Fix)
		}
	}
	_, err := fmt.Fprintf(w, "\n%d risk, %d warn, %d info, %d ok\n", r.Count(Risk), r.Count(Warn), r.Count(Info), r.Count(OK))
	return err
}

// String is WriteText into a string.
func (r Report) String() string {
	var b strings.Builder
	_ = r.WriteText(&b) // a strings.Builder does not fail
	return b.String()
}

// sortFindings orders findings worst first, then by check and resource, and
// merges findings that differ only in the broker they are about into one
// ("brokers 1,2,3"), so a uniform cluster reports each broker setting once.
func sortFindings(fs []Finding) []Finding {
	type mkey struct {
		check, current, risk, fix string
		sev                       Severity
	}
	var out []Finding
	merged := map[mkey]int{}
	for _, f := range fs {
		if id, ok := strings.CutPrefix(f.Resource, "broker "); ok {
			k := mkey{f.Check, f.Current, f.Risk, f.Fix, f.Severity}
			if i, ok := merged[k]; ok {
				out[i].Resource = strings.Replace(out[i].Resource, "broker ", "brokers ", 1) + "," + id
				continue
			}
			merged[k] = len(out)
		}
		out = append(out, f)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Severity != b.Severity {
			return a.Severity > b.Severity
		}
		if a.Check != b.Check {
			return a.Check < b.Check
		}
		return a.Resource < b.Resource
	})
	return out
}
