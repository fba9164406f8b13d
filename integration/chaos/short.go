package chaos

import (
	"strings"
	"time"
)

// Short variants of the matrix's cells, for `make test` (TestChaosShort).
const (
	shortMinRecords = 2000
	shortMaxRecords = 4000
	// shortMaxFeed bounds how long a short cell's feeder writes: long
	// enough that the faults land mid-stream (the zombie needs its session
	// to expire while input still arrives), short enough for `make test`.
	shortMaxFeed = 20 * time.Second
)

// ShortMatrix is one short cell of each fault type of Matrix: for each
// distinct Fault the first cell that has it (so the Kafka-mode one where
// both modes have it), with its schedule unchanged, an eighth of its
// records (2,000–4,000), 2 workers (or the cell's MinWorkers), and a rate
// at which the feed lasts as long as the full cell's, at most 20 s. The
// cells fed by kafka-verifiable-producer are left out (their faults are
// covered by the Go-fed cells; the JVM costs seconds each), and so is the
// cell that restarts the shared Postgres server. Cells added to
// Matrix get a short variant here automatically.
func ShortMatrix() []Cell {
	var out []Cell
	seen := map[string]bool{}
	for _, c := range Matrix(1) {
		if c.Feeder != "" || c.RestartsSharedServer || seen[c.Fault] {
			continue
		}
		seen[c.Fault] = true
		out = append(out, Short(c))
	}
	return out
}

// Short is the short variant of c (see ShortMatrix).
func Short(c Cell) Cell {
	full := time.Duration(float64(c.Records) / float64(max(1, c.Rate)) * float64(time.Second))
	c.Records = min(shortMaxRecords, max(shortMinRecords, c.Records/8))
	feed := min(full, shortMaxFeed)
	c.Rate = max(1, int(float64(c.Records)/feed.Seconds()))
	c.Workers = min(c.Workers, max(2, c.MinWorkers))
	if !strings.HasPrefix(c.Name, "short-") {
		c.Name = "short-" + c.Name
	}
	return c
}
