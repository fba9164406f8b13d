package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestSASL: the SASL flags authenticate against a kfake cluster that
// requires it, with PLAIN and SCRAM; a wrong password fails fast.
func TestSASL(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "plainer", "p1"),
		kfake.Superuser("SCRAM-SHA-256", "scram256", "p2"),
		kfake.Superuser("SCRAM-SHA-512", "scram512", "p3"),
		kfake.SeedTopics(1, "in"))
	require.NoError(t, err)
	defer c.Close()
	brokers := strings.Join(c.ListenAddrs(), ",")
	for _, m := range []struct{ mech, user, pass string }{
		{"plain", "plainer", "p1"}, {"scram-sha-256", "scram256", "p2"}, {"SCRAM-SHA-512", "scram512", "p3"},
	} {
		code, out, _ := exactly(t, "doctor", "-brokers", brokers, "-topics", "in", "-sasl-mechanism", m.mech, "-sasl-user", m.user, "-sasl-password", m.pass)
		require.Equal(t, exitOK, code, m.mech)
		require.Contains(t, out, "topic-exists")
	}
	t.Setenv("EXACTLY_SASL_PASSWORD", "p1")
	code, _, _ := exactly(t, "doctor", "-brokers", brokers, "-topics", "in", "-sasl-mechanism", "plain", "-sasl-user", "plainer")
	require.Equal(t, exitOK, code, "password from EXACTLY_SASL_PASSWORD")

	code, _, errs := exactly(t, "doctor", "-brokers", brokers, "-topics", "in", "-sasl-mechanism", "scram-sha-256", "-sasl-user", "scram256", "-sasl-password", "wrong", "-timeout", "5s")
	require.Equal(t, exitError, code)
	require.Contains(t, errs, "cannot reach Kafka at "+brokers)
	// kfake drops the connection on a failed authentication (the cause
	// reads EOF); Apache Kafka answers SASL_AUTHENTICATION_FAILED, which
	// the error then carries. Either way it points at the settings.
	require.Contains(t, errs, "check the addresses, that the brokers are up, and the TLS/SASL settings")
}

// TestTLS: -tls-ca trusts a cluster's self-signed certificate; without it
// the handshake fails and the error says why.
func TestTLS(t *testing.T) {
	certPEM, keyPEM := selfSigned(t)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}), kfake.SeedTopics(1, "in"))
	require.NoError(t, err)
	defer c.Close()
	brokers := strings.Join(c.ListenAddrs(), ",")

	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(ca, certPEM, 0o600))
	code, _, _ := exactly(t, "doctor", "-brokers", brokers, "-topics", "in", "-tls-ca", ca)
	require.Equal(t, exitOK, code)

	code, _, errs := exactly(t, "doctor", "-brokers", brokers, "-topics", "in", "-tls", "-timeout", "5s")
	require.Equal(t, exitError, code)
	require.Contains(t, errs, "certificate")

	notPEM := filepath.Join(dir, "bad.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	code, _, errs = exactly(t, "doctor", "-brokers", brokers, "-topics", "in", "-tls-ca", notPEM)
	require.Equal(t, exitError, code)
	require.Contains(t, errs, "holds no PEM certificate")

	// A client certificate pair loads (the cluster does not ask for one).
	keyFile := filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(keyFile, keyPEM, 0o600))
	code, _, _ = exactly(t, "doctor", "-brokers", brokers, "-topics", "in", "-tls-ca", ca, "-tls-cert", ca, "-tls-key", keyFile)
	require.Equal(t, exitOK, code)
}

// selfSigned returns a self-signed certificate for 127.0.0.1 and its key,
// PEM encoded.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "exactly-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}
