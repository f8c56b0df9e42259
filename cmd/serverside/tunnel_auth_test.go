package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// proxyViaParent starts the demo in forward mode with one parent, as
// "-parent parent" would, on the engine configuration cfg.
func proxyViaParent(t *testing.T, cfg engine.Config, parent string) string {
	t.Helper()
	if err := withPeers(&cfg, nil, []string{parent}, "roundrobin"); err != nil {
		t.Fatal(err)
	}
	return startProxyClient(t, cfg, clientConfig{ConnectPorts: portSet{any: true}})
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
	splicePipes(t)
	ng, pki := tlsOrigin(t, false)
	sq := bench.StartSquid(t, bench.SquidOptions{Auth: "digest", ConnectPorts: []int{portOf(t, ng.TLSAddr())},
		Users: map[string]string{"alice": "s3cret"}})
	good := proxyViaParent(t, engine.Config{}, "http://alice:s3cret@"+sq.Addr())
	for i := 0; i < 2; i++ {
		out, _ := curl(t, "-x", "http://"+good, "--cacert", pki.CAFile, "https://"+ng.TLSAddr()+"/small")
		if out != bench.SmallBody {
			t.Fatalf("tunnel %d: %q", i, out)
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
	bad := proxyViaParent(t, engine.Config{}, "http://alice:wrong@"+sq.Addr())
	_, errOut, code := curlStatus(t, "-x", "http://"+bad, "--cacert", pki.CAFile, "https://"+ng.TLSAddr()+"/small")
	if code == 0 || !strings.Contains(errOut, "407") {
		t.Fatalf("wrong password: curl exit %d: %s", code, errOut)
	}
}

// Minimal NTLMSSP messages (MS-NLMP §2.2.1) for Squid's ntlm_fake_auth,
// which accepts any well-formed handshake.

func tunnelNTLMType1() string {
	b := make([]byte, 32)
	copy(b, "NTLMSSP\x00")
	binary.LittleEndian.PutUint32(b[8:], 1)
	binary.LittleEndian.PutUint32(b[12:], 0x00008207) // unicode, OEM, request target, NTLM, always sign
	binary.LittleEndian.PutUint32(b[20:], 32)
	binary.LittleEndian.PutUint32(b[28:], 32)
	return "NTLM " + base64.StdEncoding.EncodeToString(b)
}

func tunnelNTLMType3(user string) string {
	b := make([]byte, 64)
	copy(b, "NTLMSSP\x00")
	binary.LittleEndian.PutUint32(b[8:], 3)
	put := func(at int, data []byte) {
		binary.LittleEndian.PutUint16(b[at:], uint16(len(data)))
		binary.LittleEndian.PutUint16(b[at+2:], uint16(len(data)))
		binary.LittleEndian.PutUint32(b[at+4:], uint32(len(b)))
		b = append(b, data...)
	}
	u16 := func(s string) []byte {
		var out []byte
		for _, r := range utf16.Encode([]rune(s)) {
			out = binary.LittleEndian.AppendUint16(out, r)
		}
		return out
	}
	put(12, make([]byte, 24))
	put(20, make([]byte, 24))
	put(28, u16("DOM"))
	put(36, u16(user))
	put(44, u16("WS"))
	put(52, nil)
	binary.LittleEndian.PutUint32(b[60:], 0x00000201)
	return "NTLM " + base64.StdEncoding.EncodeToString(b)
}

func passThroughAuth(engine.Upstream) *engine.Auth {
	return &engine.Auth{Proxy: engine.Login{Mode: engine.LoginPassThrough}}
}

// connectOn sends a CONNECT with Proxy-Authorization pa on c and reads
// the answer (and a refusal's body).
func connectOn(t *testing.T, c net.Conn, br *bufio.Reader, target, pa string) *http.Response {
	t.Helper()
	if _, err := io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\nProxy-Authorization: "+pa+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatalf("CONNECT answer: %v", err)
	}
	if resp.StatusCode/100 != 2 {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	return resp
}

// TestConnectNTLMThroughSquid: a client's NTLM handshake with a Squid
// parent through the demo (pass-through of the client's credentials):
// the Type 1 CONNECT gets Squid's Type 2 challenge, the client connection
// stays open, and the Type 3 CONNECT on it goes on the same Squid
// connection and opens the tunnel. When the pinned parent connection is
// gone before the Type 3, the client gets a 502 and its connection is
// closed.
func TestConnectNTLMThroughSquid(t *testing.T) {
	needTools(t)
	if bench.SquidBinary() == "" {
		t.Skip("squid not installed")
	}
	bench.CheckLeaks(t)
	splicePipes(t)
	ng, pki := tlsOrigin(t, false)
	target := ng.TLSAddr()
	sq := bench.StartSquid(t, bench.SquidOptions{Auth: "ntlm", ConnectPorts: []int{portOf(t, target)}})
	px := proxyViaParent(t, engine.Config{Auth: passThroughAuth}, "http://"+sq.Addr())

	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	resp := connectOn(t, c, br, target, tunnelNTLMType1())
	if resp.StatusCode != 407 || !strings.HasPrefix(resp.Header.Get("Proxy-Authenticate"), "NTLM T") {
		t.Fatalf("Type 1: %d %v; want a 407 with a Type 2 challenge", resp.StatusCode, resp.Header)
	}
	resp = connectOn(t, c, br, target, tunnelNTLMType3("carol"))
	if resp.StatusCode != 200 {
		t.Fatalf("Type 3: %d %v", resp.StatusCode, resp.Header)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pki.CAPEM)
	tc := tls.Client(c, &tls.Config{ServerName: "origin.test", RootCAs: roots})
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
	// Squid logs a tunnel when it ends: wait (bounded) for the line.
	var users []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		users = users[:0]
		for _, l := range sq.AccessLog() {
			if strings.Contains(l, "CONNECT "+target) && strings.Contains(l, "/200 ") {
				users = append(users, l)
			}
		}
		if len(users) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(users) != 1 || !strings.Contains(users[0], "carol") {
		t.Fatalf("Squid's tunnels %q: want one, for carol", users)
	}

	// The pinned parent connection expires before the Type 3.
	closed := make(chan uint64, 1)
	px2 := proxyViaParent(t, engine.Config{Auth: passThroughAuth, PinnedIdleTimeout: 50 * time.Millisecond,
		OnPinnedClosed: func(k uint64) { closed <- k }}, "http://"+sq.Addr())
	c2, err := net.Dial("tcp", px2)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetDeadline(time.Now().Add(20 * time.Second))
	br2 := bufio.NewReader(c2)
	if resp := connectOn(t, c2, br2, target, tunnelNTLMType1()); resp.StatusCode != 407 {
		t.Fatalf("Type 1: %d", resp.StatusCode)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the pinned parent connection did not expire")
	}
	if resp := connectOn(t, c2, br2, target, tunnelNTLMType3("dave")); resp.StatusCode != 502 || !resp.Close {
		t.Fatalf("Type 3 after the parent connection expired: %d close=%v; want 502 and close", resp.StatusCode, resp.Close)
	}
	if _, err := br2.ReadByte(); err != io.EOF {
		t.Fatalf("client connection after the 502: %v, want EOF", err)
	}
}
