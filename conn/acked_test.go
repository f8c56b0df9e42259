package conn

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"golang.org/x/sys/unix"
)

// postOrigin answers "ok" to the first request on a connection (reading
// its Content-Length body) and then does after(c, br) with the
// connection.
func postOrigin(t *testing.T, after func(c net.Conn, br *bufio.Reader)) *origin {
	return newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		lines, err := readHead(br)
		if err != nil {
			return
		}
		for _, l := range lines {
			var n int64
			if _, err := fmt.Sscanf(strings.ToLower(l), "content-length: %d", &n); err == nil {
				_, _ = io.CopyN(io.Discard, br, n)
			}
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		after(c, br)
	})
}

func postExchange(t *testing.T, size int) *Exchange {
	t.Helper()
	return &Exchange{Head: request(t, fmt.Sprintf("POST /p HTTP/1.1\r\nHost: o\r\nContent-Length: %d\r\n\r\n", size)),
		Body: strings.NewReader(strings.Repeat("b", size)), ContentLength: int64(size)}
}

// TestDeliveredStaleRace: the upstream closed the kept-alive connection
// before the next request reached it (its FIN and the request crossed).
// The request was written, but the upstream's TCP, whose socket was gone,
// answered with a reset and acknowledged none of it: not Delivered, so a
// POST may go again. The first exchange's body (100 KiB, several writes)
// counts in what the connection had sent before.
func TestDeliveredStaleRace(t *testing.T) {
	checkLeaks(t)
	closed := make(chan struct{})
	o := postOrigin(t, func(c net.Conn, _ *bufio.Reader) {
		_ = c.Close()
		close(closed)
	})
	c := goDial(t, o.addr())
	if _, err := c.RoundTrip(context.Background(), postExchange(t, 100<<10), &sink{}); err != nil {
		t.Fatal(err)
	}
	<-closed
	// Let the FIN arrive; the pool's probe would see it, this test skips
	// the probe to play the race.
	time.Sleep(50 * time.Millisecond)
	_, err := c.RoundTrip(context.Background(), postExchange(t, 5), &sink{})
	e := AsError(err)
	if e == nil || !e.Reused || !e.Written || e.Responded || e.Delivered {
		t.Fatalf("err %v (%+v), want written, not delivered", err, e)
	}
}

// TestDeliveredReadThenDropped: an upstream that took the request into
// its socket and then closed without answering may have acted on it:
// Delivered, on netpoll and on Go net, on a fresh connection and on a
// reused one. A close after reading acknowledges the request with its
// FIN; a reset (SO_LINGER 0) may come before the delayed acknowledgement,
// and counts as delivered all the same, since no FIN came first.
func TestDeliveredReadThenDropped(t *testing.T) {
	for _, mode := range []string{"netpoll", "gonet"} {
		for _, reset := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/reset=%v", mode, reset), func(t *testing.T) {
				checkLeaks(t)
				drop := func(c net.Conn, br *bufio.Reader) {
					_, _ = readHead(br) // the request is in; nothing is answered
					if reset {
						_ = c.(*net.TCPConn).SetLinger(0)
					}
					_ = c.Close()
				}
				o := postOrigin(t, drop)
				fresh := newOrigin(t, drop)
				dialMode := dial
				if mode == "gonet" {
					dialMode = goDial
				}
				c := dialMode(t, o.addr())
				if _, err := c.RoundTrip(context.Background(), postExchange(t, 3000), &sink{}); err != nil {
					t.Fatal(err)
				}
				if n, ok := c.peerAcked(); !ok || n != c.ackBase+c.sent || c.sent <= 3000 {
					t.Fatalf("acked %d %v, want %d+%d", n, ok, c.ackBase, c.sent)
				}
				_, err := c.RoundTrip(context.Background(), postExchange(t, 5), &sink{})
				if e := AsError(err); e == nil || !e.Reused || !e.Written || e.Responded || !e.Delivered {
					t.Fatalf("reused: err %v (%+v), want delivered", err, e)
				}
				c = dialMode(t, fresh.addr())
				_, err = c.RoundTrip(context.Background(), postExchange(t, 5), &sink{})
				if e := AsError(err); e == nil || e.Reused || !e.Written || e.Responded || !e.Delivered {
					t.Fatalf("fresh: err %v (%+v), want delivered", err, e)
				}
			})
		}
	}
}

// TestDeliveredUntracked: through a tunnel the upstream's TCP is not
// ours to ask, so a written request counts as delivered.
func TestDeliveredUntracked(t *testing.T) {
	checkLeaks(t)
	closed := make(chan struct{})
	o := postOrigin(t, func(c net.Conn, _ *bufio.Reader) {
		_ = c.Close()
		close(closed)
	})
	nc, err := net.Dial("tcp", o.addr())
	if err != nil {
		t.Fatal(err)
	}
	c := NewGo(o.addr(), NewTunnelConn(nc, nil, nil)) // a tunnel's connection
	t.Cleanup(func() { _ = c.Close() })
	if c.ackBase != ackUnknown {
		t.Fatalf("ackBase %d for a tunnel", c.ackBase)
	}
	if _, err := c.RoundTrip(context.Background(), postExchange(t, 5), &sink{}); err != nil {
		t.Fatal(err)
	}
	<-closed
	time.Sleep(50 * time.Millisecond)
	_, err = c.RoundTrip(context.Background(), postExchange(t, 5), &sink{})
	e := AsError(err)
	if e == nil || !e.Written || !e.Delivered {
		t.Fatalf("err %v (%+v), want written and counted delivered", err, e)
	}
	if errors.Is(err, ErrSink) {
		t.Fatal(err)
	}
}

// TestDeliveredTLS: the same two cases on a TLS connection, whose bytes
// on the wire (handshake and records) are what the upstream's TCP
// acknowledges. An upstream that closed (close_notify and FIN) before the
// next request reached it did not receive it; one that read it and then
// reset the connection may have.
func TestDeliveredTLS(t *testing.T) {
	pki := bench.NewPKI(t, "origin.test")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pki.CAPEM)
	for _, reset := range []bool{false, true} {
		t.Run(fmt.Sprintf("reset=%v", reset), func(t *testing.T) {
			checkLeaks(t)
			closed := make(chan struct{})
			o := newOrigin(t, func(raw net.Conn, _ *bufio.Reader) {
				c := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{pki.Server}})
				br := bufio.NewReader(c)
				if _, err := readHead(br); err != nil {
					return
				}
				_, _ = io.CopyN(io.Discard, br, 5)
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if reset {
					_, _ = readHead(br) // the next request is in; nothing is answered
					_ = raw.(*net.TCPConn).SetLinger(0)
				}
				_ = c.Close()
				close(closed)
			})
			raw, err := net.Dial("tcp", o.addr())
			if err != nil {
				t.Fatal(err)
			}
			c, err := ClientTLS(context.Background(), o.addr(), raw, time.Second, &tls.Config{ServerName: "origin.test", RootCAs: roots})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			if c.ackBase == ackUnknown {
				t.Fatal("acknowledgements not tracked on a TLS connection")
			}
			if _, err := c.RoundTrip(context.Background(), postExchange(t, 5), &sink{}); err != nil {
				t.Fatal(err)
			}
			if !reset {
				<-closed
				time.Sleep(50 * time.Millisecond)
			}
			_, err = c.RoundTrip(context.Background(), postExchange(t, 5), &sink{})
			e := AsError(err)
			if e == nil || !e.Reused || !e.Written || e.Responded || e.Delivered != reset {
				t.Fatalf("err %v (%+v), want written, delivered %v", err, e, reset)
			}
		})
	}
}

// TestDeliveredHalfClosedReader: an upstream that shut its sending side
// (its FIN) and still reads receives a request written after that FIN:
// the FIN acknowledged none of it, but no reset follows, and its TCP
// acknowledges it. Delivered, then: only a reset after the FIN shows that
// no socket was there to take the request. (netpoll refuses to write once
// it has seen the FIN, so the case is Go net's.)
func TestDeliveredHalfClosedReader(t *testing.T) {
	checkLeaks(t)
	read := make(chan string, 1)
	done := make(chan struct{})
	o := postOrigin(t, func(c net.Conn, br *bufio.Reader) {
		_ = c.(*net.TCPConn).CloseWrite()
		lines, err := readHead(br)
		if err == nil {
			read <- lines[0]
		}
		<-done // no reset: the connection is closed only after the check
		_ = c.Close()
	})
	c := goDial(t, o.addr())
	if _, err := c.RoundTrip(context.Background(), postExchange(t, 5), &sink{}); err != nil {
		t.Fatal(err)
	}
	// Let the FIN arrive before the request goes.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		var st uint8
		c.withFd(func(fd int) {
			if ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				st = ti.State
			}
		})
		if st == tcpCloseWait {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no FIN: TCP state %d", st)
		}
	}
	_, err := c.RoundTrip(context.Background(), postExchange(t, 5), &sink{})
	close(done)
	e := AsError(err)
	if e == nil || !e.Reused || !e.Written || e.Responded {
		t.Fatalf("err %v (%+v), want written on a reused connection", err, e)
	}
	select {
	case l := <-read:
		if !e.Delivered {
			t.Fatalf("the upstream read %q, but the error says it was not delivered", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream did not read the request")
	}
}

// TestAckBaseNeedsTheSYN: a connected socket's tcpi_bytes_acked counts
// the SYN (1). A count of 0 is a kernel without the field (before Linux
// 4.1; the bytes past what it fills stay zero), or a stack that does not
// keep it: every later count would then read 0, "nothing acknowledged",
// and a request the upstream received would pass for one it never did.
// Such a connection is not tracked. (An unconnected socket stands in for
// it here.)
func TestAckBaseNeedsTheSYN(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if n, ok := bytesAcked(fd); !ok || n != 0 {
		t.Fatalf("unconnected socket: acked %d %v", n, ok)
	}
	var c Conn
	c.trackAcks(fd)
	if c.ackBase != ackUnknown {
		t.Fatalf("ackBase %d from a count of 0, want untracked", c.ackBase)
	}
}

// TestInlineBodyKeptWhenNothingWritten: a small body goes out with the
// head, read into the same buffer first. When that write fails with
// nothing sent (netpoll saw the upstream's close between the pool's probe
// and the write: the stale race), the body read is handed back in the
// Exchange and BodyRead is false, so the request, POST or not, can go
// again on another connection without GetBody.
func TestInlineBodyKeptWhenNothingWritten(t *testing.T) {
	checkLeaks(t)
	closed := make(chan struct{})
	o := postOrigin(t, func(c net.Conn, _ *bufio.Reader) {
		_ = c.Close()
		close(closed)
	})
	c := dial(t, o.addr())
	if _, err := c.RoundTrip(context.Background(), postExchange(t, 5), &sink{}); err != nil {
		t.Fatal(err)
	}
	<-closed
	for deadline := time.Now().Add(5 * time.Second); c.Alive() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond) // until netpoll has seen the close
	}
	ex := &Exchange{Head: request(t, "POST /p HTTP/1.1\r\nHost: o\r\nContent-Length: 5\r\n\r\n"),
		Body: strings.NewReader("hello"), ContentLength: 5}
	_, err := c.RoundTrip(context.Background(), ex, &sink{})
	e := AsError(err)
	if e == nil || !e.Reused || e.Written || e.Delivered || e.BodyRead || e.Phase != PhaseWrite {
		t.Fatalf("err %v (%+v), want nothing written and the body unread", err, e)
	}
	if b, err := io.ReadAll(ex.Body); err != nil || string(b) != "hello" {
		t.Fatalf("body handed back: %q %v, want hello", b, err)
	}
}

// TestInlineBodyKeptWhenNotDelivered: the stale race of
// TestDeliveredStaleRace, for a request whose small body went out with its
// head: written whole, and never received (the upstream's TCP answered it
// with a reset after its FIN). The body read is handed back in the
// Exchange and BodyRead is false, as when nothing was written, so that
// the POST can go again on another connection without GetBody.
func TestInlineBodyKeptWhenNotDelivered(t *testing.T) {
	checkLeaks(t)
	closed := make(chan struct{})
	o := postOrigin(t, func(c net.Conn, _ *bufio.Reader) {
		_ = c.Close()
		close(closed)
	})
	c := goDial(t, o.addr())
	if _, err := c.RoundTrip(context.Background(), postExchange(t, 5), &sink{}); err != nil {
		t.Fatal(err)
	}
	<-closed
	// Let the FIN arrive; the pool's probe would see it, this test skips
	// the probe to play the race.
	time.Sleep(50 * time.Millisecond)
	ex := &Exchange{Head: request(t, "POST /p HTTP/1.1\r\nHost: o\r\nContent-Length: 5\r\n\r\n"),
		Body: strings.NewReader("hello"), ContentLength: 5}
	out, err := c.RoundTrip(context.Background(), ex, &sink{})
	e := AsError(err)
	if e == nil || !e.Reused || !e.Written || e.Delivered || e.Responded || e.BodyRead || out.BodyRead {
		t.Fatalf("err %v (%+v), outcome %+v; want written, not delivered, the body unread", err, e, out)
	}
	if b, err := io.ReadAll(ex.Body); err != nil || string(b) != "hello" {
		t.Fatalf("body handed back: %q %v, want hello", b, err)
	}
}

// TestInlineBodyNotKeptOnceAnswered: an inline body is handed back only
// for a request that failed before any response byte: one whose response
// began and then broke off stays read.
func TestInlineBodyNotKeptOnceAnswered(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		_, _ = io.CopyN(io.Discard, br, 5)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok")
		_ = c.Close()
	})
	for _, d := range []func(*testing.T, string) *Conn{dial, goDial} {
		c := d(t, o.addr())
		ex := &Exchange{Head: request(t, "POST /p HTTP/1.1\r\nHost: o\r\nContent-Length: 5\r\n\r\n"),
			Body: strings.NewReader("hello"), ContentLength: 5}
		out, err := c.RoundTrip(context.Background(), ex, &sink{})
		e := AsError(err)
		if e == nil || !e.Responded || !e.BodyRead || !out.BodyRead {
			t.Fatalf("err %v (%+v), outcome %+v; want a response begun, the body read", err, e, out)
		}
		if b, _ := io.ReadAll(ex.Body); len(b) != 0 {
			t.Fatalf("body handed back: %q, want none", b)
		}
	}
}

// TestInlineBodyKeptWhenPartlyWritten: a write of a head with its inline
// body that sent part of the bytes before it failed (here its timeout,
// the upstream reading nothing, both socket buffers at their least) put request
// bytes in the upstream's socket: Written, the body read and not handed
// back, so that the request is not taken for one that never went out and
// sent again whole (a POST, or under StrictResend). On netpoll and on Go
// net.
func TestInlineBodyKeptWhenPartlyWritten(t *testing.T) {
	checkLeaks(t)
	small := func(opt int) func(_, _ string, rc syscall.RawConn) error {
		return func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 1024) }); err != nil {
				return err
			}
			return serr
		}
	}
	// The upstream: a receive buffer set before the handshake, so that
	// its window is small, and no read.
	ln, err := (&net.ListenConfig{Control: small(unix.SO_RCVBUF)}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		close(done)
		_ = ln.Close()
		for {
			select {
			case c := <-accepted:
				_ = c.Close()
			default:
				return
			}
		}
	})
	for _, goNet := range []bool{true, false} {
		var c *Conn
		if goNet {
			nc, err := (&net.Dialer{Control: small(unix.SO_SNDBUF)}).Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c = NewGo(ln.Addr().String(), nc)
			t.Cleanup(func() { _ = c.Close() })
		} else {
			c = dial(t, ln.Addr().String())
			c.withFd(func(fd int) { _ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1024) })
		}
		ex := postExchange(t, inlineMax)
		ex.Config.WriteTimeout = 300 * time.Millisecond
		_, err := c.RoundTrip(context.Background(), ex, &sink{})
		e := AsError(err)
		if e == nil || e.Phase != PhaseWrite || !e.Written || !e.Delivered || !e.BodyRead {
			t.Errorf("GoNetIO %v: err %v, want written in part, delivered, the body read", goNet, err)
			if e != nil {
				t.Fatalf("written %v, delivered %v, body read %v", e.Written, e.Delivered, e.BodyRead)
			}
			t.FailNow()
		}
		if n, _ := io.Copy(io.Discard, ex.Body); n != 0 {
			t.Fatalf("GoNetIO %v: %d body bytes handed back, want none: part of them went out", goNet, n)
		}
	}
}

// TestAbortTLSDoesNotWaitForPeer: an abort closes a TLS connection at
// once even when its origin stopped reading and the send buffer is full.
// A plain close sends close_notify first, which waits up to 5 s for room:
// on netpoll's poller (the demo's abort on a client's reset runs there),
// that would stall every connection it serves.
func TestAbortTLSDoesNotWaitForPeer(t *testing.T) {
	checkLeaks(t)
	pki := bench.NewPKI(t, "origin.test")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pki.CAPEM)
	release := make(chan struct{})
	defer close(release)
	o := newOrigin(t, func(raw net.Conn, _ *bufio.Reader) {
		c := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{pki.Server}})
		if c.Handshake() != nil {
			return
		}
		<-release // reads nothing more
	})
	raw, err := net.Dial("tcp", o.addr())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ClientTLS(context.Background(), o.addr(), raw, time.Second, &tls.Config{ServerName: "origin.test", RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Fill the socket's send buffer under the TLS layer, which stays
	// intact: the origin's receive window and our buffer fill up.
	// Smaller and smaller writes, so that not even an alert's few bytes
	// fit.
	junk := make([]byte, 64<<10)
	for _, size := range []int{64 << 10, 1 << 10, 16, 1} {
		for i := 0; i < 4096; i++ {
			_ = raw.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := raw.Write(junk[:size]); err != nil {
				break
			}
		}
	}
	_ = raw.SetWriteDeadline(time.Time{})
	var a Abort
	if !a.watch(c) {
		t.Fatal("watch refused")
	}
	start := time.Now()
	a.Abort()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Abort took %v: it waited for the peer to read the close_notify", d)
	}
	if !a.Aborted() || c.State() != Closed && c.State() != Closing {
		t.Fatalf("aborted %v, state %v", a.Aborted(), c.State())
	}
}
