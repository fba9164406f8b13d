package doctor

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactlyonce/exactly/internal/verify"
)

// TestParseByAndID: the three matchings, and errors that say what to pass.
func TestParseByAndID(t *testing.T) {
	rec := &kgo.Record{
		Key:     []byte("k1"),
		Value:   []byte(`{"id":"o-7","n":42,"order":{"no":9}}`),
		Headers: []kgo.RecordHeader{{Key: "msg-id", Value: []byte("h-3")}},
	}
	for _, c := range []struct{ by, want string }{
		{"key", "k1"}, {"header:msg-id", "h-3"}, {"json:id", "o-7"}, {"json:n", "42"}, {"json:order.no", "9"},
	} {
		b, err := ParseBy(c.by)
		require.NoError(t, err, c.by)
		require.Equal(t, c.by, b.String())
		id, err := b.ID(rec)
		require.NoError(t, err, c.by)
		require.Equal(t, c.want, id, c.by)
	}
	for _, bad := range []string{"", "keys", "header:", "json", "key:x", "value"} {
		_, err := ParseBy(bad)
		require.ErrorContains(t, err, "use key, header:<name> or json:<field>", bad)
	}
	for _, c := range []struct{ by, want string }{
		{"header:nope", `no header "nope"`}, {"json:nope", `no JSON field "nope"`}, {"json:id.x", `no JSON field "id.x"`},
	} {
		b, _ := ParseBy(c.by)
		_, err := b.ID(rec)
		require.ErrorContains(t, err, c.want)
	}
	b, _ := ParseBy("json:id")
	_, err := b.ID(&kgo.Record{Value: []byte("not json")})
	require.ErrorContains(t, err, "not JSON")
	_, err = By{}.ID(&kgo.Record{})
	require.ErrorContains(t, err, "no key")
}

// keyed builds n inputs of partition p of "in" with ids p-0..p-(n-1).
func inputsOf(p int32, n int) []Keyed {
	var out []Keyed
	for i := range n {
		out = append(out, Keyed{Pos: Position{Where: "in", Domain: p, Offset: int64(i)}, ID: fmt.Sprintf("%d-%d", p, i)})
	}
	return out
}

// outputsOf maps inputs to outputs in partition 0 of "out", in order.
func outputsOf(in []Keyed) []Keyed {
	var out []Keyed
	for i, k := range in {
		out = append(out, Keyed{Pos: Position{Where: "out", Domain: 0, Offset: int64(i)}, ID: k.ID})
	}
	return out
}

// TestComparePlanted: a planted duplicate, gap, reorder and unknown output
// are each reported, and only they.
func TestComparePlanted(t *testing.T) {
	in := append(inputsOf(0, 5), inputsOf(1, 5)...)
	exact := Compare(in, outputsOf(in))
	require.True(t, exact.OK(), "%+v", exact)
	require.Equal(t, 10, exact.In)
	require.Equal(t, 10, exact.Out["out"])

	dup := outputsOf(in)
	dup = append(dup[:3], append([]Keyed{dup[2]}, dup[3:]...)...) // 0-2 twice
	rep := Compare(in, dup)
	require.False(t, rep.OK())
	require.Equal(t, 1, rep.Duplicates)
	require.Zero(t, rep.Missing)
	require.Zero(t, rep.OrderViolations)
	require.Contains(t, rep.Problems[0], `repeats identity "0-2" of input in[0]@2`)

	gap := outputsOf(in)
	gap = append(gap[:6], gap[7:]...) // 1-1 never written
	rep = Compare(in, gap)
	require.Equal(t, 1, rep.Missing)
	require.Zero(t, rep.Duplicates)
	require.Contains(t, rep.Problems[0], `missing: no output for input in[1]@1 (identity "1-1")`)

	re := outputsOf(in)
	re[1], re[2] = re[2], re[1] // 0-2 before 0-1
	rep = Compare(in, re)
	require.Equal(t, 1, rep.OrderViolations)
	require.Zero(t, rep.Duplicates+rep.Missing)
	require.Contains(t, rep.Problems[0], "order: in out[0] the output of input in[0]@1 comes after the output of input in[0]@2")

	// Outputs of different input partitions may interleave freely.
	mixed := outputsOf(append(inputsOf(1, 5), inputsOf(0, 5)...))
	require.True(t, Compare(in, mixed).OK())

	unknown := append(outputsOf(in), Keyed{Pos: Position{Where: "out", Offset: 10}, ID: "zz"})
	require.Equal(t, 1, Compare(in, unknown).Unknown)
}

// TestCompareRepeatedInputIDs: an identity the input carries twice is
// expected twice.
func TestCompareRepeatedInputIDs(t *testing.T) {
	in := []Keyed{{Pos: Position{"in", 0, 0}, ID: "a"}, {Pos: Position{"in", 0, 1}, ID: "a"}, {Pos: Position{"in", 0, 2}, ID: "b"}}
	rep := Compare(in, outputsOf(in))
	require.True(t, rep.OK(), "%+v", rep)
	require.Equal(t, 1, rep.InputRepeats)
	rep = Compare(in, outputsOf(in[1:]))
	require.Equal(t, 1, rep.Missing)
	rep = Compare(in, outputsOf(append(in, in[0])))
	require.Equal(t, 1, rep.Duplicates)
}

// TestCompareAgreesWithInternalVerify: with one identity per input record,
// Compare counts exactly what internal/verify.Compare counts on the same
// data matched by source position. doctor keeps its own copy of the rules
// only because internal/verify imports the sinks package, and with it pgx.
func TestCompareAgreesWithInternalVerify(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		in := append(inputsOf(0, 1+rng.IntN(20)), inputsOf(1, 1+rng.IntN(20))...)
		var outs []Keyed
		for _, k := range in {
			switch rng.IntN(12) {
			case 0: // drop
			case 1: // duplicate
				outs = append(outs, k, k)
			default:
				outs = append(outs, k)
			}
		}
		for range rng.IntN(3) { // a few swaps
			if len(outs) > 1 {
				i, j := rng.IntN(len(outs)), rng.IntN(len(outs))
				outs[i], outs[j] = outs[j], outs[i]
			}
		}
		if rng.IntN(5) == 0 {
			outs = append(outs, Keyed{ID: "unknown"})
		}
		// Two output partitions, split by position.
		var ours []Keyed
		var theirs []verify.Output
		byID := map[string]Position{}
		for _, k := range in {
			byID[k.ID] = k.Pos
		}
		for i, o := range outs {
			dom := int32(i % 2)
			ours = append(ours, Keyed{Pos: Position{Where: "out", Domain: dom, Offset: int64(i)}, ID: o.ID})
			src := verify.Source{Topic: "?", Partition: -1, Offset: -1}
			if p, ok := byID[o.ID]; ok {
				src = verify.Source{Topic: p.Where, Partition: p.Domain, Offset: p.Offset}
			}
			theirs = append(theirs, verify.Output{Where: "out", Domain: dom, Source: src})
		}
		var srcs []verify.Source
		for _, k := range in {
			srcs = append(srcs, verify.Source{Topic: k.Pos.Where, Partition: k.Pos.Domain, Offset: k.Pos.Offset})
		}
		a, b := Compare(in, ours), verify.Compare(srcs, theirs)
		msg := "round " + strconv.Itoa(round)
		require.Equal(t, b.Duplicates, a.Duplicates, msg)
		require.Equal(t, b.Missing, a.Missing, msg)
		require.Equal(t, b.Unknown, a.Unknown, msg)
		require.Equal(t, b.OrderViolations, a.OrderViolations, msg)
		require.Equal(t, b.OK(), a.OK(), msg)
	}
}

// TestVerifyOnKfake plants a duplicate, a gap and a reorder in real topics
// and checks that Verify reports each, by key, by header and by JSON field.
func TestVerifyOnKfake(t *testing.T) {
	_, adm, seeds := fake(t, 1)
	for _, tp := range []string{"v-in", "v-exact", "v-dup", "v-gap", "v-reorder", "v-tx", "v-noid"} {
		create(t, adm, tp, 2, 1)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer cl.Close()
	rec := func(topic string, p int32, id string) *kgo.Record {
		return &kgo.Record{Topic: topic, Partition: p, Key: []byte(id),
			Headers: []kgo.RecordHeader{{Key: "id", Value: []byte(id)}},
			Value:   []byte(`{"id":"` + id + `"}`)}
	}
	var ids [2][]string
	for p := range int32(2) {
		for i := range 6 {
			id := fmt.Sprintf("p%d-%d", p, i)
			ids[p] = append(ids[p], id)
			require.NoError(t, cl.ProduceSync(ctxT(t), rec("v-in", p, id)).FirstErr())
		}
	}
	write := func(topic string, p int32, list ...string) {
		for _, id := range list {
			require.NoError(t, cl.ProduceSync(ctxT(t), rec(topic, p, id)).FirstErr())
		}
	}
	write("v-exact", 0, ids[0]...)
	write("v-exact", 1, ids[1]...)
	write("v-dup", 0, ids[0]...)
	write("v-dup", 1, append(ids[1][:3:3], append([]string{ids[1][2]}, ids[1][3:]...)...)...)
	write("v-gap", 0, append(ids[0][:2:2], ids[0][3:]...)...)
	write("v-gap", 1, ids[1]...)
	write("v-reorder", 0, ids[0][0], ids[0][2], ids[0][1], ids[0][3], ids[0][4], ids[0][5])
	write("v-reorder", 1, ids[1]...)

	opts := []kgo.Opt{kgo.SeedBrokers(seeds...)}
	for _, byS := range []string{"key", "header:id", "json:id"} {
		by, err := ParseBy(byS)
		require.NoError(t, err)
		check := func(out string) VerifyReport {
			rep, err := Verify(ctxT(t), opts, VerifyRequest{Input: "v-in", Outputs: []string{out}, By: by})
			require.NoError(t, err)
			return rep
		}
		rep := check("v-exact")
		require.True(t, rep.OK(), "%s: %+v", byS, rep)
		require.Equal(t, 12, rep.In)
		rep = check("v-dup")
		require.Equal(t, 1, rep.Duplicates, byS)
		require.False(t, rep.OK())
		rep = check("v-gap")
		require.Equal(t, 1, rep.Missing, byS)
		require.Contains(t, rep.Problems[0], "v-in[0]@2")
		rep = check("v-reorder")
		require.Equal(t, 1, rep.OrderViolations, byS)
	}

	// Aborted transactions are not outputs (read_committed): an exact copy
	// plus an aborted duplicate is still exact.
	write("v-tx", 0, ids[0]...)
	write("v-tx", 1, ids[1]...)
	tx, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.TransactionalID("doctor-verify"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer tx.Close()
	require.NoError(t, tx.BeginTransaction())
	require.NoError(t, tx.ProduceSync(ctxT(t), rec("v-tx", 0, ids[0][0])).FirstErr())
	require.NoError(t, tx.EndTransaction(ctxT(t), kgo.TryAbort))
	rep, err := Verify(ctxT(t), opts, VerifyRequest{Input: "v-in", Outputs: []string{"v-tx"}, By: By{}})
	require.NoError(t, err)
	require.True(t, rep.OK(), "%+v", rep)

	// An output without the identity is unknown.
	write("v-noid", 0, ids[0]...)
	write("v-noid", 1, ids[1]...)
	require.NoError(t, cl.ProduceSync(ctxT(t), &kgo.Record{Topic: "v-noid", Partition: 1, Value: []byte("x")}).FirstErr())
	by, _ := ParseBy("header:id")
	rep, err = Verify(ctxT(t), opts, VerifyRequest{Input: "v-in", Outputs: []string{"v-noid"}, By: by})
	require.NoError(t, err)
	require.Equal(t, 1, rep.Unknown)
	require.Equal(t, 13, rep.Out["v-noid"])
	require.Contains(t, rep.Problems[0], `v-noid[1]@6: record has no header "id"`)

	// Inputs without the identity fail the verification.
	by, _ = ParseBy("json:nope")
	_, err = Verify(ctxT(t), opts, VerifyRequest{Input: "v-in", Outputs: []string{"v-exact"}, By: by})
	require.ErrorContains(t, err, `no JSON field "nope"`)
	_, err = Verify(ctxT(t), opts, VerifyRequest{Input: "v-in"})
	require.ErrorContains(t, err, "-outputs")
}
