package verify_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactlyonce/exactly/internal/verify"
)

// A transaction that aborts after ReadAll listed the end offsets leaves its
// marker past the listed end, and a read_committed reader never receives the
// aborted records below it. The read must still end: the marker shows the
// partition was read past its end. (On Apache Kafka an EndTxn answers before
// its markers are written, so a check right after an abort sees exactly this;
// ReadAll used to wait for its timeout and blame an open transaction.)
func TestReadEndsWhenATransactionAbortsAfterTheEndsWereListed(t *testing.T) {
	c, opts, tx := openTransaction(t, "late-abort", 3)
	ctx := context.Background()

	// The first ListOffsets is ReadAll's listing of the end offsets; kfake
	// answers requests one at a time, so the abort sent after it lands
	// after the listing.
	listed := make(chan struct{})
	var once sync.Once
	c.ControlKey(int16(kmsg.ListOffsets), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() { close(listed) })
		return nil, nil, false // kfake answers it; the control stays installed
	})
	type result struct {
		recs []*kgo.Record
		err  error
	}
	done := make(chan result, 1)
	go func() {
		recs, err := verify.ReadAll(ctx, opts, "out", 10*time.Second)
		done <- result{recs, err}
	}()
	<-listed
	// Nothing changed since ReadAll's listing: it got this end too, which
	// covers the open transaction's records but not its marker to come.
	ends, err := kadm.NewClient(tx).ListEndOffsets(ctx, "out")
	require.NoError(t, err)
	end, _ := ends.Lookup("out", 0)
	require.Equal(t, int64(4), end.Offset)
	require.NoError(t, tx.EndTransaction(ctx, kgo.TryAbort))

	r := <-done
	require.NoError(t, r.err, "the abort's marker lies past the listed end; the read must end there")
	require.Len(t, r.recs, 1, "only the committed record")
	require.Equal(t, int64(0), r.recs[0].Offset)
}
