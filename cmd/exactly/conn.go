package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// connFlags are the connection flags every command shares.
type connFlags struct {
	brokers  string
	timeout  time.Duration
	tls      bool
	tlsCA    string
	tlsCert  string
	tlsKey   string
	saslMech string
	saslUser string
	saslPass string
}

// register adds the connection flags to fs.
func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.brokers, "brokers", "127.0.0.1:9092", "Kafka seed brokers, comma separated")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "how long to wait for the brokers to answer before failing")
	fs.BoolVar(&c.tls, "tls", false, "connect with TLS (implied by -tls-ca and -tls-cert)")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM file of the CA that signed the brokers' certificates (default: the system roots)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM file of a client certificate (with -tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM file of the client certificate's key")
	fs.StringVar(&c.saslMech, "sasl-mechanism", "", "SASL mechanism: plain, scram-sha-256 or scram-sha-512")
	fs.StringVar(&c.saslUser, "sasl-user", "", "SASL user name")
	fs.StringVar(&c.saslPass, "sasl-password", "", "SASL password (or set EXACTLY_SASL_PASSWORD)")
}

// seeds returns the broker list.
func (c *connFlags) seeds() []string {
	var out []string
	for _, s := range strings.Split(c.brokers, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// opts turns the flags into client options (without the seeds), or an
// error naming the bad flag and what to pass instead.
func (c *connFlags) opts() ([]kgo.Opt, error) {
	if len(c.seeds()) == 0 {
		return nil, errors.New("-brokers is empty: pass host:port[,host:port...]")
	}
	if c.timeout <= 0 {
		return nil, fmt.Errorf("-timeout %v: give a positive duration, e.g. 10s", c.timeout)
	}
	opts := []kgo.Opt{
		kgo.DialTimeout(min(c.timeout, 10*time.Second)),
	}
	if c.tls || c.tlsCA != "" || c.tlsCert != "" || c.tlsKey != "" {
		cfg, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	if c.saslMech != "" || c.saslUser != "" {
		m, err := c.mechanism()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// tlsConfig builds the TLS configuration the flags describe.
func (c *connFlags) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.tlsCA != "" {
		pem, err := os.ReadFile(c.tlsCA)
		if err != nil {
			return nil, fmt.Errorf("-tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-tls-ca %s holds no PEM certificate: give the CA certificate in PEM form", c.tlsCA)
		}
		cfg.RootCAs = pool
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, errors.New("-tls-cert and -tls-key go together: pass both for a client certificate, or neither")
	}
	if c.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("-tls-cert %s / -tls-key %s: %w", c.tlsCert, c.tlsKey, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// mechanism returns the SASL mechanism the flags name.
func (c *connFlags) mechanism() (sasl.Mechanism, error) {
	pass := c.saslPass
	if pass == "" {
		pass = os.Getenv("EXACTLY_SASL_PASSWORD")
	}
	if c.saslUser == "" {
		return nil, fmt.Errorf("-sasl-mechanism %q needs -sasl-user (and -sasl-password)", c.saslMech)
	}
	switch strings.ToLower(c.saslMech) {
	case "plain":
		return plain.Auth{User: c.saslUser, Pass: pass}.AsMechanism(), nil
	case "scram-sha-256":
		return scram.Auth{User: c.saslUser, Pass: pass}.AsSha256Mechanism(), nil
	case "scram-sha-512":
		return scram.Auth{User: c.saslUser, Pass: pass}.AsSha512Mechanism(), nil
	case "":
		return nil, errors.New("-sasl-user needs -sasl-mechanism plain, scram-sha-256 or scram-sha-512")
	}
	return nil, fmt.Errorf("-sasl-mechanism %q is not supported: use plain, scram-sha-256 or scram-sha-512", c.saslMech)
}
