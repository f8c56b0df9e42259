package conn

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

type relayResult struct {
	st  RelayStats
	err error
}

// startRelay relays between the far ends of two pairs and returns the
// near ends: client talks to server through the relay.
func startRelay(t *testing.T, ctx context.Context, idle time.Duration, wrap func(net.Conn) net.Conn) (client, server *net.TCPConn, done chan relayResult) {
	t.Helper()
	bench.CollectSplicePipes(t)
	client, ra := tcpPair(t)
	rb, server := tcpPair(t)
	var b net.Conn = rb
	if wrap != nil {
		b = wrap(rb)
	}
	done = make(chan relayResult, 1)
	go func() {
		st, err := Relay(ctx, ra, b, idle)
		done <- relayResult{st, err}
	}()
	return client, server, done
}

func waitRelay(t *testing.T, done chan relayResult) relayResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not end")
		return relayResult{}
	}
}

// TestRelayNil: a Relay missing a connection is an error, not a panic on
// a goroutine of its own, and the connection it had is closed.
func TestRelayNil(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	if _, err := Relay(context.Background(), a, nil, 0); !errors.Is(err, ErrRelayNil) {
		t.Fatalf("Relay(a, nil): %v, want ErrRelayNil", err)
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("write on a after the refused relay: %v, want it closed", err)
	}
	if _, err := Relay(context.Background(), nil, nil, 0); !errors.Is(err, ErrRelayNil) {
		t.Fatalf("Relay(nil, nil): %v, want ErrRelayNil", err)
	}
}

// TestRelayHalfClose: the client sends its request and half-closes; the
// server reads it to EOF and only then answers, through the direction
// still open; both ends see every byte and EOF, and Relay counts them.
func TestRelayHalfClose(t *testing.T) {
	checkLeaks(t)
	client, server, done := startRelay(t, context.Background(), time.Minute, nil)
	if _, err := io.WriteString(client, "request bytes"); err != nil {
		t.Fatal(err)
	}
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = server.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(server) // ends only if the half-close was relayed
	if err != nil || string(got) != "request bytes" {
		t.Fatalf("server read %q, %v", got, err)
	}
	answer := strings.Repeat("answer after the half-close ", 40000) // ~1 MiB, several chunks
	go func() {
		_, _ = io.WriteString(server, answer)
		_ = server.CloseWrite()
	}()
	_ = client.SetDeadline(time.Now().Add(5 * time.Second))
	got, err = io.ReadAll(client)
	if err != nil || string(got) != answer {
		t.Fatalf("client read %d bytes, %v; want %d", len(got), err, len(answer))
	}
	r := waitRelay(t, done)
	if r.err != nil || r.st.AToB != int64(len("request bytes")) || r.st.BToA != int64(len(answer)) {
		t.Fatalf("relay: %+v, %v", r.st, r.err)
	}
}

// TestRelayTunnelBuffered: bytes a parent sent after its 2xx head, kept in
// a TunnelConn, reach the client first, in order.
func TestRelayTunnelBuffered(t *testing.T) {
	checkLeaks(t)
	closed := make(chan struct{})
	client, server, done := startRelay(t, context.Background(), 0, func(c net.Conn) net.Conn {
		return NewTunnelConn(c, []byte("early-"), func() { close(closed) })
	})
	go func() {
		_, _ = io.WriteString(server, "late")
		_ = server.Close()
	}()
	_ = client.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "early-late" {
		t.Fatalf("client read %q, %v", got, err)
	}
	_ = client.Close()
	r := waitRelay(t, done)
	if r.st.BToA != int64(len("early-late")) {
		t.Fatalf("relay: %+v, %v", r.st, r.err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the TunnelConn's close hook did not run")
	}
}

// TestRelayIdle: no byte either way ends the relay with ErrRelayIdle and
// closes both sides.
func TestRelayIdle(t *testing.T) {
	checkLeaks(t)
	client, server, done := startRelay(t, context.Background(), 100*time.Millisecond, nil)
	r := waitRelay(t, done)
	if !errors.Is(r.err, ErrRelayIdle) {
		t.Fatalf("relay: %v, want ErrRelayIdle", r.err)
	}
	for _, c := range []net.Conn{client, server} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("after idle: %d, %v; want EOF", n, err)
		}
	}
}

// TestRelayIdleOneWay: a long one-way stream keeps the relay alive even
// though the other direction never moves a byte. The ticks come at a
// twelfth of the idle timeout, so that a loaded machine that delays some
// of them does not idle the relay out.
func TestRelayIdleOneWay(t *testing.T) {
	checkLeaks(t)
	const ticks = 36 // 36 × 50 ms: three idle periods of 600 ms
	client, server, done := startRelay(t, context.Background(), 600*time.Millisecond, nil)
	go func() {
		for i := 0; i < ticks; i++ {
			if _, err := io.WriteString(server, "tick"); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = server.CloseWrite()
	}()
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || string(got) != strings.Repeat("tick", ticks) {
		t.Fatalf("client read %q, %v", got, err)
	}
	_ = client.Close()
	r := waitRelay(t, done)
	if r.st.BToA != 4*ticks {
		t.Fatalf("relay %+v, %v", r.st, r.err)
	}
}

// TestRelayContext: the context's end closes both sides.
func TestRelayContext(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithCancel(context.Background())
	client, _, done := startRelay(t, ctx, 0, nil)
	cancel()
	r := waitRelay(t, done)
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("relay: %v, want context.Canceled", r.err)
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read after cancel: %v", err)
	}
}

// fakeParent serves one CONNECT with the given raw answer, after checking
// the request head.
func fakeParent(t *testing.T, answer string, heads chan<- []string) string {
	t.Helper()
	bench.CollectSplicePipes(t) // the echo splices
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		h, err := readHead(br)
		if err != nil {
			return
		}
		heads <- h
		_, _ = io.WriteString(c, answer)
		if strings.Contains(answer, " 200 ") {
			// Echo what comes through the tunnel.
			_, _ = io.Copy(c, br)
		}
	})
	return o.addr()
}

// TestConnectKeepsBytesAfterHead: a parent that sends the 200 and the
// target's first bytes in one write loses none of them; an interim 1xx is
// skipped; the request carries Host and the extra header.
func TestConnectKeepsBytesAfterHead(t *testing.T) {
	checkLeaks(t)
	heads := make(chan []string, 1)
	addr := fakeParent(t, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Connection established\r\nX-Parent: yes\r\n\r\nSSH-2.0-banner\r\n", heads)
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tc, resp, err := Connect(context.Background(), raw, addr, "target.example:22", []string{"Proxy-Authorization: Basic eDp5"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	h := <-heads
	want := []string{"CONNECT target.example:22 HTTP/1.1", "Host: target.example:22", "Proxy-Authorization: Basic eDp5"}
	if strings.Join(h, "|") != strings.Join(want, "|") {
		t.Fatalf("CONNECT head %q, want %q", h, want)
	}
	if resp.Status != 200 || resp.Reason != "Connection established" || resp.Header.Get("X-Parent") != "yes" {
		t.Fatalf("answer %+v", resp)
	}
	if tc.Buffered() != len("SSH-2.0-banner\r\n") {
		t.Fatalf("buffered %d", tc.Buffered())
	}
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(tc)
	line, err := br.ReadString('\n')
	if err != nil || line != "SSH-2.0-banner\r\n" {
		t.Fatalf("first bytes %q, %v", line, err)
	}
	if _, err := io.WriteString(tc, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if line, err = br.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("echo %q, %v", line, err)
	}
}

// TestConnectRefusedChunked: a refusal with a chunked body comes back
// whole, with ErrTunnelRefused.
func TestConnectRefusedChunked(t *testing.T) {
	checkLeaks(t)
	heads := make(chan []string, 1)
	addr := fakeParent(t, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", heads)
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tc, resp, err := Connect(context.Background(), raw, addr, "t:443", nil, 5*time.Second)
	if tc != nil || !errors.Is(err, ErrTunnelRefused) {
		t.Fatalf("conn %v, err %v", tc, err)
	}
	if e := AsError(err); e == nil || e.Phase != PhaseTunnel {
		t.Fatalf("err %#v, want PhaseTunnel", err)
	}
	if resp.Status != 407 || string(resp.Body) != "hello world" || resp.Header.Get("Proxy-Authenticate") != `Basic realm="x"` {
		t.Fatalf("answer %+v body %q", resp, resp.Body)
	}
}

// TestConnectMalformed: a broken answer is a PhaseProtocol error, and so
// is a 101: a CONNECT offers no protocol to switch to (RFC 9110 §7.8), so
// it is neither a tunnel nor a refusal to relay.
func TestConnectMalformed(t *testing.T) {
	checkLeaks(t)
	for _, answer := range []string{
		"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
	} {
		heads := make(chan []string, 1)
		addr := fakeParent(t, answer, heads)
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		tc, resp, err := Connect(context.Background(), raw, addr, "t:443", nil, 5*time.Second)
		if e := AsError(err); tc != nil || resp != nil || e == nil || e.Phase != PhaseProtocol || errors.Is(err, ErrTunnelRefused) {
			t.Fatalf("%q: conn %v, answer %+v, err %v; want a PhaseProtocol error alone", answer, tc, resp, err)
		}
	}
}

// TestConnectBadTarget: a target that would break the request line is
// refused before anything is sent.
func TestConnectBadTarget(t *testing.T) {
	checkLeaks(t)
	a, _ := tcpPair(t)
	for _, target := range []string{"", "nohost", "a.example:443\r\nX-Evil: 1", "a b:1"} {
		_, _, err := Connect(context.Background(), a, "parent", target, nil, time.Second)
		if !errors.Is(err, ErrBadTarget) {
			t.Errorf("target %q: %v, want ErrBadTarget", target, err)
		}
	}
}

// TestConnectKeep: a refusal leaves the connection open only when the
// parent keeps it and the answer ended cleanly where its framing says.
func TestConnectKeep(t *testing.T) {
	checkLeaks(t)
	const chal = "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Digest realm=\"r\", nonce=\"n\"\r\n"
	for _, tc := range []struct {
		name, answer string
		kept         bool
	}{
		{"length", chal + "Content-Length: 5\r\n\r\nhello", true},
		{"chunked", chal + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", true},
		{"close", chal + "Connection: close\r\nContent-Length: 5\r\n\r\nhello", false},
		{"http/1.0", "HTTP/1.0 407 Proxy Authentication Required\r\nContent-Length: 5\r\n\r\nhello", false},
		{"bytes after the body", chal + "Content-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n\r\n", false},
		{"until close", chal + "\r\nhello", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			heads := make(chan []string, 1)
			addr := fakeParent(t, tc.answer, heads)
			raw, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			nc, resp, kept, err := ConnectKeep(context.Background(), raw, addr, "t:443", nil, 5*time.Second)
			if nc != nil || !errors.Is(err, ErrTunnelRefused) || resp == nil || resp.Status != 407 {
				t.Fatalf("conn %v, answer %+v, err %v", nc, resp, err)
			}
			if string(resp.Body) != "hello" {
				t.Fatalf("body %q", resp.Body)
			}
			if kept != tc.kept {
				t.Fatalf("kept %v, want %v", kept, tc.kept)
			}
			// A connection not kept is closed already.
			if err := raw.SetDeadline(time.Time{}); (err == nil) != tc.kept {
				t.Fatalf("SetDeadline on the connection: %v (kept %v)", err, kept)
			}
		})
	}
}

// TestRelayResetPassedOn: a peer that resets its connection, mid-stream
// or while the other sends, has the relay reset the other peer's too: that
// one sees the stream aborted (ECONNRESET), not an EOF it could take for
// its end, whichever side reset and whichever way the bytes were going.
func TestRelayResetPassedOn(t *testing.T) {
	checkLeaks(t)
	abort := func(c *net.TCPConn) {
		_ = c.SetLinger(0)
		_ = c.Close()
	}
	readToError := func(c net.Conn) ([]byte, error) {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var got []byte
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				return got, err
			}
		}
	}
	t.Run("server resets mid-response", func(t *testing.T) {
		client, server, done := startRelay(t, context.Background(), time.Minute, nil)
		if _, err := io.WriteString(server, "part of a body "); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // the part is through
		abort(server)
		got, err := readToError(client)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("client read %q, then %v; want ECONNRESET", got, err)
		}
		if r := waitRelay(t, done); r.err == nil {
			t.Fatalf("relay: nil error after a reset")
		}
	})
	t.Run("client resets mid-upload", func(t *testing.T) {
		client, server, done := startRelay(t, context.Background(), time.Minute, nil)
		if _, err := io.WriteString(client, "part of an upload "); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		abort(client)
		got, err := readToError(server)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("server read %q, then %v; want ECONNRESET", got, err)
		}
		waitRelay(t, done)
	})
}
