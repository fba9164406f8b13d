package testkit

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestParseRequest decodes requests framed the way kgo writes them, in a
// flexible and a non-flexible version, with and without a client id.
func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		name     string
		version  int16
		clientID *string
	}{
		{"flexible", 5, kmsg.StringPtr("exactly-test")},
		{"flexible-no-client-id", 4, nil},
		{"classic", 2, kmsg.StringPtr("c")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := kmsg.NewPtrEndTxnRequest()
			req.SetVersion(tc.version)
			req.TransactionalID = "g:a"
			req.ProducerID = 42
			req.ProducerEpoch = 7
			req.Commit = true
			var opts []kmsg.RequestFormatterOpt
			if tc.clientID != nil {
				opts = append(opts, kmsg.FormatterClientID(*tc.clientID))
			}
			b := kmsg.NewRequestFormatter(opts...).AppendRequest(nil, req, 99)
			got, err := parseRequest(b)
			require.NoError(t, err)
			et, ok := got.(*kmsg.EndTxnRequest)
			require.True(t, ok, "parsed %T", got)
			require.Equal(t, *req, *et)
		})
	}
	_, err := parseRequest([]byte{0, 0, 0, 1})
	require.Error(t, err)
}
