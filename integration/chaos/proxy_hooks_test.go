package chaos

import (
	"context"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// TestLostAckProxyHooks: the crash cells' hooks see the connection's
// application_name; BeforeCommit returning true keeps the COMMIT from the
// server (the transaction does not commit), AfterCommit returning true drops
// the answer of a COMMIT that did commit.
func TestLostAckProxyHooks(t *testing.T) {
	pgURL := os.Getenv("EXACTLY_PG_URL")
	if pgURL == "" {
		t.Skip("EXACTLY_PG_URL not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	direct, err := pgx.Connect(ctx, pgURL)
	require.NoError(t, err)
	defer direct.Close(context.Background())
	table := "chaos_hooks_test_" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	_, err = direct.Exec(ctx, "CREATE TABLE "+table+" (v int)")
	require.NoError(t, err)
	defer direct.Exec(context.Background(), "DROP TABLE "+table) //nolint:errcheck

	for _, tc := range []struct {
		phase     string
		committed bool
	}{{"before", false}, {"after", true}} {
		t.Run(tc.phase, func(t *testing.T) {
			cfg := direct.Config()
			var calls atomic.Int64
			hook := func(app string) bool {
				if app == "hooks-"+tc.phase {
					calls.Add(1)
					return true
				}
				return false
			}
			p := &LostAckProxy{Target: cfg.Host + ":" + strconv.Itoa(int(cfg.Port))}
			if tc.phase == "before" {
				p.BeforeCommit = hook
			} else {
				p.AfterCommit = hook
			}
			addr, err := p.Listen()
			require.NoError(t, err)
			defer p.Close()
			host, port, err := net.SplitHostPort(addr)
			require.NoError(t, err)
			pc := cfg.Copy()
			pc.Host = host
			n, _ := strconv.Atoi(port)
			pc.Port = uint16(n)
			pc.RuntimeParams["application_name"] = "hooks-" + tc.phase
			c, err := pgx.ConnectConfig(ctx, pc)
			require.NoError(t, err)
			defer c.Close(context.Background())
			tx, err := c.Begin(ctx)
			require.NoError(t, err)
			var xid int64
			require.NoError(t, tx.QueryRow(ctx, "INSERT INTO "+table+" VALUES (1) RETURNING txid_current()").Scan(&xid))
			require.Error(t, tx.Commit(ctx), "the COMMIT's answer never arrives")
			require.Equal(t, int64(1), calls.Load())
			want := "aborted"
			if tc.committed {
				want = "committed"
			}
			// The server ends the transaction once it sees the closed connection.
			require.Eventually(t, func() bool {
				var status string
				err := direct.QueryRow(ctx, "SELECT txid_status($1)", xid).Scan(&status)
				return err == nil && status == want
			}, 10*time.Second, 20*time.Millisecond, "transaction %d should be %s", xid, want)
		})
	}
}
