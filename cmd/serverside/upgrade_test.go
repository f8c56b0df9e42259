package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/engine"
)

// TestWebSocketReverse: a real WebSocket client (Python's websockets)
// through the reverse proxy to a real WebSocket server: the handshake's
// Upgrade goes through, the 101 comes back, and messages of up to 100 KB
// are relayed both ways.
func TestWebSocketReverse(t *testing.T) {
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ws := bench.StartWebSocket(t)
	px, adm := startProxyAdmin(t, "http://"+ws.Addr())
	for i := 0; i < 2; i++ {
		if out, err := ws.Client("ws://" + px + "/chat"); err != nil || strings.TrimSpace(out) != "echoed 3" {
			t.Fatalf("client %d: %v\n%s", i, err, out)
		}
	}
	// The relays end when the clients close (bounded wait).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		m := scrapeMetrics(t, adm)
		total, open := m.get(t, "serverside_upgrades_total"), m.get(t, "serverside_upgrades_open")
		if total == 2 && open == 0 && m.get(t, "serverside_tunnels_total") == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics: %v upgrades, %v open; want 2, 0, and no CONNECT tunnel", total, open)
		}
	}
}

// dialClient connects to the proxy at px, with a 10 s deadline, until the
// test ends.
func dialClient(t *testing.T, px string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

// resetMidDownload asks px for target on a connection of its own, reads
// the 200's head and the first n bytes of its body, and closes the
// connection with a reset, so that the proxy's next writes to it fail.
func resetMidDownload(t *testing.T, px, target string, n int) {
	t.Helper()
	c, br := dialClient(t, px)
	if _, err := io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

// wsFrame is a masked client frame (RFC 6455 §5.2) with a payload under
// 126 bytes.
func wsFrame(opcode byte, payload []byte) []byte {
	var key [4]byte
	_, _ = rand.Read(key[:])
	f := []byte{0x80 | opcode, 0x80 | byte(len(payload))}
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}

// TestWebSocketForward: the forward proxy takes a WebSocket handshake in
// absolute form to a real WebSocket server, answers its 101 with the
// server's Sec-WebSocket-Accept, and relays frames; the connection is a
// tunnel from there on. A handshake to an origin that does not upgrade
// (nginx) gets nginx's answer on a connection that stays usable.
func TestWebSocketForward(t *testing.T) {
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	ws := bench.StartWebSocket(t)
	px := startProxy(t)
	c, br := dialClient(t, px)
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	if _, err := io.WriteString(c, "GET http://"+ws.Addr()+"/chat HTTP/1.1\r\nHost: "+ws.Addr()+
		"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "+key+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") ||
		!strings.EqualFold(resp.Header.Get("Connection"), "upgrade") || resp.Header.Get("Via") != "1.1 proxy.test (serverside)" ||
		resp.Header.Get("Sec-WebSocket-Accept") == "" {
		t.Fatalf("handshake answer %d %v", resp.StatusCode, resp.Header)
	}
	for _, msg := range []string{"one", "two, longer", ""} {
		if _, err := c.Write(wsFrame(1, []byte(msg))); err != nil {
			t.Fatal(err)
		}
		hdr := make([]byte, 2)
		if _, err := io.ReadFull(br, hdr); err != nil {
			t.Fatal(err)
		}
		if hdr[0] != 0x81 || int(hdr[1]) != len(msg) {
			t.Fatalf("echo of %q: frame header % x", msg, hdr)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Fatalf("echo %q, %v; want %q", got, err, msg)
		}
	}
	// A close frame: the server answers it and closes, and so does the
	// proxy towards the client.
	if _, err := c.Write(wsFrame(8, []byte{0x03, 0xe8})); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) < 2 || rest[0] != 0x88 {
		t.Fatalf("after close: % x, %v; want the server's close frame, then the end", rest, err)
	}
}

// TestUpgradeNotTaken: nginx serves a handshake to a static location like
// any GET; the proxy relays its 200 and keeps the connection for the next
// request.
func TestUpgradeNotTaken(t *testing.T) {
	needTools(t)
	bench.CheckLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	px := startProxyConfig(t, engine.Config{}, "http://"+ng.Addr())
	c, br := dialClient(t, px)
	for i, h := range []string{"Connection: Upgrade\r\nUpgrade: websocket\r\n", ""} {
		if _, err := io.WriteString(c, "GET /small HTTP/1.1\r\nHost: a\r\n"+h+"\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != bench.SmallBody || resp.Close {
			t.Fatalf("request %d: %d %q close %v", i, resp.StatusCode, body, resp.Close)
		}
	}
}

// TestUpgradeHalfClosedClient: a client that half-closed after its
// handshake, to an origin that sends a 103 before its 101. The 103 goes
// out on the half-closed connection, which then ends: so does the
// upstream connection handed over with the 101 (it is not left busy, nor
// counted as a live tunnel that a shutdown would wait for).
func TestUpgradeHalfClosedClient(t *testing.T) {
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t) // the relay may have spliced before the end
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
		time.Sleep(100 * time.Millisecond)
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_, _ = io.Copy(io.Discard, br) // until the proxy closes
	})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := newProxy(logger, []string{"http://" + o.Addr()}, engine.Config{Shards: 2, Logger: logger}, clientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	px := serveProxy(t, p)
	c, err := net.Dial("tcp", px)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || !strings.HasPrefix(string(got), "HTTP/1.1 103 Early Hints\r\n") {
		t.Fatalf("client got %q, %v; want the 103, then the end", got, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		busy := 0
		for _, st := range p.eng.Stats() {
			busy += st.Pool.Busy
		}
		if busy == 0 && p.tunnelsLive.Load() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the client's connection ended: pool busy %d, tunnels live %d; want 0, 0", busy, p.tunnelsLive.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUpgradeNTLMPinned: a WebSocket behind Windows authentication. The
// client's NTLM handshake pins an upstream connection to its connection;
// the handshake request carrying the last NTLM message is the WebSocket
// handshake, and the origin's 101 hands that pinned connection over: the
// client's connection becomes the relay to it, and when the client goes
// away nothing stays pinned or busy.
func TestUpgradeNTLMPinned(t *testing.T) {
	bench.CheckLeaks(t)
	bench.CollectSplicePipes(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			h, err := bench.ReadHead(br)
			if err != nil {
				return
			}
			head := strings.Join(h, "\n")
			if i == 0 {
				if !strings.Contains(head, "Authorization: NTLM ") {
					_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM TlRMTVNTUAACAAAAAAAAACgAAAABggAAAAAAAAAAAAA=\r\nContent-Length: 0\r\n\r\n")
				continue
			}
			if !strings.Contains(head, "Upgrade: websocket") || !strings.Contains(head, "Authorization: NTLM ") {
				_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			buf := make([]byte, 512)
			for {
				n, err := br.Read(buf)
				if n > 0 {
					_, _ = c.Write(buf[:n])
				}
				if err != nil {
					return
				}
			}
		}
	})
	cfg := engine.Config{}
	if err := withPeers(&cfg, []string{"http://" + o.Addr()}, nil, ""); err != nil {
		t.Fatal(err)
	}
	p, px := startAuthProxy(t, cfg)
	c, br := dialClient(t, px)
	if _, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a\r\nAuthorization: "+bench.NTLMNegotiate()+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 401 {
		t.Fatalf("NTLM challenge: %v %v", resp, err)
	}
	waitPinned(t, p, 1)
	if _, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a\r\nAuthorization: "+bench.NTLMAuthenticate("D", "u", "W")+
		"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, err = http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}
	if pinned(p) != 0 {
		t.Errorf("%d pinned connections after the switch, want 0", pinned(p))
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		busy := 0
		for _, st := range p.eng.Stats() {
			busy += st.Pool.Busy
		}
		if busy == 0 && pinned(p) == 0 && p.tunnelsLive.Load() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the client left: busy %d, pinned %d, tunnels %d", busy, pinned(p), p.tunnelsLive.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
