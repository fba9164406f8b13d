package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/exactlyonce/exactly/internal/verify"
	"github.com/twmb/franz-go/pkg/kgo"
)

// By says how an output record is matched to its input record: by an
// identity both carry.
type By struct {
	kind string // "key", "header" or "json"
	name string // header name or JSON field path (dot separated)
}

// ParseBy parses "key", "header:<name>" or "json:<field>" (a dot-separated
// path into the record value, e.g. json:order.id).
func ParseBy(s string) (By, error) {
	kind, name, _ := strings.Cut(s, ":")
	switch {
	case kind == "key" && name == "":
		return By{kind: "key"}, nil
	case (kind == "header" || kind == "json") && name != "":
		return By{kind: kind, name: name}, nil
	}
	return By{}, fmt.Errorf("doctor: -by %q is not valid: use key, header:<name> or json:<field>", s)
}

// String returns the form ParseBy reads.
func (b By) String() string {
	if b.kind == "key" || b.kind == "" {
		return "key"
	}
	return b.kind + ":" + b.name
}

// ID returns r's identity under b.
func (b By) ID(r *kgo.Record) (string, error) {
	switch b.kind {
	case "", "key":
		if r.Key == nil {
			return "", errors.New("record has no key")
		}
		return string(r.Key), nil
	case "header":
		for _, h := range r.Headers {
			if h.Key == b.name {
				return string(h.Value), nil
			}
		}
		return "", fmt.Errorf("record has no header %q", b.name)
	case "json":
		var v any
		if err := json.Unmarshal(r.Value, &v); err != nil {
			return "", fmt.Errorf("value is not JSON: %v", err)
		}
		for _, part := range strings.Split(b.name, ".") {
			m, ok := v.(map[string]any)
			if !ok {
				return "", fmt.Errorf("value has no JSON field %q", b.name)
			}
			if v, ok = m[part]; !ok {
				return "", fmt.Errorf("value has no JSON field %q", b.name)
			}
		}
		switch x := v.(type) {
		case string:
			return x, nil
		case nil:
			return "", fmt.Errorf("JSON field %q is null", b.name)
		default:
			out, _ := json.Marshal(x) // numbers, bools, objects: their JSON text
			return string(out), nil
		}
	}
	return "", fmt.Errorf("doctor: unknown match kind %q", b.kind)
}

// Position is where a record is: a topic (or table) and its ordering domain
// there (a partition; 0 for a table read in order), and its offset (its
// position in the domain).
type Position struct {
	Where  string `json:"where"`
	Domain int32  `json:"domain"`
	Offset int64  `json:"offset"`
}

// String renders the position as topic[partition]@offset.
func (p Position) String() string { return fmt.Sprintf("%s[%d]@%d", p.Where, p.Domain, p.Offset) }

// Keyed is a record reduced to what the comparison needs: its position and
// its identity.
type Keyed struct {
	Pos Position
	ID  string
}

// VerifyReport is what Compare (and Verify) found.
type VerifyReport struct {
	By  string         `json:"by"`
	In  int            `json:"in"`
	Out map[string]int `json:"out"`
	// Duplicates: outputs beyond the number of inputs with that identity.
	Duplicates int `json:"duplicates"`
	// Missing: inputs with no output.
	Missing int `json:"missing"`
	// Unknown: outputs whose identity is no input's (or that have none).
	Unknown int `json:"unknown"`
	// OrderViolations: within one output domain, outputs of one input
	// partition whose input offsets do not increase.
	OrderViolations int `json:"order_violations"`
	// InputRepeats: input records whose identity an earlier input record
	// already had. Each is expected once more in the outputs; if the
	// repeats are not meant as separate records, pick a -by that is unique.
	InputRepeats int `json:"input_repeats"`
	// Problems are the first few problems, for humans.
	Problems []string `json:"problems"`
}

// OK reports whether the outputs are exact: no duplicates, no missing, no
// unknown outputs and no order violations.
func (r VerifyReport) OK() bool {
	return r.Duplicates == 0 && r.Missing == 0 && r.Unknown == 0 && r.OrderViolations == 0
}

// JSON returns the report as indented JSON.
func (r VerifyReport) JSON() ([]byte, error) { return json.MarshalIndent(r, "", "  ") }

// WriteText renders the report for a terminal.
func (r VerifyReport) WriteText(w io.Writer) error {
	verdict := "EXACT"
	if !r.OK() {
		verdict = "NOT EXACT"
	}
	var outs []string
	for t, n := range r.Out {
		outs = append(outs, fmt.Sprintf("%s=%d", t, n))
	}
	sort.Strings(outs)
	fmt.Fprintf(w, "%s (by %s): in=%d out=[%s] duplicates=%d missing=%d unknown=%d order_violations=%d input_repeats=%d\n",
		verdict, r.By, r.In, strings.Join(outs, " "), r.Duplicates, r.Missing, r.Unknown, r.OrderViolations, r.InputRepeats)
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
	return nil
}

// maxProblems bounds VerifyReport.Problems.
const maxProblems = 20

// Compare matches outputs to inputs by identity and counts what is not
// exact. Each output of an identity is assigned to the next input of that
// identity in input order, so an input identity seen k times is expected k
// times. It then applies the rules of internal/verify.Compare (whose
// matching is by source position instead): every input exactly once over
// all outputs, no output without an input, and within each output domain the
// outputs of one input partition in increasing input offset. Outputs must
// be in the order they were written within each (Where, Domain).
func Compare(inputs, outputs []Keyed) VerifyReport {
	rep := VerifyReport{In: len(inputs), Out: map[string]int{}}
	problem := func(format string, args ...any) {
		if len(rep.Problems) < maxProblems {
			rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
		}
	}
	byID := map[string][]int{} // identity -> indexes into inputs, in input order
	for i, in := range inputs {
		if len(byID[in.ID]) > 0 {
			rep.InputRepeats++
		}
		byID[in.ID] = append(byID[in.ID], i)
	}
	used := map[string]int{} // identity -> outputs assigned so far
	hits := make([]int, len(inputs))
	type dom struct {
		where   string
		domain  int32
		srcPart int32
		srcWhat string
	}
	last := map[dom]Position{}
	for _, o := range outputs {
		rep.Out[o.Pos.Where]++
		idx := byID[o.ID]
		if len(idx) == 0 {
			rep.Unknown++
			problem("unknown: %v has identity %q, which no input record has", o.Pos, o.ID)
			continue
		}
		n := used[o.ID]
		used[o.ID] = n + 1
		if n >= len(idx) {
			rep.Duplicates++
			problem("duplicate: %v repeats identity %q of input %v", o.Pos, o.ID, inputs[idx[len(idx)-1]].Pos)
			hits[idx[len(idx)-1]]++
			continue
		}
		src := inputs[idx[n]].Pos
		hits[idx[n]]++
		k := dom{o.Pos.Where, o.Pos.Domain, src.Domain, src.Where}
		if prev, ok := last[k]; ok && src.Offset <= prev.Offset {
			rep.OrderViolations++
			problem("order: in %s[%d] the output of input %v comes after the output of input %v", o.Pos.Where, o.Pos.Domain, src, prev)
		}
		last[k] = src
	}
	for i, n := range hits {
		if n == 0 {
			rep.Missing++
			problem("missing: no output for input %v (identity %q)", inputs[i].Pos, inputs[i].ID)
		}
	}
	return rep
}

// VerifyRequest describes a verification of Kafka topics.
type VerifyRequest struct {
	// Input is the input topic.
	Input string
	// Outputs are the output topics (outputs and dead letters), read with
	// read_committed.
	Outputs []string
	// By is how outputs are matched to inputs.
	By By
	// Timeout bounds reading each topic to its end. Default 60s.
	Timeout time.Duration
}

// Verify reads the input and the outputs with read_committed consumers
// from the start to their end offsets as they are when it begins, and
// compares them with Compare. clientOpts are the connection options
// (kgo.SeedBrokers, TLS, SASL). A record whose identity cannot be read
// counts as Unknown (outputs) or fails the verification (inputs, whose
// identity is the measure of everything else).
func Verify(ctx context.Context, clientOpts []kgo.Opt, req VerifyRequest) (VerifyReport, error) {
	if req.Input == "" {
		return VerifyReport{}, errors.New("doctor: no input topic to verify: pass -topic <input>")
	}
	if len(req.Outputs) == 0 {
		return VerifyReport{}, errors.New("doctor: no output topics to verify: pass -outputs a,b")
	}
	if req.Timeout <= 0 {
		req.Timeout = time.Minute
	}
	recs, err := ReadCommitted(ctx, clientOpts, req.Input, req.Timeout)
	if err != nil {
		return VerifyReport{}, err
	}
	inputs, bad := keyedRecords(recs, req.By)
	if len(bad) > 0 {
		return VerifyReport{}, fmt.Errorf("doctor: %d input record(s) have no identity by %s, e.g. %s: choose a -by every input record carries", len(bad), req.By, bad[0])
	}
	var outputs []Keyed
	var badOut []string
	badPer := map[string]int{}
	for _, t := range req.Outputs {
		recs, err := ReadCommitted(ctx, clientOpts, t, req.Timeout)
		if err != nil {
			return VerifyReport{}, err
		}
		ok, bad := keyedRecords(recs, req.By)
		outputs = append(outputs, ok...)
		badOut = append(badOut, bad...)
		badPer[t] += len(bad)
	}
	rep := Compare(inputs, outputs)
	rep.By = req.By.String()
	for _, t := range req.Outputs {
		if _, ok := rep.Out[t]; !ok {
			rep.Out[t] = 0
		}
	}
	rep.Unknown += len(badOut)
	for t, n := range badPer {
		rep.Out[t] += n
	}
	for _, b := range badOut {
		if len(rep.Problems) < maxProblems {
			rep.Problems = append(rep.Problems, "unknown: "+b)
		}
	}
	return rep, nil
}

// keyedRecords reduces records to Keyed; those without an identity are
// returned as descriptions.
func keyedRecords(recs []*kgo.Record, by By) ([]Keyed, []string) {
	var ok []Keyed
	var bad []string
	for _, r := range recs {
		pos := Position{Where: r.Topic, Domain: r.Partition, Offset: r.Offset}
		id, err := by.ID(r)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%v: %v", pos, err))
			continue
		}
		ok = append(ok, Keyed{Pos: pos, ID: id})
	}
	return ok, bad
}

// ReadCommitted reads every committed data record of topic, from the start
// to the end offsets as they are when it starts, with a read_committed
// consumer, in order per partition. If an open transaction keeps a
// partition's last stable offset below its end, it fails after timeout and
// names the partition. It is the reader of the framework's own verifier
// (internal/verify), so `exactly verify` and the tests read alike.
func ReadCommitted(ctx context.Context, clientOpts []kgo.Opt, topic string, timeout time.Duration) ([]*kgo.Record, error) {
	return verify.ReadAll(ctx, clientOpts, topic, timeout)
}
