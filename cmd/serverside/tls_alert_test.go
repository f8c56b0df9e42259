package main

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// TestReverseHTTPSOriginRequiresClientCert: an https origin that requires
// a client certificate and speaks TLS 1.3 sends its "certificate required"
// alert after the proxy's side of the handshake is done, so the request
// fails reading the response. The client still gets a 502 that names the
// TLS alert, as for a failed handshake.
func TestReverseHTTPSOriginRequiresClientCert(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	pki := bench.NewPKI(t, "origin.test")
	cas := x509.NewCertPool()
	cas.AppendCertsFromPEM(pki.CAPEM)
	origin := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("hello\n"))
	}))
	origin.TLS = &tls.Config{Certificates: []tls.Certificate{pki.Server}, MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: cas}
	origin.StartTLS()
	t.Cleanup(origin.Close)
	addr := strings.TrimPrefix(origin.URL, "https://")

	for _, c := range []struct {
		name string
		ts   tlsSettings
		want string
	}{
		{"without a client certificate", tlsSettings{roots: pki.CAPEM}, "upstream TLS: alert from upstream: tls: certificate required\n502"},
		{"with one", tlsSettings{roots: pki.CAPEM, cert: &pki.Client}, "hello\n200"},
	} {
		cfg := engine.Config{}
		if err := withPeersTLS(&cfg, []string{"https://" + addr + "?sni=origin.test"}, nil, "", c.ts); err != nil {
			t.Fatal(err)
		}
		px := startProxyClient(t, cfg, clientConfig{})
		if out, _, _ := curlStatus(t, "-w", "%{http_code}", "http://"+px+"/"); out != c.want {
			t.Errorf("%s: %q, want %q", c.name, out, c.want)
		}
	}
}
