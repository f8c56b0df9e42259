package bench

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
	"testing"
	"time"
)

// PKI is a throw-away certificate authority with a server and a client
// certificate, generated at test time (ECDSA P-256) and written as PEM
// files into a tb.TempDir().
type PKI struct {
	// CAPEM is the CA certificate; CAFile the file holding it.
	CAPEM  []byte
	CAFile string
	// ServerCert and ServerKey are the server certificate and key files,
	// for nginx's ssl_certificate and ssl_certificate_key. The
	// certificate is valid for the names given to NewPKI and 127.0.0.1.
	ServerCert, ServerKey string
	// Client is the client certificate (subject CN "serverside-client"),
	// signed by the CA, ready for tls.Config.
	Client tls.Certificate
	// ClientDN is the client certificate's subject as nginx logs it
	// ($ssl_client_s_dn).
	ClientDN string
	// Server is the server certificate and key, for Go test servers.
	Server tls.Certificate

	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

// NewPKI generates a CA, a server certificate for names (DNS names) and
// 127.0.0.1, and a client certificate.
func NewPKI(tb testing.TB, names ...string) *PKI {
	tb.Helper()
	dir := tb.TempDir()
	p := &PKI{}
	var err error
	p.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "serverside test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		tb.Fatal(err)
	}
	if p.caCert, err = x509.ParseCertificate(caDER); err != nil {
		tb.Fatal(err)
	}
	p.CAPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	p.CAFile = filepath.Join(dir, "ca.pem")
	writeFile(tb, p.CAFile, p.CAPEM)

	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "serverside test server"},
		DNSNames:     names,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	certPEM, keyPEM := p.issue(tb, srvTmpl)
	p.ServerCert = filepath.Join(dir, "server.pem")
	p.ServerKey = filepath.Join(dir, "server.key")
	writeFile(tb, p.ServerCert, certPEM)
	writeFile(tb, p.ServerKey, keyPEM)
	if p.Server, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		tb.Fatal(err)
	}

	cliTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: "serverside-client"},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	certPEM, keyPEM = p.issue(tb, cliTmpl)
	if p.Client, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		tb.Fatal(err)
	}
	p.ClientDN = "CN=serverside-client"
	return p
}

// issue signs tmpl with the CA for a fresh key and returns both as PEM.
func (p *PKI) issue(tb testing.TB, tmpl *x509.Certificate) (certPEM, keyPEM []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func writeFile(tb testing.TB, path string, data []byte) {
	tb.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
}
