package kafkasink_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/exactlyonce/exactly/sinks/kafkasink"
)

// Two pipelines whose group and instance id concatenate alike must not share
// a transactional id, or each one's start fences the other, forever.
func TestTransactionalIDsDoNotCollideAcrossPipelines(t *testing.T) {
	require.NotEqual(t,
		kafkasink.TransactionalID("orders", "eu-1"),
		kafkasink.TransactionalID("orders-eu", "1"))

	// Injective over a grid of tricky groups and valid instance ids (no
	// ':'): every pair gets its own id, and the pair can be read back.
	groups := []string{"g", "g-", "g:", "g:a", "-", ":", "orders", "orders-eu", "orders.eu", "a:b:c"}
	instances := []string{"1", "a", "eu-1", "eu", "-1", "1-", "x.y", "_"}
	seen := map[string][2]string{}
	for _, g := range groups {
		for _, i := range instances {
			id := kafkasink.TransactionalID(g, i)
			if prev, dup := seen[id]; dup {
				t.Fatalf("(%q, %q) and (%q, %q) share transactional id %q", prev[0], prev[1], g, i, id)
			}
			seen[id] = [2]string{g, i}
			cut := strings.LastIndex(id, ":")
			require.Equal(t, [2]string{g, i}, [2]string{id[:cut], id[cut+1:]})
		}
	}
}
