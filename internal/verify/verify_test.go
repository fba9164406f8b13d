package verify

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func src(p int32, o int64) Source { return Source{Topic: "in", Partition: p, Offset: o} }

func TestCompare(t *testing.T) {
	in := []Source{src(0, 0), src(0, 1), src(0, 2), src(1, 0), src(1, 1)}
	out := func(domain int32, ss ...Source) []Output {
		var os []Output
		for _, s := range ss {
			os = append(os, Output{Where: "out", Domain: domain, Source: s})
		}
		return os
	}
	cases := []struct {
		name                                    string
		outputs                                 []Output
		duplicates, missing, unknown, disorders int
	}{
		{"exact", append(out(0, src(0, 0), src(1, 0), src(0, 1)), out(1, src(0, 2), src(1, 1))...), 0, 0, 0, 0},
		{"duplicate", out(0, src(0, 0), src(0, 1), src(0, 1), src(0, 2), src(1, 0), src(1, 1)), 1, 0, 0, 0},
		{"missing", out(0, src(0, 0), src(0, 2), src(1, 0), src(1, 1)), 0, 1, 0, 0},
		{"unknown", out(0, src(0, 0), src(0, 1), src(0, 2), src(1, 0), src(1, 1), src(7, 7)), 0, 0, 1, 0},
		{"reordered", out(0, src(0, 1), src(0, 0), src(0, 2), src(1, 0), src(1, 1)), 0, 0, 0, 1},
		// Order only matters within one output domain.
		{"other domain", append(out(0, src(0, 1), src(1, 0), src(1, 1)), out(1, src(0, 0), src(0, 2))...), 0, 0, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Compare(in, tc.outputs)
			require.Equal(t, tc.duplicates, r.Duplicates, "%v", r)
			require.Equal(t, tc.missing, r.Missing, "%v", r)
			require.Equal(t, tc.unknown, r.Unknown, "%v", r)
			require.Equal(t, tc.disorders, r.OrderViolations, "%v", r)
			require.Equal(t, tc.name == "exact" || tc.name == "other domain", r.OK())
		})
	}
}
