package conn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// goDial connects with Go net and wraps the connection as NewGo does for
// TLS and tunnels: the Go-net exchange path without the TLS layer.
func goDial(t *testing.T, addr string) *Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := NewGo(addr, nc)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestGoNetSplitHeads: heads and chunked bodies that arrive a byte at a
// time, an interim 103, a large head that moves the buffered bytes to the
// buffer's start, and keep-alive across all of them.
func TestGoNetSplitHeads(t *testing.T) {
	checkLeaks(t)
	big := strings.Repeat("v", 40<<10)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			if _, err := readHead(br); err != nil {
				return
			}
			switch i {
			case 0: // one byte per write
				msg := "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
				for j := 0; j < len(msg); j++ {
					if _, err := c.Write([]byte{msg[j]}); err != nil {
						return
					}
					if j%16 == 0 {
						time.Sleep(time.Millisecond)
					}
				}
			default: // a 40 KiB head, twice in one write
				one := fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Big: %s\r\nContent-Length: 3\r\n\r\nbig", big)
				if i == 1 {
					_, _ = io.WriteString(c, one+one)
				}
			}
		}
	})
	c := goDial(t, o.addr())
	for i, want := range []string{"hello", "big", "big"} {
		s := &sink{keep: true}
		out, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, s)
		if err != nil {
			t.Fatalf("exchange %d: %v", i, err)
		}
		if s.status != 200 || string(s.body) != want || out.Reused != (i > 0) || out.Detached {
			t.Fatalf("exchange %d: %d %q, %+v", i, s.status, s.body, out)
		}
		// The second answer arrived with the first: the connection holds
		// unread bytes after exchange 1 and must not be reused blindly.
		if reusable := c.Reusable(); reusable != (i != 1) {
			t.Fatalf("exchange %d: reusable %v", i, reusable)
		}
	}
}

// TestGoNetHeadTooLarge: a head beyond the parser's limit is a protocol
// error, not a buffer that grows without end.
func TestGoNetHeadTooLarge(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("v", 200<<10)+"\r\n\r\n")
	})
	c := goDial(t, o.addr())
	_, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, &sink{})
	if e := AsError(err); e == nil || e.Phase != PhaseProtocol {
		t.Fatalf("err %v, want PhaseProtocol", err)
	}
	if len(c.g.buf) > 256<<10 {
		t.Fatalf("buffer grew to %d bytes", len(c.g.buf))
	}
}

// TestGoNetAliveAndStale: the liveness probe of a Go-net connection sees
// a peer's close, and a reused connection the peer closed fails as the
// stale-connection race (Reused, no response byte, ErrUnexpectedEOF).
func TestGoNetAliveAndStale(t *testing.T) {
	checkLeaks(t)
	closeNow := make(chan struct{})
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		<-closeNow
	})
	c := goDial(t, o.addr())
	if _, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, &sink{}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetState(Idle); err != nil {
		t.Fatal(err)
	}
	if !c.Alive() {
		t.Fatal("idle connection not alive before the peer closed")
	}
	close(closeNow)
	deadline := time.Now().Add(5 * time.Second)
	for c.Alive() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if c.Alive() {
		t.Fatal("still alive after the peer closed")
	}
	if err := c.SetState(Busy); err != nil {
		t.Fatal(err)
	}
	_, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, &sink{})
	e := AsError(err)
	if e == nil || !e.Reused || e.Responded || !(errors.Is(err, ErrUnexpectedEOF) || errors.Is(err, ErrClosed) || isReset(err)) {
		t.Fatalf("err %#v, want a stale-connection failure", err)
	}
}

// TestGoNetProbeWithinGrace: Probe looks at a Go net connection's socket
// even right after its exchange, when Alive takes it as alive without a
// look (goProbeGrace, the pool's look on return): a connection handed
// from a return straight to a waiting POST must not carry it into a close
// the kernel already has.
func TestGoNetProbeWithinGrace(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		_ = c.Close()
	})
	c := goDial(t, o.addr())
	defer c.Close()
	if _, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, &sink{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Probe() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if c.Probe() {
		t.Fatal("Probe: alive after the peer closed")
	}
	// The close is in the kernel. Within the grace of an exchange (as
	// when Put's look on return hands the connection to a waiter), Alive
	// takes the connection as alive without a look; Probe must not.
	c.g.answeredAt.Store(nanotime())
	if c.Probe() {
		t.Fatal("Probe: alive within goProbeGrace after the peer closed")
	}
}

// TestGoNetAliveAfterDeadline: an idle Go net connection whose last
// exchange's read deadline has passed (the timeouts bound that exchange,
// not the idle time that follows) still probes alive while its peer keeps
// it open, and serves the next request.
func TestGoNetAliveAfterDeadline(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, err := readHead(br); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	c := goDial(t, o.addr())
	short := Config{ResponseHeaderTimeout: 50 * time.Millisecond, ReadTimeout: 50 * time.Millisecond}
	if _, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq), Config: short}, &sink{}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetState(Idle); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // past the deadline and goProbeGrace
	if !c.Alive() {
		t.Fatal("idle connection probed dead after its last read deadline passed, with its peer still there")
	}
	if err := c.SetState(Busy); err != nil {
		t.Fatal(err)
	}
	out, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, &sink{})
	if err != nil || !out.Reused {
		t.Fatalf("second exchange: reused %v, err %v", out.Reused, err)
	}
}

// TestGoNetContextClose: the context's end unblocks an exchange waiting
// for a head on a Go-net connection.
func TestGoNetContextClose(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		_, _ = readHead(br)
		_, _ = io.Copy(io.Discard, br) // never answers
	})
	c := goDial(t, o.addr())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.RoundTrip(ctx, &Exchange{Head: request(t, getReq)}, &sink{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the context's deadline", err)
	}
	if st := c.State(); st != Closing && st != Closed { // the watch may still be closing it
		t.Fatalf("state %v, want closing or closed", st)
	}
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// TestGoNetGraceByExchanges: within goProbeGrace of its last exchange,
// the pool's look on return takes a Go net connection as alive without a
// probe; the look on checkout probes while the connection has carried one
// exchange (an origin that closes right after each response is caught
// before a request meets it) and not once it has carried more (a GET that
// meets a close then is retried; Probe still looks for one that could
// not be).
func TestGoNetGraceByExchanges(t *testing.T) {
	for _, exchanges := range []int{1, 2} {
		t.Run(fmt.Sprintf("exchanges=%d", exchanges), func(t *testing.T) {
			checkLeaks(t)
			closeNow := make(chan struct{})
			o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
				for i := 0; i < exchanges; i++ {
					if _, err := readHead(br); err != nil {
						return
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
				<-closeNow
			})
			c := goDial(t, o.addr())
			for i := 0; i < exchanges; i++ {
				if _, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, &sink{}); err != nil {
					t.Fatal(err)
				}
			}
			close(closeNow)
			deadline := time.Now().Add(5 * time.Second)
			for c.Probe() && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if c.Probe() {
				t.Fatal("Probe: alive after the peer closed")
			}
			// The close is in the kernel; the exchange ended a moment ago.
			c.g.answeredAt.Store(nanotime())
			if !c.goAlive() {
				t.Fatal("look on return within the grace probed the socket")
			}
			want := exchanges > 1
			if got := c.goAlive(); got != want {
				t.Fatalf("look on checkout within the grace after %d exchanges: alive %v, want %v", exchanges, got, want)
			}
			if c.Probe() {
				t.Fatal("Probe: alive within the grace after the peer closed")
			}
		})
	}
}
