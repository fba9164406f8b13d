package main

import (
	"math"
	"strings"
	"testing"
)

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, c := range []struct{ p, want float64 }{
		{0, 1}, {10, 1}, {50, 5}, {90, 9}, {99, 10}, {100, 10},
	} {
		if got := Percentile(xs, c.p); got != c.want {
			t.Errorf("Percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if xs[0] != 5 {
		t.Error("Percentile sorted its input")
	}
	if Percentile(nil, 50) != 0 {
		t.Error("Percentile of nothing is not 0")
	}
	if got := Percentile([]float64{42}, 99); got != 42 {
		t.Errorf("one value: %v", got)
	}
}

func TestMedianRatio(t *testing.T) {
	if got := Median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("odd median %v", got)
	}
	if got := Median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("even median %v", got)
	}
	if Median(nil) != 0 {
		t.Error("median of nothing")
	}
	if Ratio(3, 2) != 1.5 || !math.IsNaN(Ratio(1, 0)) {
		t.Error("Ratio")
	}
}

func TestLastLine(t *testing.T) {
	s := Summary{AtLeastOnce: 1.034, GTS: 1.5, KStreams: 6.789, AtLeastOnce1k: 0.971,
		P99ms: 123.4, PGRowsPerS: 512345.6, PGRaw: math.NaN()}
	want := "bench: kafka/alo=1.03 kafka/gts=1.50 kafka/kstreams=6.79 kafka/alo_1k=0.97 p99_ms=123 postgres_rows_per_s=512346 pg/raw=n/a"
	if got := s.LastLine(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestTableMarkdown(t *testing.T) {
	tb := Table{Header: []string{"contender", "rec/s"}, Rows: [][]string{{"alo", "1000"}, {"exactly", "12"}}}
	got := tb.Markdown()
	want := strings.Join([]string{
		"| contender | rec/s |",
		"| --------- | ----: |",
		"| alo       |  1000 |",
		"| exactly   |    12 |",
		"",
	}, "\n")
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
