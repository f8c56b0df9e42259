package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
	"github.com/serverside-go/serverside/parser"
)

// Integration tests of TLS upstreams against a real nginx with a test CA
// generated at test time.

// tlsNginx starts nginx with a TLS listener whose certificate is valid
// for origin.test, a.test, b.test and 127.0.0.1.
func tlsNginx(t *testing.T, clientCA bool) (*bench.Nginx, *bench.PKI) {
	t.Helper()
	pki := bench.NewPKI(t, "origin.test", "a.test", "b.test")
	opts := bench.NginxOptions{TLSCert: pki.ServerCert, TLSKey: pki.ServerKey}
	if clientCA {
		opts.TLSClientCA = pki.CAFile
	}
	return bench.StartNginx(t, opts), pki
}

// tlsGet builds a GET for path with the given Host to the TLS listener.
func tlsGet(t testing.TB, ngx *bench.Nginx, host, path string, cfg *engine.TLS, extra string) *engine.Request {
	t.Helper()
	h := new(parser.Request)
	raw := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n" + extra + "\r\n"
	if _, err := h.Parse([]byte(raw)); err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return &engine.Request{Upstream: engine.Upstream{Addr: ngx.TLSAddr(), TLS: cfg}, Head: h}
}

// tlsKey is the Stats key of a TLS upstream verified against pki's CA.
func tlsKey(ngx *bench.Nginx, sni string, id string) string {
	return ngx.TLSAddr() + " tls=sni=" + sni + ";" + id
}

func statsWithPrefix(t *testing.T, e *engine.Engine, prefix string) (string, engine.UpstreamStats) {
	t.Helper()
	var key string
	var s engine.UpstreamStats
	n := 0
	for k, v := range e.Stats() {
		if strings.HasPrefix(k, prefix) {
			key, s = k, v
			n++
		}
	}
	if n != 1 {
		t.Fatalf("stats: %d keys start with %q: %v", n, prefix, e.Stats())
	}
	return key, s
}

// TestTLSGetKeepAlive: GETs over TLS verified against the test CA, with
// the SNI taken from ServerName, on one kept-alive connection.
func TestTLSGetKeepAlive(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	e := startEngine(t, engine.Config{})
	cfg := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	for i := 0; i < 3; i++ {
		resp, body, err := fetch(e, tlsGet(t, ngx, "whatever.example", "/small", cfg, ""))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if resp.Status != 200 || string(body) != bench.SmallBody {
			t.Fatalf("request %d: status %d body %q", i, resp.Status, body)
		}
	}
	resp, body, err := fetch(e, tlsGet(t, ngx, "x", "/1m", cfg, ""))
	if err != nil || resp.Status != 200 || !bytes.Equal(body, bench.PatternBody(bench.Size1M)) {
		t.Fatalf("/1m: err %v, %d bytes", err, len(body))
	}
	logs := ngx.WaitTLSRequests(4, requestTimeout)
	if len(logs) != 4 {
		t.Fatalf("nginx logged %d TLS requests, want 4: %+v", len(logs), logs)
	}
	for i, l := range logs {
		if l.Connection != logs[0].Connection || l.ServerName != "origin.test" || l.Status != 200 {
			t.Errorf("TLS log %d: %+v; want connection %d, SNI origin.test, 200", i, l, logs[0].Connection)
		}
	}
	key, s := statsWithPrefix(t, e, ngx.TLSAddr())
	if !strings.HasPrefix(key, tlsKey(ngx, "origin.test", "v=ca:")) {
		t.Errorf("stats key %q", key)
	}
	if s.TLSHandshakes != 1 || s.Attempts != 4 || s.OnReused != 3 || s.Pool.Dialed != 1 {
		t.Errorf("stats: handshakes %d, attempts %d, on reused %d, dialed %d; want 1, 4, 3, 1",
			s.TLSHandshakes, s.Attempts, s.OnReused, s.Pool.Dialed)
	}
}

// TestTLSServerNameFromHost: without ServerName, the SNI (and the name
// verified) is the request's Host, without its port.
func TestTLSServerNameFromHost(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	e := startEngine(t, engine.Config{})
	cfg := &engine.TLS{RootCAs: pki.CAPEM}
	resp, _, err := fetch(e, tlsGet(t, ngx, "a.test:8443", "/small", cfg, ""))
	if err != nil || resp.Status != 200 {
		t.Fatalf("a.test: %v", err)
	}
	logs := ngx.WaitTLSRequests(1, requestTimeout)
	if len(logs) != 1 || logs[0].ServerName != "a.test" {
		t.Fatalf("TLS log %+v, want SNI a.test", logs)
	}
	// A name the certificate does not hold fails verification.
	_, _, err = fetch(e, tlsGet(t, ngx, "other.test", "/small", cfg, ""))
	var he x509.HostnameError
	if !errors.As(err, &he) {
		t.Fatalf("other.test: %v, want an x509.HostnameError", err)
	}
	if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhaseTLS {
		t.Fatalf("other.test: %#v, want a *conn.Error of PhaseTLS", err)
	}
}

// TestTLSWrongCA: a certificate from a CA not trusted fails with a typed
// error, counted under the "tls" phase.
func TestTLSWrongCA(t *testing.T) {
	leakBaseline(t)
	ngx, _ := tlsNginx(t, false)
	other := bench.NewPKI(t, "origin.test")
	e := startEngine(t, engine.Config{})
	_, _, err := fetch(e, tlsGet(t, ngx, "origin.test", "/small", &engine.TLS{RootCAs: other.CAPEM}, ""))
	var ua x509.UnknownAuthorityError
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &ua) || !errors.As(err, &cve) {
		t.Fatalf("err %v, want x509.UnknownAuthorityError inside tls.CertificateVerificationError", err)
	}
	ce := conn.AsError(err)
	if ce == nil || ce.Phase != conn.PhaseTLS || ce.Phase.String() != "tls" {
		t.Fatalf("err %#v, want PhaseTLS", err)
	}
	_, s := statsWithPrefix(t, e, ngx.TLSAddr())
	if s.Errors["tls"] != 1 || s.TLSHandshakes != 0 {
		t.Errorf("stats errors %v, handshakes %d; want tls:1, 0", s.Errors, s.TLSHandshakes)
	}
	// The system roots do not know the test CA either.
	_, _, err = fetch(e, tlsGet(t, ngx, "origin.test", "/small", &engine.TLS{}, ""))
	if !errors.As(err, &ua) {
		t.Fatalf("system roots: %v, want x509.UnknownAuthorityError", err)
	}
}

// TestTLSInsecureWarns: InsecureSkipVerify accepts the unknown CA and logs
// a warning naming the upstream.
func TestTLSInsecureWarns(t *testing.T) {
	leakBaseline(t)
	ngx, _ := tlsNginx(t, false)
	var logs syncLog
	e := startEngine(t, engine.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	cfg := &engine.TLS{InsecureSkipVerify: true}
	for i := 0; i < 2; i++ {
		resp, _, err := fetch(e, tlsGet(t, ngx, "origin.test", "/small", cfg, ""))
		if err != nil || resp.Status != 200 {
			t.Fatalf("insecure request %d: %v", i, err)
		}
	}
	out := logs.String()
	if strings.Count(out, "level=WARN") != 1 || !strings.Contains(out, "verification is OFF") ||
		!strings.Contains(out, ngx.TLSAddr()) {
		t.Fatalf("log %q, want one warning naming the upstream", out)
	}
}

// TestTLSClientCertificate: nginx with ssl_verify_client on answers 400
// without a client certificate and 200 with one; the two identities never
// share a connection.
func TestTLSClientCertificate(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, true)
	e := startEngine(t, engine.Config{})
	anon := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	client := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM, Certificate: &pki.Client}

	resp, _, err := fetch(e, tlsGet(t, ngx, "h", "/small", anon, ""))
	if err != nil || resp.Status != 400 {
		t.Fatalf("without certificate: status %v, err %v; want 400", resp, err)
	}
	for i := 0; i < 2; i++ {
		resp, body, err := fetch(e, tlsGet(t, ngx, "h", "/small", client, ""))
		if err != nil || resp.Status != 200 || string(body) != bench.SmallBody {
			t.Fatalf("with certificate %d: %v", i, err)
		}
	}
	logs := ngx.WaitTLSRequests(3, requestTimeout)
	if len(logs) != 3 {
		t.Fatalf("TLS log %+v", logs)
	}
	if logs[0].ClientDN != "" || logs[1].ClientDN != pki.ClientDN || logs[2].ClientDN != pki.ClientDN {
		t.Errorf("client DNs %q %q %q", logs[0].ClientDN, logs[1].ClientDN, logs[2].ClientDN)
	}
	if logs[1].Connection == logs[0].Connection || logs[2].Connection != logs[1].Connection {
		t.Errorf("connections %d %d %d: the identities must not share one, the certificate's must be reused",
			logs[0].Connection, logs[1].Connection, logs[2].Connection)
	}
	n := 0
	for k := range e.Stats() {
		if strings.HasPrefix(k, ngx.TLSAddr()) {
			n++
			if strings.Contains(k, ";c=") != (k != tlsKeyNoCert(e, ngx)) {
				t.Errorf("key %q", k)
			}
		}
	}
	if n != 2 {
		t.Errorf("%d pool keys for the TLS upstream, want 2: %v", n, e.Stats())
	}
}

// tlsKeyNoCert returns the stats key of the TLS upstream without a client
// certificate.
func tlsKeyNoCert(e *engine.Engine, ngx *bench.Nginx) string {
	for k := range e.Stats() {
		if strings.HasPrefix(k, ngx.TLSAddr()) && !strings.Contains(k, ";c=") {
			return k
		}
	}
	return ""
}

// TestTLSSessionResumption: a second connection to the same upstream
// resumes the first one's session, which Stats counts and nginx logs.
func TestTLSSessionResumption(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	e := startEngine(t, engine.Config{})
	cfg := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	for i := 0; i < 3; i++ {
		// "Connection: close" ends each connection after its request.
		resp, _, err := fetch(e, tlsGet(t, ngx, "h", "/small", cfg, "Connection: close\r\n"))
		if err != nil || resp.Status != 200 {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	logs := ngx.WaitTLSRequests(3, requestTimeout)
	if len(logs) != 3 || logs[0].Reused || !logs[1].Reused || !logs[2].Reused {
		t.Fatalf("TLS log %+v: want a full handshake, then two resumed", logs)
	}
	if logs[0].Connection == logs[1].Connection || logs[1].Connection == logs[2].Connection {
		t.Fatalf("connections not distinct: %+v", logs)
	}
	_, s := statsWithPrefix(t, e, ngx.TLSAddr())
	if s.TLSHandshakes != 3 || s.TLSResumed != 2 {
		t.Errorf("stats: handshakes %d, resumed %d; want 3, 2", s.TLSHandshakes, s.TLSResumed)
	}
}

// TestTLSPoolKeySeparation: two SNIs to the same address are two
// upstreams: two connections, two Stats keys, each reused for its own.
func TestTLSPoolKeySeparation(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	e := startEngine(t, engine.Config{})
	cfg := &engine.TLS{RootCAs: pki.CAPEM} // SNI from Host
	for _, host := range []string{"a.test", "b.test", "a.test", "b.test"} {
		resp, _, err := fetch(e, tlsGet(t, ngx, host, "/small", cfg, ""))
		if err != nil || resp.Status != 200 {
			t.Fatalf("%s: %v", host, err)
		}
	}
	logs := ngx.WaitTLSRequests(4, requestTimeout)
	if len(logs) != 4 {
		t.Fatalf("TLS log %+v", logs)
	}
	bySNI := map[string]map[uint64]bool{}
	for _, l := range logs {
		if bySNI[l.ServerName] == nil {
			bySNI[l.ServerName] = map[uint64]bool{}
		}
		bySNI[l.ServerName][l.Connection] = true
	}
	if len(bySNI) != 2 || len(bySNI["a.test"]) != 1 || len(bySNI["b.test"]) != 1 {
		t.Fatalf("connections by SNI %v: want one each for a.test and b.test", bySNI)
	}
	for c := range bySNI["a.test"] {
		if bySNI["b.test"][c] {
			t.Fatalf("a.test and b.test shared connection %d", c)
		}
	}
	st := e.Stats()
	for _, sni := range []string{"a.test", "b.test"} {
		found := false
		for k, s := range st {
			if strings.HasPrefix(k, tlsKey(ngx, sni, "v=ca:")) {
				found = true
				if s.Pool.Dialed != 1 || s.OnReused != 1 {
					t.Errorf("%s: dialed %d, on reused %d; want 1, 1", k, s.Pool.Dialed, s.OnReused)
				}
			}
		}
		if !found {
			t.Errorf("no stats key for SNI %s: %v", sni, st)
		}
	}
}

// TestTLSServerNameCase: the SNI taken from a request's host is
// lowercased (names compare without case), so hosts that differ only in
// case share one upstream: one connection, reused.
func TestTLSServerNameCase(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	e := startEngine(t, engine.Config{})
	cfg := &engine.TLS{RootCAs: pki.CAPEM} // SNI from Host
	for _, host := range []string{"A.TEST", "a.test", "a.Test"} {
		resp, _, err := fetch(e, tlsGet(t, ngx, host, "/small", cfg, ""))
		if err != nil || resp.Status != 200 {
			t.Fatalf("%s: %v", host, err)
		}
	}
	logs := ngx.WaitTLSRequests(3, requestTimeout)
	if len(logs) != 3 {
		t.Fatalf("TLS log %+v", logs)
	}
	for _, l := range logs {
		if l.ServerName != "a.test" || l.Connection != logs[0].Connection {
			t.Fatalf("TLS log %+v: want SNI a.test on one connection", logs)
		}
	}
}

// TestTLSBadRootCAs: a RootCAs without a certificate is refused before
// anything is sent.
func TestTLSBadRootCAs(t *testing.T) {
	e := startEngine(t, engine.Config{})
	h := new(parser.Request)
	if _, err := h.Parse([]byte("GET / HTTP/1.1\r\nHost: h\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	err := e.Send(context.Background(), &engine.Request{
		Upstream: engine.Upstream{Addr: "127.0.0.1:1", TLS: &engine.TLS{RootCAs: []byte("not PEM")}}, Head: h}, nil)
	if !errors.Is(err, engine.ErrBadRequest) {
		t.Fatalf("err %v, want ErrBadRequest", err)
	}
}

// syncLog is a log destination safe for concurrent writes.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestTLSPeerClosesIdle: a TLS origin that closes each connection after
// its answer (close_notify, FIN) without saying so: the probe on checkout
// (or the sweeper's) sees the close, also within the grace after the
// exchange in which the pool's return skips it, and the next request gets
// a fresh connection instead of failing. A fault-injection origin: nginx
// always announces the close.
func TestTLSPeerClosesIdle(t *testing.T) {
	leakBaseline(t)
	pki := bench.NewPKI(t, "origin.test")
	srv := &tls.Config{Certificates: []tls.Certificate{pki.Server}}
	closed := make(chan struct{}, 3)
	release := make(chan struct{}, 3)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, _ *bufio.Reader) {
		tc := tls.Server(c, srv)
		defer func() { closed <- struct{}{} }()
		defer tc.Close()
		br := bufio.NewReader(tc)
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		_, _ = io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		<-release // close once the answer was taken and the connection pooled
	})
	e := startEngine(t, engine.Config{})
	cfg := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	for i := 0; i < 3; i++ {
		h := new(parser.Request)
		if _, err := h.Parse([]byte("GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		resp, body, err := fetch(e, &engine.Request{Upstream: engine.Upstream{Addr: o.Addr(), TLS: cfg}, Head: h})
		if err != nil || resp.Status != 200 || string(body) != "ok" {
			t.Fatalf("request %d: %v", i, err)
		}
		// The origin closes the pooled connection before the next
		// request: the probe (the sweeper's or the checkout's) must see
		// it, so there is no stale-connection race to retry.
		release <- struct{}{}
		select {
		case <-closed:
		case <-time.After(requestTimeout):
			t.Fatal("origin did not close")
		}
	}
	if o.Accepted() != 3 {
		t.Fatalf("origin accepted %d connections, want 3", o.Accepted())
	}
	_, s := statsWithPrefix(t, e, o.Addr())
	c := s.Pool.Closed
	if s.TLSHandshakes != 3 || s.Requests != 3 || len(s.Errors) != 0 || s.RacesHit != 0 || s.OnReused != 0 ||
		c.DeadOnCheckout+c.PeerClosedIdle != 2 || c.DeadOnReturn != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestTLSPostBody: request bodies (inline, streamed, chunked) over TLS.
func TestTLSPostBody(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	e := startEngine(t, engine.Config{})
	cfg := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	for _, tc := range []struct {
		size int
		cl   int64
	}{{100, 100}, {1 << 20, 1 << 20}, {300000, -1}} {
		h := new(parser.Request)
		if _, err := h.Parse([]byte("POST /echo HTTP/1.1\r\nHost: origin.test\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		req := &engine.Request{Upstream: engine.Upstream{Addr: ngx.TLSAddr(), TLS: cfg}, Head: h,
			Body: bytes.NewReader(bench.PatternBody(tc.size)), ContentLength: tc.cl}
		resp, body, err := fetch(e, req)
		if err != nil || resp.Status != 200 || string(body) != strconv.Itoa(tc.size)+"\n" {
			t.Fatalf("POST %d bytes (cl %d): %v, %q", tc.size, tc.cl, err, body)
		}
	}
}

// TestTLSTransport: the http.RoundTripper takes https:// URLs, with the
// URL's host as the server name; plain Transport verifies against the
// system roots, which do not know the test CA.
func TestTLSTransport(t *testing.T) {
	leakBaseline(t)
	ngx, pki := tlsNginx(t, false)
	e := startEngine(t, engine.Config{})
	url := "https://" + ngx.TLSAddr() + "/16k"
	client := &http.Client{Transport: e.TransportTLS(&engine.TLS{RootCAs: pki.CAPEM})}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, bench.PatternBody(bench.Size16K)) {
		t.Fatalf("GET %s: %d, %d bytes, %v", url, resp.StatusCode, len(body), err)
	}
	logs := ngx.WaitTLSRequests(1, requestTimeout)
	if len(logs) != 1 || logs[0].ServerName != "" {
		// An IP address is never sent as SNI.
		t.Fatalf("TLS log %+v, want one request without SNI", logs)
	}
	// A Host field other than the URL's (httputil.ReverseProxy forwards
	// its client's) is not the server name: as with net/http, the URL's
	// host is, here an IP address.
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = "client.example"
	resp, err = client.Do(req)
	if err != nil {
		t.Fatalf("GET %s with Host %s: %v", url, req.Host, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if logs := ngx.WaitTLSRequests(2, requestTimeout); len(logs) != 2 || logs[1].ServerName != "" {
		t.Fatalf("TLS log %+v, want a second request without SNI", logs)
	}
	_, err = (&http.Client{Transport: e.Transport()}).Get(url)
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) {
		t.Fatalf("system roots: %v, want x509.UnknownAuthorityError", err)
	}
}

// TestTLSHandshakeTimeout: a server that accepts and never answers the
// ClientHello fails the request with a PhaseTLS error matching
// conn.ErrTLSHandshakeTimeout. A fault-injection origin.
func TestTLSHandshakeTimeout(t *testing.T) {
	leakBaseline(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		_, _ = io.Copy(io.Discard, br) // read the ClientHello, say nothing
	})
	e := startEngine(t, engine.Config{TLSHandshakeTimeout: 100 * time.Millisecond})
	h := new(parser.Request)
	if _, err := h.Parse([]byte("GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_, _, err := fetch(e, &engine.Request{Upstream: engine.Upstream{Addr: o.Addr(), TLS: &engine.TLS{}}, Head: h})
	ce := conn.AsError(err)
	if ce == nil || ce.Phase != conn.PhaseTLS || !errors.Is(err, conn.ErrTLSHandshakeTimeout) {
		t.Fatalf("err %v, want a PhaseTLS handshake timeout", err)
	}
	o.Close()
}

// TestTLSStaleRaceRetried: a TLS origin that drops a kept-alive
// connection on the next request, closing TCP without close_notify
// (crypto/tls reports a close between records as io.EOF): the engine sees
// the stale keep-alive race and retries the GET on a fresh connection. A
// fault-injection origin.
func TestTLSStaleRaceRetried(t *testing.T) {
	leakBaseline(t)
	pki := bench.NewPKI(t, "origin.test")
	srv := &tls.Config{Certificates: []tls.Certificate{pki.Server}}
	o := bench.NewOrigin(t, func(i int, c net.Conn, _ *bufio.Reader) {
		tc := tls.Server(c, srv)
		br := bufio.NewReader(tc)
		for n := 0; ; n++ {
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
			if i == 0 && n == 1 {
				return // the raw close (NewOrigin's): no close_notify, no answer
			}
			if _, err := io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
		}
	})
	e := startEngine(t, engine.Config{})
	cfg := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	for i := 0; i < 2; i++ {
		h := new(parser.Request)
		if _, err := h.Parse([]byte("GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		resp, body, err := fetch(e, &engine.Request{Upstream: engine.Upstream{Addr: o.Addr(), TLS: cfg}, Head: h})
		if err != nil || resp.Status != 200 || string(body) != "ok" {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	_, s := statsWithPrefix(t, e, o.Addr())
	if s.RacesHit != 1 || s.RacesRetried != 1 || s.Requests != 2 || s.Attempts != 3 || s.TLSHandshakes != 2 {
		t.Fatalf("stats %+v; want one race, retried", s)
	}
}

// TestTLS13ClientCertRefusedIsTLSPhase: a TLS 1.3 origin that requires a
// client certificate sends its "certificate required" alert after the
// client's side of the handshake is done, so the engine meets it reading
// the response. It is a TLS failure all the same (PhaseTLS, as it is with
// TLS 1.2, where the handshake itself fails), and the peer's passive
// health counts it.
func TestTLS13ClientCertRefusedIsTLSPhase(t *testing.T) {
	leakBaseline(t)
	pki := bench.NewPKI(t, "origin.test")
	cas := x509.NewCertPool()
	cas.AppendCertsFromPEM(pki.CAPEM)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.Server}, MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: cas})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello") }),
		ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	anon := &engine.TLS{ServerName: "origin.test", RootCAs: pki.CAPEM}
	e := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{"g": {
		Peers: []engine.Peer{{Name: "o", Addr: ln.Addr().String(), TLS: anon}},
	}}})
	h := new(parser.Request)
	if _, err := h.Parse([]byte("GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_, _, err = fetch(e, &engine.Request{Upstream: engine.Upstream{Group: "g"}, Head: h})
	ce := conn.AsError(err)
	if ce == nil || ce.Phase != conn.PhaseTLS || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("err %v, want a PhaseTLS error naming the alert", err)
	}
	if p := e.PeerStats()["g"].Peers[0]; p.Failures != 1 {
		t.Fatalf("peer %+v: the refusal did not count against it", p)
	}

	// With another peer, the GET it refused goes there: the request never
	// reached the refusing server's HTTP side.
	ngx, npki := tlsNginx(t, false)
	e2 := startEngine(t, engine.Config{Groups: map[string]engine.GroupConfig{"g": {Peers: []engine.Peer{
		{Name: "o", Addr: ln.Addr().String(), TLS: anon},
		{Name: "ngx", Addr: ngx.TLSAddr(), TLS: &engine.TLS{ServerName: "origin.test", RootCAs: npki.CAPEM}},
	}}}})
	resp, body, err := fetch(e2, &engine.Request{Upstream: engine.Upstream{Group: "g"}, Head: groupHead(t, "/small", "origin.test")})
	if err != nil || resp.Status != 200 || string(body) != bench.SmallBody {
		t.Fatalf("GET through the group: %v %q", err, body)
	}
	if p := e2.PeerStats()["g"].Peers[0]; p.Failures != 1 || p.Rerouted != 1 {
		t.Fatalf("refusing peer %+v: want one failure, one request rerouted", p)
	}
}
