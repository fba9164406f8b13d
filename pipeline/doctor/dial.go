package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Dial creates a client for seeds (plus opts: TLS, SASL, a logger, ...) and
// checks that at least one seed broker answers a Metadata request before
// ctx ends. Bound ctx with a timeout: an unreachable broker then fails fast
// with an error that names the brokers and the cause (connection refused,
// a TLS or SASL failure, the deadline). The caller closes the client.
func Dial(ctx context.Context, seeds []string, opts ...kgo.Opt) (*kgo.Client, error) {
	var clean []string
	for _, s := range seeds {
		if s = strings.TrimSpace(s); s != "" {
			clean = append(clean, s)
		}
	}
	if len(clean) == 0 {
		return nil, errors.New("doctor: no brokers given: pass -brokers host:port[,host:port...]")
	}
	all := append([]kgo.Opt{kgo.SeedBrokers(clean...)}, opts...)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		return nil, fmt.Errorf("doctor: brokers %s: %w", strings.Join(clean, ","), err)
	}
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w (%w)", ctxErr, err)
		}
		return nil, fmt.Errorf("doctor: cannot reach Kafka at %s: %w; check the addresses, that the brokers are up, and the TLS/SASL settings", strings.Join(clean, ","), err)
	}
	return cl, nil
}
