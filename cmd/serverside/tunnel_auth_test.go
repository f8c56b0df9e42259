package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/engine"
)

// TestForwardHTTPSParentLogin: an absolute-form https:// request through a
// -parent whose URL credentials are an engine login (preemptive=0): the
// CONNECT of the pooled tunnel answers the parent's Basic or Digest 407
// with them, as a client's CONNECT does, rather than fail with a 502.
func TestForwardHTTPSParentLogin(t *testing.T) {
	needTools(t)
	if bench.SquidBinary() == "" {
		t.Skip("squid not installed")
	}
	bench.CheckLeaks(t)
	ng, pki := tlsOrigin(t, false)
	get := "GET https://" + ng.TLSAddr() + "/small HTTP/1.1\r\nHost: " + ng.TLSAddr() + "\r\nConnection: close\r\n\r\n"
	for _, scheme := range []string{"basic", "digest"} {
		sq := bench.StartSquid(t, bench.SquidOptions{Auth: scheme, ConnectPorts: []int{bench.Port(t, ng.TLSAddr())},
			Users: map[string]string{"alice": "s3cret"}})
		cfg := engine.Config{}
		if err := withPeers(&cfg, nil, []string{"http://alice:s3cret@" + sq.Addr() + "?preemptive=0"}, ""); err != nil {
			t.Fatal(err)
		}
		px := startProxyClient(t, cfg, clientConfig{ForwardTLS: &engine.TLS{RootCAs: pki.CAPEM}})
		for i := 0; i < 2; i++ {
			if status, body := rawGet(t, px, get); status != 200 || body != bench.SmallBody {
				t.Fatalf("%s, request %d: %d %q", scheme, i, status, body)
			}
		}
	}
}

// TestConnectThroughSquidDigest: curl's CONNECT through the demo to a
// Squid parent demanding Digest: the demo answers Squid's challenge with
// the -parent URL's credentials and the tunnel carries curl's TLS to
// nginx; with a wrong password Squid's 407 reaches curl.
func TestConnectThroughSquidDigest(t *testing.T) {
	needTools(t)
	if bench.SquidBinary() == "" {
		t.Skip("squid not installed")
	}
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng, pki := tlsOrigin(t, false)
	sq := bench.StartSquid(t, bench.SquidOptions{Auth: "digest", ConnectPorts: []int{bench.Port(t, ng.TLSAddr())},
		Users: map[string]string{"alice": "s3cret"}})
	// The URL's credentials as the peer's own (preemptive Basic first),
	// then as an engine login (preemptive=0: no Basic ever sent).
	for _, u := range []string{"http://alice:s3cret@" + sq.Addr(), "http://alice:s3cret@" + sq.Addr() + "?preemptive=0"} {
		_, good := startTunnelAuthProxy(t, engine.Config{}, u, false)
		out, _ := curl(t, "-x", "http://"+good, "--cacert", pki.CAFile, "https://"+ng.TLSAddr()+"/small")
		if out != bench.SmallBody {
			t.Fatalf("%s: %q", redactURL(u), out)
		}
	}
	// Squid logs a tunnel when it ends: wait (bounded) for the lines.
	ok := 0
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ok = 0
		for _, l := range sq.AccessLog() {
			if strings.Contains(l, "CONNECT "+ng.TLSAddr()) && strings.Contains(l, "/200 ") && strings.Contains(l, " alice ") {
				ok++
			}
		}
		if ok >= 2 || time.Now().After(deadline) {
			break
		}
	}
	if ok != 2 {
		t.Fatalf("Squid logged %d tunnels for alice, want 2:\n%s", ok, strings.Join(sq.AccessLog(), "\n"))
	}
	_, bad := startTunnelAuthProxy(t, engine.Config{}, "http://alice:wrong@"+sq.Addr(), false)
	_, errOut, code := curlStatus(t, "-x", "http://"+bad, "--cacert", pki.CAFile, "https://"+ng.TLSAddr()+"/small")
	if code == 0 || !strings.Contains(errOut, "407") {
		t.Fatalf("wrong password: curl exit %d: %s", code, errOut)
	}
}

// startTunnelAuthProxy serves a forward proxy through parent, with
// -client-auth pass when pass, letting CONNECT reach any port; cfg may set
// engine timeouts.
func startTunnelAuthProxy(t *testing.T, cfg engine.Config, parent string, pass bool) (*proxy, string) {
	t.Helper()
	if err := withPeers(&cfg, nil, []string{parent}, ""); err != nil {
		t.Fatal(err)
	}
	if pass {
		if err := withClientAuth(&cfg, clientAuthPass); err != nil {
			t.Fatal(err)
		}
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Shards, cfg.Logger = 2, logger
	p, err := newProxy(logger, nil, cfg, clientConfig{ConnectPorts: portSet{any: true}})
	if err != nil {
		t.Fatal(err)
	}
	return p, serveProxy(t, p)
}

// connect sends a CONNECT with Proxy-Authorization pa on rc and reads the
// answer (a refusal's body included).
func (rc *rawClient) connect(t *testing.T, target, pa string) (*http.Response, string) {
	t.Helper()
	rc.write(t, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\nProxy-Authorization: "+pa+"\r\n\r\n")
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatalf("CONNECT answer: %v", err)
	}
	body := ""
	if resp.StatusCode/100 != 2 {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		body = string(b)
	}
	return resp, body
}

// TestConnectNTLMThroughSquid: a client's NTLM handshake with a Squid
// parent through the demo (-client-auth pass) on CONNECT: the Type 1
// CONNECT gets Squid's Type 2 challenge, the client connection stays open
// and the parent connection pinned, and the Type 3 CONNECT goes on that
// Squid connection and opens the tunnel, which carries TLS to nginx. A
// pinned parent connection that expires while the client is idle closes
// the client connection.
func TestConnectNTLMThroughSquid(t *testing.T) {
	needTools(t)
	if bench.SquidBinary() == "" {
		t.Skip("squid not installed")
	}
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng, pki := tlsOrigin(t, false)
	target := ng.TLSAddr()
	plog, extra := squidPortLog(t)
	sq := bench.StartSquid(t, bench.SquidOptions{Auth: "ntlm", ConnectPorts: []int{bench.Port(t, target)}, Extra: extra})
	p, px := startTunnelAuthProxy(t, engine.Config{}, "http://"+sq.Addr(), true)

	rc := dialRaw(t, px)
	resp, _ := rc.connect(t, target, bench.NTLMNegotiate())
	if resp.StatusCode != 407 || !strings.HasPrefix(resp.Header.Get("Proxy-Authenticate"), "NTLM T") || resp.Close {
		t.Fatalf("Type 1: %d %v; want a 407 with a Type 2 challenge, connection kept", resp.StatusCode, resp.Header)
	}
	waitPinned(t, p, 1)
	if resp, _ = rc.connect(t, target, bench.NTLMAuthenticate("DOM", "carol", "WS")); resp.StatusCode != 200 {
		t.Fatalf("Type 3: %d %v", resp.StatusCode, resp.Header)
	}
	waitPinned(t, p, 0) // the pinned connection is the tunnel now
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pki.CAPEM)
	tc := tls.Client(rc.c, &tls.Config{ServerName: "origin.test", RootCAs: roots})
	if _, err := io.WriteString(tc, "GET /small HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	got, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(got.Body)
	if got.StatusCode != 200 || string(body) != bench.SmallBody {
		t.Fatalf("through the tunnel: %d %q", got.StatusCode, body)
	}
	_ = tc.Close()
	// Squid logs the 407 at once and the tunnel when it ends.
	lines := plog.lines(t, 2)
	if len(lines) != 2 || lines[0].status != 407 || lines[1].status != 200 || lines[0].port != lines[1].port ||
		!strings.Contains(lines[1].user, "carol") {
		t.Fatalf("Squid's log: want the 407 and carol's tunnel on one connection:\n%+v", lines)
	}

	// The pinned parent connection expires while the client is idle: the
	// demo closes the client connection (Config.OnPinnedClosed).
	p2, px2 := startTunnelAuthProxy(t, engine.Config{PinnedIdleTimeout: 50 * time.Millisecond}, "http://"+sq.Addr(), true)
	rc2 := dialRaw(t, px2)
	if resp, _ := rc2.connect(t, target, bench.NTLMNegotiate()); resp.StatusCode != 407 {
		t.Fatalf("Type 1: %d", resp.StatusCode)
	}
	if !rc2.eof(t) {
		t.Fatal("the client connection is still open after its pinned parent connection expired")
	}
	waitPinned(t, p2, 0)
}

// TestConnectNTLMPinnedGone: the parent closes the pinned connection
// right after its NTLM challenge (a fault-injecting parent: it answers
// one CONNECT per connection). The client's Type 3 CONNECT is not sent on
// a new connection: the client gets a 502 naming the cause, and its
// connection is closed.
func TestConnectNTLMPinnedGone(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan int, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		n := 0
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n++
			accepted <- n
			br := bufio.NewReader(c)
			if req, err := http.ReadRequest(br); err == nil && req.Method == "CONNECT" {
				_, _ = io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\n"+
					"Proxy-Authenticate: NTLM TlRMTVNTUAACAAAAAAAAADgAAAAFgomiESIzRFVmd4gAAAAAAAAAAAAAAAAAAAAA\r\n"+
					"Content-Length: 0\r\n\r\n")
			}
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	_, px := startTunnelAuthProxy(t, engine.Config{}, "http://"+ln.Addr().String(), true)
	rc := dialRaw(t, px)
	if resp, _ := rc.connect(t, "origin.test:443", bench.NTLMNegotiate()); resp.StatusCode != 407 {
		t.Fatalf("Type 1: %d", resp.StatusCode)
	}
	resp, body := rc.connect(t, "origin.test:443", bench.NTLMAuthenticate("DOM", "erin", "WS"))
	if resp.StatusCode != 502 || !resp.Close || !strings.Contains(body, "NTLM") {
		t.Fatalf("Type 3 after the parent closed: %d (close %v) %q; want 502 naming the cause", resp.StatusCode, resp.Close, body)
	}
	if !rc.eof(t) {
		t.Fatal("the client connection is still open after the 502")
	}
	if n := len(accepted); n != 1 {
		t.Fatalf("the parent accepted %d connections, want 1: the Type 3 went nowhere else", n)
	}
}

// TestConnectRefusalCutShort: a parent whose refusal ends before the
// Content-Length it announced (a fault-injecting parent that closes
// early). The message is incomplete (RFC 9112 §8), and the client must
// be able to tell: the refusal goes out with Connection: close and a
// chunked body that lacks its last chunk, never with a Content-Length
// that would pass the bytes that came for the whole body; and the
// connection ends.
func TestConnectRefusalCutShort(t *testing.T) {
	bench.CheckLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 100\r\n\r\nshort")
	})
	_, px := startTunnelAuthProxy(t, engine.Config{}, "http://"+o.Addr(), false)
	rc := dialRaw(t, px)
	rc.write(t, "CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n")
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 403 || !resp.Close {
		t.Fatalf("refusal: %d, close %v; want 403 with Connection: close", resp.StatusCode, resp.Close)
	}
	if b, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) || string(b) != "short" {
		t.Fatalf("refusal body %q, %v; want %q cut short (unexpected EOF)", b, err, "short")
	}
	if !rc.eof(t) {
		t.Fatal("the client connection is still open after an incomplete refusal")
	}
}

// TestConnectRefusalOverLimit: a parent's refusal whose body is longer
// than the engine keeps (conn.MaxRefusalBody) reaches the client cut
// short, as a chunked body without its last chunk and Connection: close,
// not as a complete body of MaxRefusalBody bytes; an HTTP/1.0 client,
// which cannot be sent chunks, gets the body up to the close, and the
// close is a reset.
func TestConnectRefusalOverLimit(t *testing.T) {
	bench.CheckLeaks(t)
	big := strings.Repeat("x", conn.MaxRefusalBody+1000)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: "+strconv.Itoa(len(big))+"\r\n\r\n"+big)
	})
	_, px := startTunnelAuthProxy(t, engine.Config{}, "http://"+o.Addr(), false)

	rc := dialRaw(t, px)
	rc.write(t, "CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n")
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 403 || !resp.Close {
		t.Fatalf("refusal: %d, close %v; want 403 with Connection: close", resp.StatusCode, resp.Close)
	}
	if b, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) || string(b) != big[:conn.MaxRefusalBody] {
		t.Fatalf("refusal body of %d bytes, %v; want the first %d cut short (unexpected EOF)", len(b), err, conn.MaxRefusalBody)
	}

	rc = dialRaw(t, px)
	rc.write(t, "CONNECT origin.test:443 HTTP/1.0\r\n\r\n")
	resp, err = http.ReadResponse(rc.br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 403 || resp.ContentLength != -1 || len(resp.TransferEncoding) != 0 {
		t.Fatalf("HTTP/1.0 refusal: %d, length %d, codings %q; want 403 delimited by the close", resp.StatusCode, resp.ContentLength, resp.TransferEncoding)
	}
	if b, err := io.ReadAll(resp.Body); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("HTTP/1.0 refusal body of %d bytes, %v; want a reset", len(b), err)
	}
}

// TestConnectRefusalAuthInfoWithheld: a parent (fault-injecting: Squid
// sends none on its error pages) whose refusal of a CONNECT carries
// Proxy-Authentication-Info. That field is for the next outbound client
// only (RFC 9110 §11.7.3): when the demo's own credentials went to the
// parent (-parent with userinfo), its nextnonce or rspauth are about the
// demo's login, and the refusal reaches the client without it, as a
// response to a request does (TestOwnLoginInfoWithheld). With -client-auth
// pass, to a parent without credentials, the client's Proxy-Authorization
// went there: the field is the client's, and it is relayed.
func TestConnectRefusalAuthInfoWithheld(t *testing.T) {
	bench.CheckLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\n"+
				"Proxy-Authentication-Info: nextnonce=\"abc\", rspauth=\"0123\", cnonce=\"x\", nc=00000001\r\n"+
				"Content-Length: 2\r\n\r\nno")
		}
	})
	for _, tc := range []struct {
		parent string
		pass   bool
		want   string
	}{
		{"http://alice:pw@" + o.Addr(), false, ""},
		{"http://alice:pw@" + o.Addr() + "?preemptive=0", false, ""},
		{"http://" + o.Addr(), true, `nextnonce="abc", rspauth="0123", cnonce="x", nc=00000001`},
	} {
		_, px := startTunnelAuthProxy(t, engine.Config{}, tc.parent, tc.pass)
		rc := dialRaw(t, px)
		resp, body := rc.connect(t, "origin.test:443", "Basic Ym9iOnNlY3JldA==")
		if resp.StatusCode != 403 || body != "no" || resp.Header.Get("Proxy-Authentication-Info") != tc.want {
			t.Fatalf("%s (pass %v): %d %v %q; want the 403 with Proxy-Authentication-Info %q",
				redactURL(tc.parent), tc.pass, resp.StatusCode, resp.Header, body, tc.want)
		}
	}
}
