package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Percentile returns the p-th percentile (0 ≤ p ≤ 100) of xs by the
// nearest-rank method: the smallest value with at least p% of the values at
// or below it. It returns 0 for no values and does not modify xs.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return percentileSorted(s, p)
}

func percentileSorted(s []float64, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// Median returns the median of xs (the mean of the two middle values for an
// even count), 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Ratio returns a/b, or NaN when b is not positive.
func Ratio(a, b float64) float64 {
	if b <= 0 {
		return math.NaN()
	}
	return a / b
}

// Summary is what the benchmark publishes on its last line.
type Summary struct {
	AtLeastOnce   float64 // exactly at defaults ÷ the at-least-once loop
	GTS           float64 // exactly at defaults ÷ the GroupTransactSession loop
	KStreams      float64 // exactly at defaults ÷ Kafka Streams EOS v2, 1 thread
	AtLeastOnce1k float64 // exactly at MaxRecords 1,000 ÷ the at-least-once loop at 1,000
	P99ms         float64 // exactly's end-to-end p99 at defaults, ms
	PGRowsPerS    float64 // exactly Postgres mode, rows/s
	PGRaw         float64 // exactly Postgres mode ÷ the raw pgx loop
}

// LastLine formats s as the benchmark's last output line.
func (s Summary) LastLine() string {
	return fmt.Sprintf("bench: kafka/alo=%s kafka/gts=%s kafka/kstreams=%s kafka/alo_1k=%s p99_ms=%s postgres_rows_per_s=%s pg/raw=%s",
		fmtRatio(s.AtLeastOnce), fmtRatio(s.GTS), fmtRatio(s.KStreams), fmtRatio(s.AtLeastOnce1k),
		fmtInt(s.P99ms), fmtInt(s.PGRowsPerS), fmtRatio(s.PGRaw))
}

func fmtRatio(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", r)
}

func fmtInt(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f", v)
}

// Table is a markdown table: a header row and rows of cells.
type Table struct {
	Header []string
	Rows   [][]string
}

// Markdown renders t as a GitHub-flavoured markdown table with columns padded
// to equal width; the first column is left-aligned, the others right-aligned.
func (t Table) Markdown() string {
	widths := make([]int, len(t.Header))
	for i, h := range t.Header {
		widths[i] = max(len([]rune(h)), 3)
	}
	for _, r := range t.Rows {
		for i := range min(len(r), len(widths)) {
			widths[i] = max(widths[i], len([]rune(r[i])))
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for i, w := range widths {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			pad := strings.Repeat(" ", w-len([]rune(c)))
			if i == 0 {
				b.WriteString(" " + c + pad + " |")
			} else {
				b.WriteString(" " + pad + c + " |")
			}
		}
		b.WriteString("\n")
	}
	line(t.Header)
	b.WriteString("|")
	for i, w := range widths {
		if i == 0 {
			b.WriteString(" " + strings.Repeat("-", w) + " |")
		} else {
			b.WriteString(" " + strings.Repeat("-", w-1) + ": |")
		}
	}
	b.WriteString("\n")
	for _, r := range t.Rows {
		line(r)
	}
	return b.String()
}
