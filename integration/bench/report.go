package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ResultConfig records how a benchmark run was set up.
type ResultConfig struct {
	Records        int     `json:"records"`
	Sizes          []int   `json:"value_bytes"`
	Partitions     int     `json:"partitions"`
	Rounds         int     `json:"rounds"`
	Rate           int     `json:"latency_rate"`
	LatencySeconds float64 `json:"latency_seconds"`
	Started        string  `json:"started"`
	Took           string  `json:"took"`
}

// Results are every run of one benchmark invocation.
type Results struct {
	Config    ResultConfig `json:"config"`
	Runs      []Run        `json:"runs"`
	Latencies []Latency    `json:"latencies"`
}

// Row is one contender at one value size, aggregated over the rounds.
type Row struct {
	Contender   string  `json:"contender"`
	Size        int     `json:"value_bytes"`
	RecPerS     float64 `json:"records_per_s"`        // median over rounds
	SteadyPerS  float64 `json:"steady_records_per_s"` // median, first commit → done
	VsALO       float64 `json:"vs_alo"`               // median of this ÷ alo of the same round
	ExactlyOver float64 `json:"exactly_over"`         // median of exactly ÷ this, same round
	CPUus       float64 `json:"cpu_us_per_record"`
	CPUvsALO    float64 `json:"cpu_vs_alo"`
	RSSMB       float64 `json:"peak_rss_mb"` // max over rounds
	CommitP50   float64 `json:"commit_p50_ms"`
	CommitP99   float64 `json:"commit_p99_ms"`
	LatP50      float64 `json:"e2e_p50_ms"`
	LatP99      float64 `json:"e2e_p99_ms"`
	LatMax      float64 `json:"e2e_max_ms"`
	Disturbed   int     `json:"disturbed_runs"`
	Runs        int     `json:"runs"`
}

// Report is the aggregated result: rows, the markdown table, the summary.
type Report struct {
	Results  Results `json:"results"`
	Rows     []Row   `json:"rows"`
	Summary  Summary `json:"-"`
	LastLine string  `json:"last_line"`
	Markdown string  `json:"-"`
}

// baselineOf is the contender exactly's same-batch ratio is taken against.
func exactlyPeer(name string) string {
	switch name {
	case "alo_1k":
		return "exactly_1k"
	case "pgraw":
		return "exactly_pg"
	}
	return "exactly"
}

func aloPeer(name string) string {
	if strings.HasSuffix(name, "_1k") {
		return "alo_1k"
	}
	return "alo"
}

// Report aggregates r for the contenders cs (in their order) and sizes.
func (r Results) Report(cs []Contender, sizes []int) Report {
	type key struct {
		name        string
		size, round int
	}
	byKey := map[key]Run{}
	for _, run := range r.Runs {
		byKey[key{run.Contender, run.Size, run.Round}] = run
	}
	lat := map[string][]float64{}
	for _, l := range r.Latencies {
		lat[l.Contender] = append(lat[l.Contender], l.samples...)
	}
	rep := Report{Results: r}
	ratioOver := func(a, b string, size int) float64 {
		var xs []float64
		for round := range r.Config.Rounds {
			ra, oka := byKey[key{a, size, round}]
			rb, okb := byKey[key{b, size, round}]
			if oka && okb {
				xs = append(xs, Ratio(ra.RecPerS, rb.RecPerS))
			}
		}
		if len(xs) == 0 {
			return math.NaN()
		}
		return Median(xs)
	}
	cpuOver := func(a, b string, size int) float64 {
		var xs []float64
		for round := range r.Config.Rounds {
			ra, oka := byKey[key{a, size, round}]
			rb, okb := byKey[key{b, size, round}]
			if oka && okb {
				xs = append(xs, Ratio(ra.CPUSec, rb.CPUSec))
			}
		}
		if len(xs) == 0 {
			return math.NaN()
		}
		return Median(xs)
	}
	for _, size := range sizes {
		for _, c := range cs {
			var rates, steady, cpu, p50, p99 []float64
			row := Row{Contender: c.Name, Size: size}
			for round := range r.Config.Rounds {
				run, ok := byKey[key{c.Name, size, round}]
				if !ok {
					continue
				}
				row.Runs++
				rates = append(rates, run.RecPerS)
				if run.Steady > 0 {
					steady = append(steady, float64(run.Records)/run.Steady)
				}
				cpu = append(cpu, run.CPUSec*1e6/float64(run.Records))
				row.RSSMB = max(row.RSSMB, run.RSSMB)
				if run.CommitP99 > 0 {
					p50 = append(p50, run.CommitP50)
					p99 = append(p99, run.CommitP99)
				}
				if run.Disturbed {
					row.Disturbed++
				}
			}
			if row.Runs == 0 {
				continue
			}
			row.RecPerS, row.SteadyPerS, row.CPUus = Median(rates), Median(steady), Median(cpu)
			row.CommitP50, row.CommitP99 = Median(p50), Median(p99)
			if c.Family == "kafka" {
				row.VsALO = ratioOver(c.Name, aloPeer(c.Name), size)
				row.CPUvsALO = cpuOver(c.Name, aloPeer(c.Name), size)
			} else {
				row.VsALO, row.CPUvsALO = math.NaN(), math.NaN()
			}
			row.ExactlyOver = ratioOver(exactlyPeer(c.Name), c.Name, size)
			if s := lat[c.Name]; len(s) > 0 && size == sizes[0] {
				row.LatP50, row.LatP99, row.LatMax = Percentile(s, 50), Percentile(s, 99), Percentile(s, 100)
			}
			rep.Rows = append(rep.Rows, row)
		}
	}
	s0 := sizes[0]
	rep.Summary = Summary{
		AtLeastOnce:   ratioOver("exactly", "alo", s0),
		GTS:           ratioOver("exactly", "gts", s0),
		KStreams:      ratioOver("exactly", "kstreams_eos_1t", s0),
		AtLeastOnce1k: ratioOver("exactly_1k", "alo_1k", s0),
		P99ms:         math.NaN(),
		PGRowsPerS:    math.NaN(),
		PGRaw:         ratioOver("exactly_pg", "pgraw", s0),
	}
	if s := lat["exactly"]; len(s) > 0 {
		rep.Summary.P99ms = Percentile(s, 99)
	}
	for _, row := range rep.Rows {
		if row.Contender == "exactly_pg" && row.Size == s0 {
			rep.Summary.PGRowsPerS = row.RecPerS
		}
	}
	rep.LastLine = rep.Summary.LastLine()
	rep.Markdown = rep.table().Markdown()
	return rep
}

func f0(v float64) string {
	if math.IsNaN(v) || v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", v)
}

func f1(v float64) string {
	if math.IsNaN(v) || v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", v)
}

func f2(v float64) string {
	if math.IsNaN(v) || v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

func (rep Report) table() Table {
	t := Table{Header: []string{"contender", "value B", "rec/s", "steady rec/s", "÷ alo", "exactly ÷ it",
		"CPU µs/rec", "CPU ÷ alo", "peak RSS MB", "commit p50/p99 ms", "e2e p50/p99/max ms", "disturbed"}}
	for _, r := range rep.Rows {
		commit, e2e := "–", "–"
		if r.CommitP99 > 0 {
			commit = f1(r.CommitP50) + " / " + f1(r.CommitP99)
		}
		if r.LatP99 > 0 {
			e2e = f0(r.LatP50) + " / " + f0(r.LatP99) + " / " + f0(r.LatMax)
		}
		t.Rows = append(t.Rows, []string{r.Contender, fmt.Sprint(r.Size), f0(r.RecPerS), f0(r.SteadyPerS),
			f2(r.VsALO), f2(r.ExactlyOver), f1(r.CPUus), f2(r.CPUvsALO), f0(r.RSSMB), commit, e2e,
			fmt.Sprintf("%d/%d", r.Disturbed, r.Runs)})
	}
	return t
}

// Write writes results.json, results.md and results.png to dir.
func (rep Report) Write(dir string) error {
	rows := slices.Clone(rep.Rows)
	for i := range rows {
		for _, v := range []*float64{&rows[i].VsALO, &rows[i].ExactlyOver, &rows[i].CPUvsALO} {
			if math.IsNaN(*v) || math.IsInf(*v, 0) {
				*v = 0 // JSON has no NaN: 0 is "not applicable"
			}
		}
	}
	out := rep
	out.Rows = rows
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), data, 0o644); err != nil {
		return err
	}
	md := fmt.Sprintf("%d records per size, %d partitions, %d rounds, latency at %d rec/s for %.0f s per contender and round; took %s.\n\n%s\n%s\n",
		rep.Results.Config.Records, rep.Results.Config.Partitions, rep.Results.Config.Rounds, rep.Results.Config.Rate,
		rep.Results.Config.LatencySeconds, rep.Results.Config.Took, rep.Markdown, rep.LastLine)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	return rep.chart(filepath.Join(dir, "results.png"))
}
