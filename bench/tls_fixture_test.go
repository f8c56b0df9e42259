package bench

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNginxTLSListener: the TLS listener serves the fixture's locations
// with the PKI's certificate, and its log records SNI, resumption and the
// client certificate.
func TestNginxTLSListener(t *testing.T) {
	pki := NewPKI(t, "fixture.test")
	n := StartNginx(t, NginxOptions{TLSCert: pki.ServerCert, TLSKey: pki.ServerKey, TLSClientCA: pki.CAFile})
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pki.CAPEM) {
		t.Fatal("CA PEM")
	}
	cfg := &tls.Config{ServerName: "fixture.test", RootCAs: roots, Certificates: []tls.Certificate{pki.Client},
		ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	for i := 0; i < 2; i++ {
		c, err := tls.Dial("tcp", n.TLSAddr(), cfg)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		resp, body := rawGet(t, c, bufio.NewReader(c), "/small")
		c.Close()
		if resp.StatusCode != 200 || string(body) != SmallBody {
			t.Fatalf("GET %d: %d %q", i, resp.StatusCode, body)
		}
	}
	logs := n.WaitTLSRequests(2, 5*time.Second)
	if len(logs) != 2 {
		t.Fatalf("TLS log %+v", logs)
	}
	for i, l := range logs {
		if l.ServerName != "fixture.test" || l.ClientDN != pki.ClientDN || l.Reused != (i == 1) ||
			!strings.HasPrefix(l.Protocol, "TLSv1.") || l.Status != 200 || l.URI != "/small" {
			t.Errorf("TLS log %d: %+v", i, l)
		}
	}
	// The plain listener still answers, and is not in the TLS log.
	c, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if resp, _ := rawGet(t, c, bufio.NewReader(c), "/small"); resp.StatusCode != 200 {
		t.Fatalf("plain: %d", resp.StatusCode)
	}
	if reqs := n.WaitRequests(3, 5*time.Second); len(reqs) != 3 || len(n.TLSRequests()) != 2 {
		t.Fatalf("logs: all %d, TLS %d; want 3, 2", len(reqs), len(n.TLSRequests()))
	}
}

// TestSquidConnect: the squid fixture tunnels to allowed ports only and
// asks for credentials when it has users.
func TestSquidConnect(t *testing.T) {
	n := StartNginx(t, NginxOptions{})
	_, port, _ := net.SplitHostPort(n.Addr())
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	s := StartSquid(t, SquidOptions{ConnectPorts: []int{p}, Users: map[string]string{"u": "pw"}})
	status := func(auth string) string {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		req := "CONNECT " + n.Addr() + " HTTP/1.1\r\nHost: " + n.Addr() + "\r\n" + auth + "\r\n"
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(line)
	}
	if got := status(""); !strings.HasPrefix(got, "HTTP/1.1 407 ") {
		t.Errorf("without credentials: %q", got)
	}
	if got := status("Proxy-Authorization: Basic dTpwdw==\r\n"); !strings.HasPrefix(got, "HTTP/1.1 200 ") {
		t.Errorf("with credentials: %q", got)
	}
}
