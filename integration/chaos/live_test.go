package chaos

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// livePlants are doctored outputs for the concurrent verifier, with the
// group's committed offset of input partition 0 and the violation expected.
var livePlants = []struct {
	plant
	committed int64
	want      string // "" for none, else the violation's first word
}{
	{plants[0], 10, ""},
	{plants[1], 10, "duplicate:"},
	{plants[2], 10, "gap:"},
	{plants[3], 10, "order:"},
	// Input record 4 has no output yet, but the group has not committed
	// past it either: a prefix, not a gap.
	{plant{"uncommitted-tail", func(o []int) []int { return o[:4] }, 0, 0, 0}, 4, ""},
}

// TestLiveCatchesPlantedKafka runs the Kafka-mode concurrent verifier
// (kafkaPrefix: a read_committed consumer of the output, gap checks against
// the group's committed offsets) on doctored outputs in an in-process
// cluster: a planted duplicate, gap and reorder each raise exactly one
// violation naming it; the exact output and a not yet committed tail none.
func TestLiveCatchesPlantedKafka(t *testing.T) {
	var pls []plant
	for _, lp := range livePlants {
		pls = append(pls, lp.plant)
	}
	ctx, brokers, produceDoctored := plantedKafka(t, pls)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for _, pl := range livePlants {
		t.Run(pl.name, func(t *testing.T) {
			out, n := produceDoctored(t, pl.plant)
			var got []string
			committed := func(context.Context) (map[int32]int64, error) { return map[int32]int64{0: pl.committed}, nil }
			k, err := newKafkaPrefix(brokers, "in", out, adm, committed, func(s string) { got = append(got, s) })
			require.NoError(t, err)
			defer k.close()
			// The first tick may judge its snapshot already; two always do.
			require.NoError(t, k.tick(ctx))
			require.NoError(t, k.tick(ctx))
			require.Zero(t, k.pendingSnapshots())
			require.Equal(t, n, k.read, "every output record read")
			if pl.want == "" {
				require.Empty(t, got)
				return
			}
			require.Len(t, got, 1, "%v", got)
			require.True(t, strings.HasPrefix(got[0], pl.want), "%v", got)
			// Reading on finds nothing new: each record is read once.
			require.NoError(t, k.tick(ctx))
			require.Len(t, got, 1, "%v", got)
			require.Equal(t, n, k.read)
		})
	}
}

// TestLiveCatchesPlantedRows does the same for the Postgres-mode concurrent
// verifier (pgPrefix: the offsets table and the rows in one snapshot), with
// a planted duplicate, gap and reorder in a result table, and a row that
// commits after a higher id was read (found again, not reported missing).
// Needs Postgres (EXACTLY_PG_URL); skips without it.
func TestLiveCatchesPlantedRows(t *testing.T) {
	pgURL := os.Getenv("EXACTLY_PG_URL")
	if pgURL == "" {
		if os.Getenv("EXACTLY_REQUIRE_SERVICES") == "1" {
			t.Fatal("EXACTLY_PG_URL not set but EXACTLY_REQUIRE_SERVICES=1")
		}
		t.Skip("EXACTLY_PG_URL not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, pgURL)
	require.NoError(t, err)
	defer pool.Close()
	const schema = "chaos"
	require.NoError(t, pgMigrate(ctx, pool, schema))
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	for _, pl := range livePlants {
		t.Run(pl.name, func(t *testing.T) {
			table := "live_test_" + strings.ReplaceAll(pl.name, "-", "_") + "_" + suffix
			group := "live-test-" + pl.name + "-" + suffix
			qt := pgx.Identifier{schema, table}.Sanitize()
			_, err := pool.Exec(ctx, `CREATE TABLE `+qt+` (id bigserial PRIMARY KEY, part integer NOT NULL, off bigint NOT NULL, worker text NOT NULL)`)
			require.NoError(t, err)
			defer pool.Exec(context.Background(), `DROP TABLE `+qt)                                                                                //nolint:errcheck
			defer pool.Exec(context.Background(), `DELETE FROM `+pgx.Identifier{schema, "offsets"}.Sanitize()+` WHERE consumer_group = $1`, group) //nolint:errcheck
			idx := make([]int, 10)
			for i := range idx {
				idx[i] = i
			}
			for _, i := range pl.doctor(idx) {
				_, err := pool.Exec(ctx, `INSERT INTO `+qt+` (part, off, worker) VALUES (0, $1, 'w')`, i)
				require.NoError(t, err)
			}
			_, err = pool.Exec(ctx, `INSERT INTO `+pgx.Identifier{schema, "offsets"}.Sanitize()+` (consumer_group, topic, partition, next_offset) VALUES ($1, 'in', 0, $2)`,
				group, pl.committed)
			require.NoError(t, err)
			var got []string
			g := newPGPrefix(pool, schema, table, group, "in", func(s string) { got = append(got, s) })
			require.NoError(t, g.tick(ctx))
			if pl.want == "" {
				require.Empty(t, got)
			} else {
				require.Len(t, got, 1, "%v", got)
				require.True(t, strings.HasPrefix(got[0], pl.want), "%v", got)
			}
			n := g.read
			require.NoError(t, g.tick(ctx))
			require.Equal(t, n, g.read, "no row is read as new twice")
			require.Len(t, got, min(1, len(pl.want)))
		})
	}
	t.Run("late-commit", func(t *testing.T) {
		// Row ids 1-2 are taken by a transaction that commits only after
		// the checker read ids 3-4 and moved its low-water id past the hole.
		table := "live_test_late_" + suffix
		group := "live-test-late-" + suffix
		qt := pgx.Identifier{schema, table}.Sanitize()
		offs := pgx.Identifier{schema, "offsets"}.Sanitize()
		_, err := pool.Exec(ctx, `CREATE TABLE `+qt+` (id bigserial PRIMARY KEY, part integer NOT NULL, off bigint NOT NULL, worker text NOT NULL)`)
		require.NoError(t, err)
		defer pool.Exec(context.Background(), `DROP TABLE `+qt)                                        //nolint:errcheck
		defer pool.Exec(context.Background(), `DELETE FROM `+offs+` WHERE consumer_group = $1`, group) //nolint:errcheck
		slow, err := pool.Begin(ctx)
		require.NoError(t, err)
		defer slow.Rollback(context.Background()) //nolint:errcheck
		_, err = slow.Exec(ctx, `INSERT INTO `+qt+` (part, off, worker) VALUES (1, 0, 'slow'), (1, 1, 'slow')`)
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `INSERT INTO `+qt+` (part, off, worker) VALUES (0, 0, 'w'), (0, 1, 'w')`)
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `INSERT INTO `+offs+` (consumer_group, topic, partition, next_offset) VALUES ($1, 'in', 0, 2)`, group)
		require.NoError(t, err)
		var got []string
		g := newPGPrefix(pool, schema, table, group, "in", func(s string) { got = append(got, s) })
		require.NoError(t, g.tick(ctx))
		require.Equal(t, 2, g.read)
		g.advance(time.Now().Add(2 * holeGrace)) // the hole at ids 1-2 looks like a rollback
		require.Equal(t, int64(4), g.low)
		_, err = slow.Exec(ctx, `INSERT INTO `+offs+` (consumer_group, topic, partition, next_offset) VALUES ($1, 'in', 1, 2)`, group)
		require.NoError(t, err)
		require.NoError(t, slow.Commit(ctx))
		require.NoError(t, g.tick(ctx))
		require.Empty(t, got, "the late rows are found by the targeted query, not reported missing")
		require.Equal(t, 4, g.read)
		require.Equal(t, 2, g.confirmed)
	})
}
