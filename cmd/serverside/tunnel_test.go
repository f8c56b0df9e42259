package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// tlsOrigin starts nginx with a TLS listener whose certificate, from a
// fresh test CA, is valid for origin.test and 127.0.0.1.
func tlsOrigin(t *testing.T, clientCA bool) (*bench.Nginx, *bench.PKI) {
	t.Helper()
	pki := bench.NewPKI(t, "origin.test")
	opts := bench.NginxOptions{TLSCert: pki.ServerCert, TLSKey: pki.ServerKey}
	if clientCA {
		opts.TLSClientCA = pki.CAFile
	}
	return bench.StartNginx(t, opts), pki
}

// curlStatus runs curl and returns its stdout, stderr and exit code.
func curlStatus(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command("curl", append([]string{"-sS", "--max-time", "30"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("curl %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// rawConnect sends raw (a CONNECT head, maybe more) on a new connection
// to the proxy and reads the answer's head and body.
func rawConnect(t *testing.T, px, raw string) (net.Conn, *bufio.Reader, *http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatalf("read CONNECT answer: %v", err)
	}
	body := ""
	if resp.StatusCode/100 != 2 {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read answer body: %v", err)
		}
		body = string(b)
	}
	return c, br, resp, body
}

// TestConnectCurl: curl fetches https URLs through the demo's CONNECT
// tunnel to nginx's TLS port (allowed by ConnectPorts), twice; a port
// not allowed is answered 403.
func TestConnectCurl(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng, pki := tlsOrigin(t, false)
	tlsPort := bench.Port(t, ng.TLSAddr())
	px := startProxyClient(t, engine.Config{}, clientConfig{ConnectPorts: portSet{ports: []int{tlsPort}}})
	for i := 0; i < 2; i++ {
		out, _ := curl(t, "-x", "http://"+px, "--cacert", pki.CAFile, "https://"+ng.TLSAddr()+"/small")
		if out != bench.SmallBody {
			t.Fatalf("body %q", out)
		}
	}
	reqs := ng.WaitTLSRequests(2, 10*time.Second)
	if len(reqs) != 2 || reqs[0].Status != 200 || reqs[1].Status != 200 {
		t.Fatalf("nginx TLS log %+v, want two 200s", reqs)
	}
	// The plain port is not allowed: 403, and the connection closes.
	_, br, resp, body := rawConnect(t, px, "CONNECT "+ng.Addr()+" HTTP/1.1\r\nHost: "+ng.Addr()+"\r\n\r\n")
	if resp.StatusCode != 403 || body != "CONNECT to port "+strconv.Itoa(bench.Port(t, ng.Addr()))+" is not allowed\n" {
		t.Fatalf("disallowed port: %d %q", resp.StatusCode, body)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the 403: %v, want EOF", err)
	}
	_, errOut, code := curlStatus(t, "-x", "http://"+px, "http://"+ng.Addr()+"/small", "-p")
	if code == 0 || !strings.Contains(errOut, "403") {
		t.Fatalf("curl -p to a disallowed port: exit %d, %s", code, errOut)
	}
}

// TestTunnelMetrics: the tunnel families in /metrics, parsed back
// strictly.
func TestTunnelMetrics(t *testing.T) {
	var m tunnelMetrics
	m.opened.Add(3)
	m.open.Add(1)
	m.refused.Add(2)
	m.failed.Add(4)
	m.up.Add(100)
	m.down.Add(5000)
	var b bytes.Buffer
	m.write(expo{&b})
	pt, err := parseProm(b.String())
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"serverside_tunnels_open", nil, 1},
		{"serverside_tunnels_total", nil, 3},
		{"serverside_tunnel_refusals_total", nil, 2},
		{"serverside_tunnel_failures_total", nil, 4},
		{"serverside_tunnel_bytes_total", []string{"direction", "up"}, 100},
		{"serverside_tunnel_bytes_total", []string{"direction", "down"}, 5000},
	} {
		if got := pt.get(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// TestConnectEarlyBytes: bytes the client sends right behind the CONNECT
// head, before the 200, reach the target first; a half-close from the
// client reaches it too, and the target's answer still comes back.
func TestConnectEarlyBytes(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxyClient(t, engine.Config{}, clientConfig{ConnectPorts: portSet{any: true}})
	get := "GET /small HTTP/1.1\r\nHost: " + ng.Addr() + "\r\n\r\n"
	c, br, resp, _ := rawConnect(t, px, "CONNECT "+ng.Addr()+" HTTP/1.1\r\nHost: "+ng.Addr()+"\r\n\r\n"+get+get)
	if resp.StatusCode != 200 || resp.Status != "200 Connection established" {
		t.Fatalf("CONNECT: %s", resp.Status)
	}
	for i := 0; i < 2; i++ {
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, _ := io.ReadAll(r.Body)
		if r.StatusCode != 200 || string(b) != bench.SmallBody {
			t.Fatalf("response %d: %d %q", i, r.StatusCode, b)
		}
	}
	// A request sent after a half-close is still answered; then nginx
	// closes and the client sees EOF.
	if _, err := io.WriteString(c, "GET /16k HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	r, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, r.Body)
	if r.StatusCode != 200 || n != 16<<10 {
		t.Fatalf("after half-close: %d, %d bytes", r.StatusCode, n)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("end: %v, want EOF", err)
	}
}

// TestConnectLargeDownload: 64 MiB of random bytes over https through the
// tunnel, checked by SHA-256.
func TestConnectLargeDownload(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng, pki := tlsOrigin(t, false)
	const size = 64 << 20
	want := writeRandomFile(t, filepath.Join(ng.Dir(), "html", "files", "big"), size)
	px := startProxyClient(t, engine.Config{}, clientConfig{ConnectPorts: portSet{ports: []int{bench.Port(t, ng.TLSAddr())}}})
	out := filepath.Join(t.TempDir(), "big")
	curl(t, "-x", "http://"+px, "--cacert", pki.CAFile, "-o", out, "https://"+ng.TLSAddr()+"/files/big")
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, _ := io.Copy(h, f)
	if n != size || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("%d bytes, sha256 %s, want %d and %s", n, hex.EncodeToString(h.Sum(nil)), size, hex.EncodeToString(want[:]))
	}
}

// TestConnectFailures: a target that refuses connections is 502 with the
// reason; a reverse proxy answers CONNECT 501 (no Allow to give for a 405).
func TestConnectFailures(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	px := startProxyClient(t, engine.Config{}, clientConfig{ConnectPorts: portSet{any: true}})
	dead := freeAddr(t)
	_, _, resp, body := rawConnect(t, px, "CONNECT "+dead+" HTTP/1.1\r\nHost: "+dead+"\r\n\r\n")
	if resp.StatusCode != 502 || !strings.HasPrefix(body, "tunnel to "+dead+": upstream error: ") || !strings.Contains(body, "connection refused") {
		t.Fatalf("dead target: %d %q", resp.StatusCode, body)
	}
	ng := bench.StartNginx(t, bench.NginxOptions{})
	rp := startProxy(t, "http://"+ng.Addr())
	_, _, resp, body = rawConnect(t, rp, "CONNECT "+ng.Addr()+" HTTP/1.1\r\nHost: "+ng.Addr()+"\r\n\r\n")
	if resp.StatusCode != 501 || body != "CONNECT is for forward mode; this proxy is a reverse proxy\n" || resp.Header.Get("Allow") != "" {
		t.Fatalf("reverse mode: %d %q", resp.StatusCode, body)
	}
}

// TestConnectWithContent: a CONNECT has no content (RFC 9110 §9.3.6), so
// one that declares some, with a non-zero Content-Length or
// Transfer-Encoding, is answered 400 and no tunnel opens: its bytes are
// neither a body to drop nor tunnel data to send. Content-Length: 0 is
// no content.
func TestConnectWithContent(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxyClient(t, engine.Config{}, clientConfig{ConnectPorts: portSet{any: true}})
	get := "GET /small HTTP/1.1\r\nHost: " + ng.Addr() + "\r\n\r\n"
	for _, fields := range []string{
		"Content-Length: " + strconv.Itoa(len(get)) + "\r\n",
		"Transfer-Encoding: chunked\r\n",
	} {
		_, br, resp, body := rawConnect(t, px, "CONNECT "+ng.Addr()+" HTTP/1.1\r\nHost: "+ng.Addr()+"\r\n"+fields+"\r\n"+get)
		if resp.StatusCode != 400 || body != "a CONNECT request has no body\n" {
			t.Fatalf("%q: %d %q", fields, resp.StatusCode, body)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("%q: after the 400: %v, want EOF", fields, err)
		}
	}
	_, br, resp, _ := rawConnect(t, px, "CONNECT "+ng.Addr()+" HTTP/1.1\r\nHost: "+ng.Addr()+"\r\nContent-Length: 0\r\n\r\n"+get)
	if resp.StatusCode != 200 {
		t.Fatalf("Content-Length: 0: %d", resp.StatusCode)
	}
	r, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || string(b) != bench.SmallBody {
		t.Fatalf("through the tunnel: %d %q", r.StatusCode, b)
	}
}

// TestConnectThroughSquid: CONNECT through a Squid parent with Basic
// credentials from the -parent URL; without them, or with wrong ones,
// Squid's 407 reaches the client with its body, without the challenge
// that the client's answer could not meet (without -client-auth pass the
// demo does not send it), and the client connection stays usable.
func TestConnectThroughSquid(t *testing.T) {
	needTools(t)
	if bench.SquidBinary() == "" {
		t.Skip("squid not installed")
	}
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng, pki := tlsOrigin(t, false)
	tlsPort := bench.Port(t, ng.TLSAddr())
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{tlsPort}, Users: map[string]string{"alice": "s3cret"}})
	// The demo lets every port through; Squid allows only nginx's TLS port.
	ccfg := clientConfig{ConnectPorts: portSet{any: true}}
	proxyVia := func(parent string) string {
		cfg := engine.Config{}
		if err := withPeers(&cfg, nil, []string{parent}, "roundrobin"); err != nil {
			t.Fatal(err)
		}
		return startProxyClient(t, cfg, ccfg)
	}
	good := proxyVia("http://alice:s3cret@" + sq.Addr())
	out, _ := curl(t, "-x", "http://"+good, "--cacert", pki.CAFile, "https://"+ng.TLSAddr()+"/small")
	if out != bench.SmallBody {
		t.Fatalf("with credentials: %q", out)
	}
	for _, parent := range []string{"http://" + sq.Addr(), "http://alice:wrong@" + sq.Addr()} {
		px := proxyVia(parent)
		c, br, resp, body := rawConnect(t, px, "CONNECT "+ng.TLSAddr()+" HTTP/1.1\r\nHost: "+ng.TLSAddr()+"\r\n\r\n")
		if resp.StatusCode != 407 || resp.Header.Get("Proxy-Authenticate") != "" || resp.Header.Get("X-Squid-Error") == "" ||
			resp.Header.Get("Via") == "" || body == "" || resp.ContentLength != int64(len(body)) {
			t.Fatalf("%s: %d %v body %d bytes", parent, resp.StatusCode, resp.Header, len(body))
		}
		// Kept alive: a second CONNECT on the same connection is refused
		// the same way.
		if _, err := io.WriteString(c, "CONNECT "+ng.TLSAddr()+" HTTP/1.1\r\nHost: "+ng.TLSAddr()+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp2, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
		if err != nil || resp2.StatusCode != 407 {
			t.Fatalf("%s: second CONNECT: %v %v", parent, resp2, err)
		}
		_, errOut, code := curlStatus(t, "-x", "http://"+px, "--cacert", pki.CAFile, "https://"+ng.TLSAddr()+"/small")
		if code == 0 || !strings.Contains(errOut, "407") {
			t.Fatalf("%s: curl exit %d: %s", parent, code, errOut)
		}
	}
	// Squid's 403 for a port it does not allow is relayed too.
	_, _, resp, body := rawConnect(t, good, "CONNECT "+ng.Addr()+" HTTP/1.1\r\nHost: "+ng.Addr()+"\r\n\r\n")
	if resp.StatusCode != 403 || resp.ContentLength != int64(len(body)) || !strings.Contains(resp.Header.Get("Server"), "squid") {
		t.Fatalf("port Squid denies: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestConnectRefusedEarlyBytes: bytes a client sent right behind its
// CONNECT were meant for the tunnel (RFC 9110 §9.3.6), so when Squid
// refuses the CONNECT they are not read as a request: the refusal comes
// with Connection: close, the connection closes, and the request hidden
// in them never reaches nginx.
func TestConnectRefusedEarlyBytes(t *testing.T) {
	needTools(t)
	if bench.SquidBinary() == "" {
		t.Skip("squid not installed")
	}
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{443}})
	cfg := engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://" + sq.Addr()}, "roundrobin"); err != nil {
		t.Fatal(err)
	}
	px := startProxyClient(t, cfg, clientConfig{ConnectPorts: portSet{any: true}})
	early := "GET http://" + ng.Addr() + "/small HTTP/1.1\r\nHost: " + ng.Addr() + "\r\n\r\n"
	_, br, resp, _ := rawConnect(t, px, "CONNECT "+ng.Addr()+" HTTP/1.1\r\nHost: "+ng.Addr()+"\r\n\r\n"+early)
	if resp.StatusCode != 403 || !resp.Close {
		t.Fatalf("refused CONNECT: %d, close %v; want 403 and Connection: close", resp.StatusCode, resp.Close)
	}
	if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
		t.Fatalf("after the refusal: %q, %v; want EOF", b, err)
	}
	for _, r := range ng.Requests() {
		if r.URI == "/small" {
			t.Fatalf("the tunnel bytes reached nginx as a request: %+v", r)
		}
	}
}

// rawGet sends one request head to the proxy and returns the status and
// body.
func rawGet(t *testing.T, px, head string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, string(b)
}

// TestForwardHTTPSAbsoluteForm: an absolute-form https:// request goes to
// the origin over TLS, verified against the configured CA; against the
// system roots it fails with 502 naming the reason. Through a Squid
// parent it goes in a CONNECT tunnel, TLS inside.
func TestForwardHTTPSAbsoluteForm(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng, pki := tlsOrigin(t, false)
	get := "GET https://" + ng.TLSAddr() + "/small HTTP/1.1\r\nHost: " + ng.TLSAddr() + "\r\nConnection: close\r\n\r\n"
	px := startProxyClient(t, engine.Config{}, clientConfig{ForwardTLS: &engine.TLS{RootCAs: pki.CAPEM}})
	if status, body := rawGet(t, px, get); status != 200 || body != bench.SmallBody {
		t.Fatalf("https target: %d %q", status, body)
	}
	sys := startProxyClient(t, engine.Config{}, clientConfig{})
	if status, body := rawGet(t, sys, get); status != 502 || body != "upstream TLS: certificate signed by unknown authority\n" {
		t.Fatalf("system roots: %d %q", status, body)
	}
	if reqs := ng.WaitTLSRequests(1, 10*time.Second); len(reqs) != 1 || reqs[0].URI != "/small" {
		t.Fatalf("nginx TLS log %+v", reqs)
	}
	if bench.SquidBinary() == "" {
		return
	}
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ng.TLSAddr())}, Users: map[string]string{"alice": "s3cret"}})
	cfg := engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://alice:s3cret@" + sq.Addr()}, ""); err != nil {
		t.Fatal(err)
	}
	viaSquid := startProxyClient(t, cfg, clientConfig{ForwardTLS: &engine.TLS{RootCAs: pki.CAPEM}})
	for i := 0; i < 2; i++ {
		if status, body := rawGet(t, viaSquid, get); status != 200 || body != bench.SmallBody {
			t.Fatalf("through squid: %d %q", status, body)
		}
	}
	// Squid logs a CONNECT when the tunnel ends, and the engine keeps it
	// for reuse: show that the route goes through Squid by its refusal of
	// the wrong password instead.
	cfg = engine.Config{}
	if err := withPeers(&cfg, nil, []string{"http://alice:wrong@" + sq.Addr()}, ""); err != nil {
		t.Fatal(err)
	}
	wrong := startProxyClient(t, cfg, clientConfig{ForwardTLS: &engine.TLS{RootCAs: pki.CAPEM}})
	if status, body := rawGet(t, wrong, get); status != 502 || !strings.HasPrefix(body, "upstream tunnel refused: ") || !strings.Contains(body, "407") {
		t.Fatalf("wrong password: %d %q", status, body)
	}
	reqs := ng.WaitTLSRequests(3, 10*time.Second)
	if len(reqs) != 3 || reqs[1].Connection != reqs[2].Connection {
		t.Fatalf("nginx TLS log %+v, want the two requests through squid on one connection", reqs)
	}
}

// TestForwardTLSParent: -parent https://… speaks TLS to the parent
// (Squid's https_port), verified against -ca-file's CA: plain http
// requests in absolute form, CONNECT tunnels from curl and https://
// targets go through it, with the parent's credentials. The wrong CA is
// a 502 naming the reason.
func TestForwardTLSParent(t *testing.T) {
	needTools(t)
	if bench.SquidBinary() == "" {
		t.Skip("squid not installed")
	}
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng, pki := tlsOrigin(t, false)
	sq := bench.StartSquid(t, bench.SquidOptions{ConnectPorts: []int{bench.Port(t, ng.TLSAddr())},
		Users: map[string]string{"alice": "s3cret"}, TLSCert: pki.ServerCert, TLSKey: pki.ServerKey})
	viaTLS := func(roots []byte) string {
		cfg := engine.Config{}
		if err := withPeersTLS(&cfg, nil, []string{"https://alice:s3cret@" + sq.TLSAddr()}, "", tlsSettings{roots: roots}); err != nil {
			t.Fatal(err)
		}
		return startProxyClient(t, cfg, clientConfig{ConnectPorts: portSet{any: true}, ForwardTLS: &engine.TLS{RootCAs: pki.CAPEM}})
	}
	px := viaTLS(pki.CAPEM)
	for i := 0; i < 2; i++ {
		if out, _ := curl(t, "-x", "http://"+px, ng.URL("/small")); out != bench.SmallBody {
			t.Fatalf("http through the TLS parent, request %d: %q", i, out)
		}
	}
	if out, _ := curl(t, "-x", "http://"+px, "--cacert", pki.CAFile, "https://"+ng.TLSAddr()+"/small"); out != bench.SmallBody {
		t.Fatalf("CONNECT through the TLS parent: %q", out)
	}
	get := "GET https://" + ng.TLSAddr() + "/small HTTP/1.1\r\nHost: " + ng.TLSAddr() + "\r\nConnection: close\r\n\r\n"
	if status, body := rawGet(t, px, get); status != 200 || body != bench.SmallBody {
		t.Fatalf("https target through the TLS parent: %d %q", status, body)
	}
	if reqs := ng.WaitTLSRequests(2, 10*time.Second); len(reqs) != 2 {
		t.Fatalf("nginx logged %d TLS requests, want the CONNECT's and the https target's", len(reqs))
	}
	other := bench.NewPKI(t, "origin.test")
	wrong := viaTLS(other.CAPEM)
	if status, body := rawGet(t, wrong, "GET "+ng.URL("/small")+" HTTP/1.1\r\nHost: "+ng.Addr()+"\r\n\r\n"); status != 502 ||
		!strings.HasPrefix(body, "upstream TLS: certificate signed by unknown authority") {
		t.Fatalf("wrong CA for the parent: %d %q", status, body)
	}
}

// reverseTLS starts a reverse proxy to nginx's TLS port with the given
// origin URL options and TLS settings.
func reverseTLS(t *testing.T, ng *bench.Nginx, query string, ts tlsSettings) string {
	t.Helper()
	cfg := engine.Config{}
	if err := withPeersTLS(&cfg, []string{"https://" + ng.TLSAddr() + query}, nil, "", ts); err != nil {
		t.Fatal(err)
	}
	return startProxyClient(t, cfg, clientConfig{})
}

// TestReverseHTTPSOrigin: -origin https://… verified against -ca-file's
// CA, with the SNI of ?sni=; the wrong CA gives 502 with the reason.
func TestReverseHTTPSOrigin(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng, pki := tlsOrigin(t, false)
	px := reverseTLS(t, ng, "?sni=origin.test", tlsSettings{roots: pki.CAPEM})
	for i := 0; i < 2; i++ {
		out, _ := curl(t, "http://"+px+"/small")
		if out != bench.SmallBody {
			t.Fatalf("body %q", out)
		}
	}
	noSNI := reverseTLS(t, ng, "", tlsSettings{roots: pki.CAPEM})
	if out, _ := curl(t, "http://"+noSNI+"/small"); out != bench.SmallBody {
		t.Fatalf("without sni: %q", out)
	}
	reqs := ng.WaitTLSRequests(3, 10*time.Second)
	if len(reqs) != 3 {
		t.Fatalf("nginx logged %d TLS requests, want 3", len(reqs))
	}
	for i, r := range reqs {
		want := "origin.test"
		if i == 2 {
			want = "" // an IP address is not sent as SNI
		}
		if r.ServerName != want || r.Status != 200 {
			t.Errorf("request %d: SNI %q status %d, want %q 200", i, r.ServerName, r.Status, want)
		}
	}
	if reqs[0].Connection != reqs[1].Connection {
		t.Errorf("requests on connections %d and %d, want one kept alive", reqs[0].Connection, reqs[1].Connection)
	}
	other := bench.NewPKI(t, "origin.test")
	wrong := reverseTLS(t, ng, "", tlsSettings{roots: other.CAPEM})
	out, _, _ := curlStatus(t, "-w", "%{http_code}", "http://"+wrong+"/small")
	if !strings.HasPrefix(out, "upstream TLS: certificate signed by unknown authority") || !strings.HasSuffix(out, "\n502") {
		t.Fatalf("wrong CA: %q", out)
	}
	insecure := reverseTLS(t, ng, "", tlsSettings{insecure: true})
	if out, _ := curl(t, "http://"+insecure+"/small"); out != bench.SmallBody {
		t.Fatalf("insecure: %q", out)
	}
}

// TestReverseHTTPSOriginMTLS: nginx asks for a client certificate; without
// -client-cert nginx answers 400, with it 200 and nginx sees the
// certificate's subject. The certificate is loaded from PEM files as the
// flags do.
func TestReverseHTTPSOriginMTLS(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng, pki := tlsOrigin(t, true)
	dir := t.TempDir()
	x := cliExtras{caFile: pki.CAFile, clientCert: filepath.Join(dir, "client.pem"), clientKey: filepath.Join(dir, "client.key")}
	writeClientPEM(t, pki, x.clientCert, x.clientKey)
	ts, err := x.tlsSettings()
	if err != nil {
		t.Fatal(err)
	}
	noCert := reverseTLS(t, ng, "", tlsSettings{roots: ts.roots})
	out, _, _ := curlStatus(t, "-o", "/dev/null", "-w", "%{http_code}", "http://"+noCert+"/small")
	if out != "400" {
		t.Fatalf("without a client certificate: %q, want nginx's 400", out)
	}
	withCert := reverseTLS(t, ng, "", ts)
	if out, _ := curl(t, "http://"+withCert+"/small"); out != bench.SmallBody {
		t.Fatalf("with a client certificate: %q", out)
	}
	reqs := ng.WaitTLSRequests(2, 10*time.Second)
	if len(reqs) != 2 || reqs[0].ClientDN != "" || reqs[1].ClientDN != pki.ClientDN || reqs[1].Status != 200 {
		t.Fatalf("nginx TLS log %+v, want the client DN %q on the second", reqs, pki.ClientDN)
	}
	if _, err := (&cliExtras{clientCert: x.clientCert}).tlsSettings(); err == nil {
		t.Fatal("-client-cert without -client-key accepted")
	}
}

// writeClientPEM writes pki's client certificate and key as PEM files.
func writeClientPEM(t *testing.T, pki *bench.PKI, certFile, keyFile string) {
	t.Helper()
	var cb bytes.Buffer
	for _, der := range pki.Client.Certificate {
		_ = pem.Encode(&cb, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	kd, err := x509.MarshalPKCS8PrivateKey(pki.Client.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, cb.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestParsePorts(t *testing.T) {
	for _, c := range []struct {
		in      string
		allowed []int
		denied  []int
	}{
		{"443", []int{443}, []int{80, 8443}},
		{"443, 8443", []int{443, 8443}, []int{80, 444}},
		{"any", []int{1, 80, 443, 65535}, nil},
	} {
		ps, err := parsePorts(c.in)
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		for _, p := range c.allowed {
			if !ps.allows(p) {
				t.Errorf("%q denies %d", c.in, p)
			}
		}
		for _, p := range c.denied {
			if ps.allows(p) {
				t.Errorf("%q allows %d", c.in, p)
			}
		}
	}
	if !(portSet{}).allows(443) || (portSet{}).allows(80) {
		t.Error("the zero portSet is not 443 only")
	}
	for _, bad := range []string{"", "0", "65536", "443,", "https"} {
		if _, err := parsePorts(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestConnectIdleAndShutdown: a tunnel that moves no byte ends after the
// tunnel idle timeout; a busy one is closed by Shutdown when its deadline
// passes, and Shutdown returns.
func TestConnectIdleAndShutdown(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	connect := "CONNECT " + ng.Addr() + " HTTP/1.1\r\nHost: " + ng.Addr() + "\r\n\r\n"
	px := startProxyClient(t, engine.Config{}, clientConfig{ConnectPorts: portSet{any: true}, TunnelIdleTimeout: 200 * time.Millisecond})
	// nginx would wait 60 s for a request: the EOF is the proxy's.
	_, br, resp, _ := rawConnect(t, px, connect)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle tunnel: %v, want EOF", err)
	}

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := newProxy(logger, nil, engine.Config{Shards: 2, Logger: logger}, clientConfig{ConnectPorts: portSet{any: true}})
	if err != nil {
		t.Fatal(err)
	}
	addr, done := startServe(t, p)
	c, br, resp, _ := rawConnect(t, addr, connect)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	if _, err := io.WriteString(c, "GET /small HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, r.Body)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Logf("shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("tunnel after shutdown: %v, want EOF", err)
	}
	if n := p.tunnelsLive.Load(); n != 0 {
		t.Fatalf("%d tunnels live after shutdown", n)
	}
}

// TestTunnelIdleTimeoutZeroNever: -tunnel-idle-timeout 0 never ends an
// idle tunnel (an SSH or database session through CONNECT sits idle for
// long), as -client-park-after 0 never parks; it is not the 5m default.
// The flag's 0 reaches the proxy as a negative value, which it keeps,
// and the relay then sets no idle deadline: the tunnel still carries a
// request after an idle spell.
func TestTunnelIdleTimeoutZeroNever(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := newProxy(logger, nil, engine.Config{Shards: 2, Logger: logger},
		clientConfig{ConnectPorts: portSet{any: true}, TunnelIdleTimeout: zeroNever(0)})
	if err != nil {
		t.Fatal(err)
	}
	if d := p.cfg.TunnelIdleTimeout; d >= 0 {
		t.Fatalf("tunnel idle timeout %v for -tunnel-idle-timeout 0, want none (negative)", d)
	}
	px := serveProxy(t, p)
	c, br, resp, _ := rawConnect(t, px, "CONNECT "+ng.Addr()+" HTTP/1.1\r\nHost: "+ng.Addr()+"\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := io.WriteString(c, "GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("through the tunnel after an idle spell: %v", err)
	}
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || string(body) != bench.SmallBody {
		t.Fatalf("through the tunnel: %d %q", r.StatusCode, body)
	}
}

// Bad tunnel and TLS flags stop run with exit code 2 before anything
// listens.
func TestRunBadTunnelTLSFlags(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.pem")
	// A CA file with no certificate would verify nothing: every https
	// target or origin would fail.
	noCert := filepath.Join(t.TempDir(), "nocert.pem")
	if err := os.WriteFile(noCert, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (&cliExtras{caFile: noCert}).tlsSettings(); err == nil || !strings.Contains(err.Error(), "-ca-file "+noCert+": no PEM certificate") {
		t.Errorf("-ca-file without a certificate: %v", err)
	}
	for _, args := range [][]string{
		{"-connect-ports", "443,http"},
		{"-ca-file", missing},
		{"-ca-file", noCert, "-origin", "https://127.0.0.1:1"},
		{"-client-cert", missing},
		{"-client-cert", missing, "-client-key", missing},
	} {
		if rc := run(append([]string{"-listen", "127.0.0.1:0"}, args...)); rc != 2 {
			t.Errorf("%v: exit code %d, want 2", args, rc)
		}
	}
}

// TestConnectNTLMParentDrained: the parent holding a client's NTLM
// CONNECT handshake is drained while the client's next CONNECT runs on
// the pinned connection: the client gets that CONNECT's 407 with
// Connection: close, and its connection closes, since the handshake it
// would continue is gone.
func TestConnectNTLMParentDrained(t *testing.T) {
	bench.CheckLeaks(t)
	par := bench.NewHeldNTLMParent(t, 1) // holds each connection's second CONNECT
	held, open := par.Held, par.Release
	cfg := engine.Config{PinnedIdleTimeout: 10 * time.Minute}
	if err := withPeers(&cfg, nil, []string{"http://" + par.Addr()}, ""); err != nil {
		t.Fatal(err)
	}
	if err := withClientAuth(&cfg, clientAuthPass); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Shards, cfg.Logger = 2, logger
	p, err := newProxy(logger, nil, cfg, clientConfig{ConnectPorts: portSet{any: true}})
	if err != nil {
		t.Fatal(err)
	}
	px := serveProxy(t, p)
	rc := dialRaw(t, px)
	connect := "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\nProxy-Authorization: " + bench.NTLMNegotiate() + "\r\n\r\n"
	rc.write(t, connect)
	if resp, _ := rc.read(t); resp.StatusCode != 407 || resp.Close {
		t.Fatalf("first CONNECT: %d (close %v), want a 407 on an open connection", resp.StatusCode, resp.Close)
	}
	rc.write(t, connect)
	<-held
	peers := p.eng.PeerStats()[p.group].Peers
	if len(peers) != 1 {
		t.Fatalf("peers %+v, want the one parent", peers)
	}
	if err := p.eng.DrainPeer(p.group, peers[0].Name); err != nil {
		t.Fatal(err)
	}
	open()
	if resp, _ := rc.read(t); resp.StatusCode != 407 || !resp.Close {
		t.Fatalf("CONNECT during the drain: %d (close %v), want the parent's 407 with Connection: close", resp.StatusCode, resp.Close)
	}
	if !rc.eof(t) {
		t.Fatal("the client connection stayed open after its parent's NTLM session ended")
	}
}

// TestShutdownDeadlineConnectIs503: a CONNECT still waiting for its
// parent's answer when the shutdown's deadline passes is answered 503
// "proxy shutting down", as a request waiting for its origin is: the
// proxy cut it off. It was a 504 that blamed a response header timeout
// on the parent.
func TestShutdownDeadlineConnectIs503(t *testing.T) {
	bench.CheckLeaks(t)
	stall := make(chan struct{})
	defer close(stall)
	arrived := make(chan struct{}, 1)
	parent := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		arrived <- struct{}{}
		<-stall // no answer to the CONNECT
	})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := engine.Config{Shards: 1, Logger: logger}
	if err := withPeers(&cfg, nil, []string{"http://" + parent.Addr()}, "roundrobin"); err != nil {
		t.Fatal(err)
	}
	p, err := newProxy(logger, nil, cfg, clientConfig{ConnectPorts: portSet{any: true}})
	if err != nil {
		t.Fatal(err)
	}
	px, served := startServe(t, p)
	c, br := dialClient(t, px)
	if _, err := io.WriteString(c, "CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-arrived
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- p.Shutdown(ctx) }()
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || string(body) != "proxy shutting down\n" {
		t.Errorf("CONNECT cut off by the shutdown: %d %q, want 503 proxy shutting down", resp.StatusCode, body)
	}
	<-shut
	<-served
}

// TestConnectPipelinedHalfClosed: a client pipelines a request and a
// CONNECT with its tunnel bytes, then shuts down its sending side
// (printf '...' | nc -N). The first response goes out after the
// half-close (nginx's /delay is slow), on the Go net duplicate of the
// connection; the CONNECT behind it still opens its tunnel, and the
// request sent in it is answered, as for a CONNECT that is the first on
// its connection (TestConnectEarlyBytes). The tunnel used to be dialed and
// dropped without an answer or an access log line.
func TestConnectPipelinedHalfClosed(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxyClient(t, engine.Config{}, clientConfig{ConnectPorts: portSet{any: true}})
	c, br := dialClient(t, px)
	raw := "GET http://" + ng.Addr() + "/delay HTTP/1.1\r\nHost: " + ng.Addr() + "\r\n\r\n" +
		"CONNECT " + ng.Addr() + " HTTP/1.1\r\nHost: " + ng.Addr() + "\r\n\r\n" +
		"GET /small HTTP/1.1\r\nHost: " + ng.Addr() + "\r\n\r\n"
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	r, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil || r.StatusCode != 200 || n != bench.DelayBodySize {
		t.Fatalf("first response: %d, %d bytes, %v", r.StatusCode, n, err)
	}
	r, err = http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || r.Status != "200 Connection established" {
		t.Fatalf("CONNECT after the half-close: %v, %v; want 200 Connection established", r, err)
	}
	r, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("in the tunnel: %v", err)
	}
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || string(b) != bench.SmallBody {
		t.Fatalf("in the tunnel: %d %q", r.StatusCode, b)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("end: %v, want EOF", err)
	}
}

// TestConnectPipelinedHalfClosedShutdown: such a tunnel (see
// TestConnectPipelinedHalfClosed) is a request in flight for the
// shutdown: to a target that keeps it open after the client's half-close,
// it runs until the shutdown's deadline closes it.
func TestConnectPipelinedHalfClosedShutdown(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	stall := make(chan struct{})
	defer close(stall)
	target := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		_, _ = io.Copy(io.Discard, br) // to the client's half-close
		_, _ = io.WriteString(c, "still here")
		<-stall
	})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := newProxy(logger, nil, engine.Config{Shards: 1, Logger: logger}, clientConfig{ConnectPorts: portSet{any: true}})
	if err != nil {
		t.Fatal(err)
	}
	px, served := startServe(t, p)
	c, br := dialClient(t, px)
	raw := "GET http://" + ng.Addr() + "/delay HTTP/1.1\r\nHost: " + ng.Addr() + "\r\n\r\n" +
		"CONNECT " + target.Addr() + " HTTP/1.1\r\nHost: " + target.Addr() + "\r\n\r\ntunnel bytes"
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	r, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, r.Body)
	r, err = http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("CONNECT after the half-close: %v, %v", r, err)
	}
	got := make([]byte, len("still here"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "still here" {
		t.Fatalf("in the tunnel: %q, %v", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(ctx); err == nil {
		t.Errorf("shutdown: nil; want the deadline's error, with the tunnel still open at it")
	}
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
	if b, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("tunnel after the shutdown: %q, %v; want EOF", b, err)
	}
	if n := p.tunnelsLive.Load(); n != 0 {
		t.Fatalf("%d tunnels live after the shutdown", n)
	}
}

// TestConnectTargetResetPassedOn: a target that resets the tunnel's
// connection mid-stream has the client's reset too: a plain HTTP/1.0 body
// delimited by the close, cut short by the reset, does not end with a
// clean close the client would take for its end.
func TestConnectTargetResetPassedOn(t *testing.T) {
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	target := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\npart of a body")
		time.Sleep(50 * time.Millisecond) // the part is through
		_ = c.(*net.TCPConn).SetLinger(0)
		_ = c.Close()
	})
	px := startProxyClient(t, engine.Config{}, clientConfig{ConnectPorts: portSet{any: true}})
	c, br, resp, _ := rawConnect(t, px, "CONNECT "+target.Addr()+" HTTP/1.1\r\nHost: "+target.Addr()+"\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(br)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read %q, then %v; want ECONNRESET", got, err)
	}
}
