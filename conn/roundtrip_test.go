package conn

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/serverside-go/serverside/parser"
)

const getReq = "GET /x HTTP/1.1\r\nHost: o\r\n\r\n"

// TestRoundTripKeepAlive: three exchanges on one connection, each
// reporting its response's Keep-Alive hint: timeout=7, none, and
// timeout=0 (no idle time at all, not the same as none).
func TestRoundTripKeepAlive(t *testing.T) {
	checkLeaks(t)
	fields := []string{"Keep-Alive: timeout=7\r\n", "", "Keep-Alive: timeout=0, max=100\r\n"}
	hints := []time.Duration{7 * time.Second, 0, KeepAliveNoIdle}
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			if _, err := readHead(br); err != nil {
				return
			}
			body := fmt.Sprintf("hello %d", i)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s", fields[i%len(fields)], len(body), body)
		}
	})
	c := dial(t, o.addr())
	for i := 0; i < 3; i++ {
		s := &sink{keep: true}
		out, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, s)
		if err != nil {
			t.Fatal(err)
		}
		if s.status != 200 || string(s.body) != fmt.Sprintf("hello %d", i) {
			t.Fatalf("got %d %q", s.status, s.body)
		}
		if out.Reused != (i > 0) || !out.Written || !out.Responded || out.KeepAliveHint != hints[i] {
			t.Fatalf("outcome %+v", out)
		}
		if !c.Reusable() {
			t.Fatalf("exchange %d: not reusable", i)
		}
	}
	if c.Requests() != 3 {
		t.Fatalf("requests %d", c.Requests())
	}
}

func TestRoundTripChunkedAndInterim(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		time.Sleep(10 * time.Millisecond)
		io.WriteString(c, "6\r\n world\r\n0\r\nX-T: 1\r\n\r\n")
		io.Copy(io.Discard, br)
	})
	c := dial(t, o.addr())
	s := &sink{keep: true}
	if _, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, s); err != nil {
		t.Fatal(err)
	}
	if s.status != 200 || string(s.body) != "hello world" || !c.Reusable() {
		t.Fatalf("got %d %q reusable=%v", s.status, s.body, c.Reusable())
	}
}

func TestRoundTripMalformed(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		readHead(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
		io.Copy(io.Discard, br)
	})
	c := dial(t, o.addr())
	_, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, &sink{})
	e := AsError(err)
	if e == nil || e.Phase != PhaseProtocol || !errors.Is(err, parser.ErrCLMismatch) || !e.Responded {
		t.Fatalf("err %v", err)
	}
	if c.Reusable() {
		t.Fatal("reusable after a protocol error")
	}
}

func TestRoundTripHeaderTimeout(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) { io.Copy(io.Discard, br) })
	c := dial(t, o.addr())
	ex := &Exchange{Head: request(t, getReq), Config: Config{ResponseHeaderTimeout: 50 * time.Millisecond}}
	start := time.Now()
	_, err := c.RoundTrip(context.Background(), ex, &sink{})
	if e := AsError(err); e == nil || e.Phase != PhaseAwaitHead || !errors.Is(err, ErrHeaderTimeout) || e.Responded || !e.Written {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestRoundTripContextCancel(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) { io.Copy(io.Discard, br) })
	c := dial(t, o.addr())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.RoundTrip(ctx, &Exchange{Head: request(t, getReq)}, &sink{})
	// The context's Close may still be finishing on its own goroutine.
	for deadline := time.Now().Add(2 * time.Second); c.State() != Closed && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(err, context.DeadlineExceeded) || c.State() != Closed {
		t.Fatalf("err %v state %v", err, c.State())
	}
}

func TestExpectContinue(t *testing.T) {
	for _, early := range []bool{false, true} {
		t.Run(fmt.Sprint("early=", early), func(t *testing.T) {
			checkLeaks(t)
			got := make(chan string, 2) // never blocks the origin if the test fails first
			o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
				// A connection that sends no head (a dial retried after
				// netpoll's stale hang-up event) reports nothing.
				if _, err := readHead(br); err != nil {
					return
				}
				if early {
					io.WriteString(c, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 3\r\n\r\nno!")
					c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
					b, _ := io.ReadAll(br)
					got <- string(b)
					return
				}
				io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
				b := make([]byte, 4)
				io.ReadFull(br, b)
				got <- string(b)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				io.Copy(io.Discard, br)
			})
			c := dial(t, o.addr())
			head := request(t, "POST /u HTTP/1.1\r\nHost: o\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
			s := &sink{keep: true}
			ex := &Exchange{Head: head, Body: strings.NewReader("data"), ContentLength: 4, ExpectContinueTimeout: 5 * time.Second}
			out, err := c.RoundTrip(context.Background(), ex, s)
			if err != nil {
				t.Fatal(err)
			}
			body := <-got
			if early {
				if s.status != 417 || string(s.body) != "no!" || !out.BodySkipped || c.Reusable() || body != "" {
					t.Fatalf("status %d body %q skipped %v reusable %v origin got %q", s.status, s.body, out.BodySkipped, c.Reusable(), body)
				}
				return
			}
			if s.status != 200 || string(s.body) != "ok" || out.BodySkipped || !c.Reusable() || body != "data" {
				t.Fatalf("status %d body %q skipped %v origin got %q", s.status, s.body, out.BodySkipped, body)
			}
		})
	}
}

func TestChunkedRequestBody(t *testing.T) {
	checkLeaks(t)
	got := make(chan string, 2) // never blocks the origin if the test fails first
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		lines, err := readHead(br)
		if err != nil {
			return // no request on this connection (a retried dial)
		}
		var te bool
		for _, l := range lines {
			te = te || strings.EqualFold(l, "Transfer-Encoding: chunked")
		}
		var d parser.ChunkedDecoder
		var body []byte
		buf := make([]byte, 4096)
		for !d.Done() {
			n, err := br.Read(buf)
			in := buf[:n]
			for len(in) > 0 {
				data, k, derr := d.Next(in)
				if derr != nil {
					got <- derr.Error()
					return
				}
				body = append(body, data...)
				in = in[k:]
			}
			if err != nil {
				break
			}
		}
		got <- fmt.Sprint(te, " ", string(body))
		io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
		io.Copy(io.Discard, br)
	})
	c := dial(t, o.addr())
	head := request(t, "POST /u HTTP/1.1\r\nHost: o\r\n\r\n")
	ex := &Exchange{Head: head, Body: io.MultiReader(strings.NewReader("abc"), strings.NewReader("defg")), ContentLength: -1}
	if _, err := c.RoundTrip(context.Background(), ex, &sink{}); err != nil {
		t.Fatal(err)
	}
	if g := <-got; g != "true abcdefg" {
		t.Fatalf("origin got %q", g)
	}
}

func TestResetMidBody(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		readHead(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
		time.Sleep(20 * time.Millisecond)
		c.(*net.TCPConn).SetLinger(0)
	})
	c := dial(t, o.addr())
	_, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, &sink{})
	if e := AsError(err); e == nil || e.Phase != PhaseBody || !errors.Is(err, ErrUnexpectedEOF) {
		t.Fatalf("err %v", err)
	}
	if c.Reusable() {
		t.Fatal("reusable")
	}
}

func TestExtraBytesNotReusable(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		readHead(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
		io.Copy(io.Discard, br)
	})
	c := dial(t, o.addr())
	s := &sink{keep: true}
	if _, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, s); err != nil {
		t.Fatal(err)
	}
	if string(s.body) != "ok" {
		t.Fatalf("body %q", s.body)
	}
	time.Sleep(20 * time.Millisecond)
	if c.Reusable() || c.Alive() {
		t.Fatal("a connection with unread bytes is reusable")
	}
}

func TestRoundTripOnClosed(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) { io.Copy(io.Discard, br) })
	c := dial(t, o.addr())
	c.Close()
	c.Close()
	_, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, &sink{})
	if !errors.Is(err, ErrClosed) || c.State() != Closed || c.Alive() {
		t.Fatalf("err %v state %v", err, c.State())
	}
}

type headSink struct {
	sink
	fold []byte
}

func (s *headSink) OnHead(r *parser.Response) error {
	s.fold = append([]byte(nil), r.Peek([]byte("X-F"))...)
	return s.sink.OnHead(r)
}

// TestFoldedHeadOverSeveralReads: a response head larger than one netpoll
// buffer node, with an obs-fold, arriving in two parts. The parser unfolds
// in place; the unfolding must survive the second read.
func TestFoldedHeadOverSeveralReads(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		readHead(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 20000)+"\r\nX-F: a\r\n b\r\nX-After: 1\r\n")
		time.Sleep(30 * time.Millisecond)
		// More than netpoll's peek cache can hold: the next Peek copies
		// the raw bytes again.
		io.WriteString(c, "X-Big2: "+strings.Repeat("b", 20000)+"\r\nContent-Length: 2\r\n\r\nok")
		io.Copy(io.Discard, br)
	})
	c := dial(t, o.addr())
	s := &headSink{sink: sink{keep: true}}
	if _, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, s); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(string(s.fold), "\r\n") || !strings.HasPrefix(string(s.fold), "a") || !strings.HasSuffix(string(s.fold), "b") {
		t.Fatalf("folded value %q", s.fold)
	}
	if string(s.body) != "ok" || !c.Reusable() {
		t.Fatalf("body %q reusable %v", s.body, c.Reusable())
	}
}

// TestExpectContinueTimeout: no interim answer comes; the body goes out
// once the wait is over.
func TestExpectContinueTimeout(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		readHead(br)
		b := make([]byte, 4)
		io.ReadFull(br, b)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n%s", b)
		io.Copy(io.Discard, br)
	})
	c := dial(t, o.addr())
	head := request(t, "PUT /u HTTP/1.1\r\nHost: o\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	s := &sink{keep: true}
	start := time.Now()
	ex := &Exchange{Head: head, Body: strings.NewReader("data"), ContentLength: 4, ExpectContinueTimeout: 50 * time.Millisecond}
	if _, err := c.RoundTrip(context.Background(), ex, s); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); string(s.body) != "data" || d < 50*time.Millisecond || !c.Reusable() {
		t.Fatalf("body %q after %v reusable %v", s.body, d, c.Reusable())
	}
}

func TestRoundTripAbortable(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) { io.Copy(io.Discard, br) })
	a := NewAbortable()
	c := dial(t, o.addr())
	time.AfterFunc(50*time.Millisecond, a.Abort)
	_, err := c.RoundTrip(a, &Exchange{Head: request(t, getReq)}, &sink{})
	// Abort closes the connection on its own goroutine: RoundTrip may
	// return while that close is still going from Closing to Closed.
	for deadline := time.Now().Add(time.Second); c.State() != Closed && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(err, context.Canceled) || c.State() != Closed || c.Reusable() {
		t.Fatalf("err %v state %v", err, c.State())
	}
	// Once aborted, nothing is sent.
	c2 := dial(t, o.addr())
	_, err = c2.RoundTrip(a, &Exchange{Head: request(t, getReq)}, &sink{})
	if e := AsError(err); e == nil || e.Phase != PhaseWrite || e.Written || !errors.Is(err, context.Canceled) || c2.Reusable() {
		t.Fatalf("err %v", err)
	}
	_ = c2.Close()
	a.Abort() // idempotent
}

// cancelSink ends the exchange's context inside its first OnBody, then
// lingers, as a client that goes away mid-body.
type cancelSink struct {
	sink
	cancel func()
}

func (s *cancelSink) OnBody(p []byte) error {
	if s.cancel != nil {
		s.cancel()
		s.cancel = nil
		time.Sleep(100 * time.Millisecond)
	}
	return s.sink.OnBody(p)
}

// A context that ends mid-body fails the exchange: netpoll keeps unread
// bytes after a close, and reading on would hand the sink the same bytes
// again and report success.
func TestCancelMidBodyFails(t *testing.T) {
	checkLeaks(t)
	const size = 300_000 // more than one piece, less than the high-water mark
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
		c.Write(make([]byte, size))
		io.Copy(io.Discard, br)
	})
	for _, abortable := range []bool{false, true} {
		c := dial(t, o.addr())
		var ctx context.Context
		var cancel func()
		if abortable {
			a := NewAbortable()
			ctx, cancel = a, a.Abort
		} else {
			ctx, cancel = context.WithCancel(context.Background())
		}
		s := &cancelSink{cancel: cancel}
		_, err := c.RoundTrip(ctx, &Exchange{Head: request(t, getReq)}, s)
		if err == nil || s.n >= size || c.Reusable() {
			t.Fatalf("abortable %v: err %v after %d of %d body bytes", abortable, err, s.n, size)
		}
		_ = c.Close()
	}
}

type headPanicSink struct{ sink }

func (headPanicSink) OnHead(*parser.Response) error { panic("sink bug") }

// A sink that panics must not leave the connection in the Abortable's set.
func TestPanicLeavesNoWatch(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		io.Copy(io.Discard, br)
	})
	a := NewAbortable()
	c := dial(t, o.addr())
	func() {
		defer func() { _ = recover() }()
		_, _ = c.RoundTrip(a, &Exchange{Head: request(t, getReq)}, &headPanicSink{})
	}()
	s := &a.sets[c.slot%abortStripes]
	s.mu.Lock()
	_, still := s.busy[c]
	s.mu.Unlock()
	if still {
		t.Fatal("connection still watched after a sink panic")
	}
	_ = c.Close()
}

// TestWatchdogOnlyWhenNeeded: a response buffered whole and small is
// delivered without arming the sink watchdog (no timer is ever made for
// the connection); a larger one or a chunked one arms it.
func TestWatchdogOnlyWhenNeeded(t *testing.T) {
	checkLeaks(t)
	big := strings.Repeat("b", 64<<10)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		for {
			h, err := readHead(br)
			if err != nil {
				return
			}
			var resp string
			switch {
			case strings.Contains(h[0], "/small"):
				resp = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!"
			case strings.Contains(h[0], "/nobody"):
				resp = "HTTP/1.1 204 No Content\r\n\r\n"
			case strings.Contains(h[0], "/chunked"):
				resp = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
			default:
				resp = "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	})
	c := dial(t, o.addr())
	get := func(path string, want int64) {
		t.Helper()
		s := &sink{}
		ex := &Exchange{Head: request(t, "GET "+path+" HTTP/1.1\r\nHost: o\r\n\r\n")}
		if _, err := c.RoundTrip(context.Background(), ex, s); err != nil || s.n != want {
			t.Fatalf("GET %s: %d bytes, %v; want %d", path, s.n, err, want)
		}
	}
	for range 3 {
		get("/small", 13)
		get("/nobody", 0)
	}
	c.mu.Lock()
	armed := c.watch != nil
	c.mu.Unlock()
	if armed {
		t.Fatal("the watchdog was armed for small responses buffered whole")
	}
	get("/chunked", 5)
	c.mu.Lock()
	armed = c.watch != nil
	c.mu.Unlock()
	if !armed {
		t.Fatal("the watchdog was not armed for a chunked response")
	}
	get("/big", int64(len(big)))
}

// A 101 answers only a request that offered the protocol in Upgrade (RFC
// 9110 §7.8, §15.2.2): to any other request it is a protocol error, never
// a response handed to the sink. With Upgrade forwarded, the 101 is the
// final response and the connection is spent.
func TestUnrequestedSwitchingProtocols(t *testing.T) {
	const upgradeReq = "GET /ws HTTP/1.1\r\nHost: o\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
	cases := []struct {
		name  string
		req   string
		edits *parser.Edits
		ok    bool
	}{
		{"no upgrade", getReq, nil, false},
		{"upgrade stripped", upgradeReq, &parser.Edits{StripHopByHop: true}, false},
		{"upgrade forwarded", upgradeReq, nil, true},
		{"upgrade kept", upgradeReq, &parser.Edits{StripHopByHop: true,
			Keep: parser.HeaderSet(0).With(parser.HdrUpgrade, parser.HdrConnection)}, true},
		// An HTTP/1.0 server cannot switch protocols: its 101 is an error
		// even to a request that asked.
		{"HTTP/1.0 101", upgradeReq, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			version, want := "1.1", ErrUnrequestedSwitch
			if tc.name == "HTTP/1.0 101" {
				version, want = "1.0", ErrSwitchHTTP10
			}
			o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
				readHead(br)
				io.WriteString(c, "HTTP/"+version+" 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nframes")
				io.Copy(io.Discard, br)
			})
			c := dial(t, o.addr())
			s := &sink{}
			_, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, tc.req), Edits: tc.edits}, s)
			if c.Reusable() {
				t.Fatal("reusable after a 101")
			}
			if tc.ok {
				if err != nil || s.status != 101 {
					t.Fatalf("status %d err %v", s.status, err)
				}
				return
			}
			e := AsError(err)
			if e == nil || e.Phase != PhaseProtocol || !errors.Is(err, want) || s.status != 0 {
				t.Fatalf("status %d err %v", s.status, err)
			}
		})
	}
}

// An origin that answers before it has read the body and then resets the
// connection (a 413 from a server without lingering close) makes the body
// write fail; the response it sent is still the exchange's answer (RFC
// 9112 §9.5: a client sending a body watches for an error response), and
// the connection is spent.
func TestEarlyResponseThenReset(t *testing.T) {
	for _, gonet := range []bool{false, true} {
		t.Run(fmt.Sprint("gonet=", gonet), func(t *testing.T) {
			checkLeaks(t)
			o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := readHead(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 4\r\n\r\nnope")
				c.(*net.TCPConn).SetLinger(0) // unread body bytes: the close is a reset
			})
			var c *Conn
			if gonet {
				c = goDial(t, o.addr())
			} else {
				c = dial(t, o.addr())
			}
			const n = 64 << 20 // more than the socket buffers hold
			ex := &Exchange{Head: request(t, "POST /u HTTP/1.1\r\nHost: o\r\nContent-Length: 67108864\r\n\r\n"),
				Body: strings.NewReader(strings.Repeat("x", n)), ContentLength: n}
			s := &sink{keep: true}
			out, err := c.RoundTrip(context.Background(), ex, s)
			if err != nil || s.status != 413 || string(s.body) != "nope" || !out.BodySkipped {
				t.Fatalf("status %d body %q outcome %+v err %v", s.status, s.body, out, err)
			}
			if c.Reusable() {
				t.Fatal("reusable after a body cut short")
			}
		})
	}
}

// An origin that answers 413 before it has read the body, once the body's
// write waits on full socket buffers, and then neither reads nor closes
// holds that write until the write timeout; its
// answer, already there, is still the exchange's, not the write's timeout
// (which the demo turns into a 504), and the connection is spent.
func TestEarlyResponseThenWriteTimeout(t *testing.T) {
	for _, gonet := range []bool{false, true} {
		t.Run(fmt.Sprint("gonet=", gonet), func(t *testing.T) {
			checkLeaks(t)
			done := make(chan struct{})
			o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := readHead(br); err != nil {
					return
				}
				// Once the socket buffers are full and the body's write
				// waits, as a slow origin's 413 comes.
				time.Sleep(100 * time.Millisecond)
				io.WriteString(c, "HTTP/1.1 413 Too Large\r\nContent-Length: 4\r\n\r\nnope")
				<-done // reads nothing more, closes only when the test ends
			})
			defer close(done)
			var c *Conn
			if gonet {
				c = goDial(t, o.addr())
			} else {
				c = dial(t, o.addr())
			}
			const n = 64 << 20 // more than the socket buffers hold
			ex := &Exchange{Head: request(t, "POST /u HTTP/1.1\r\nHost: o\r\nContent-Length: 67108864\r\n\r\n"),
				Body: strings.NewReader(strings.Repeat("x", n)), ContentLength: n,
				Config: Config{WriteTimeout: 300 * time.Millisecond}}
			s := &sink{keep: true}
			out, err := c.RoundTrip(context.Background(), ex, s)
			if err != nil || s.status != 413 || string(s.body) != "nope" || !out.BodySkipped {
				t.Fatalf("status %d body %q outcome %+v err %v", s.status, s.body, out, err)
			}
			if c.Reusable() {
				t.Fatal("reusable after a body cut short")
			}
		})
	}
}

// TestEarlyAnswerWhileWriteBlocked: an origin answers 413 once the body's
// writes have filled the socket buffers, then reads nothing more and does
// not close (Squid's 407 to a large upload does the same). The exchange
// sees the answer while its write waits for room, and delivers it: not
// after the write timeout (a minute here; the context's 10 s would end the
// exchange first).
func TestEarlyAnswerWhileWriteBlocked(t *testing.T) {
	checkLeaks(t)
	done := make(chan struct{})
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		time.Sleep(300 * time.Millisecond) // the buffers fill; the write waits
		io.WriteString(c, "HTTP/1.1 413 Too Large\r\nContent-Length: 4\r\n\r\nnope")
		<-done
	})
	defer close(done)
	c := dial(t, o.addr())
	const n = 256 << 20 // far more than the socket buffers hold
	ex := &Exchange{Head: request(t, "POST /u HTTP/1.1\r\nHost: o\r\nContent-Length: 268435456\r\n\r\n"),
		Body: io.LimitReader(zeroReader{}, n), ContentLength: n, Config: Config{WriteTimeout: time.Minute}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := &sink{keep: true}
	out, err := c.RoundTrip(ctx, ex, s)
	if err != nil || s.status != 413 || string(s.body) != "nope" || !out.BodySkipped {
		t.Fatalf("status %d body %q outcome %+v err %v", s.status, s.body, out, err)
	}
	if c.Reusable() {
		t.Fatal("reusable after a body cut short")
	}
}

// zeroReader reads zeros.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// resetReader yields some bytes, then fails as a reset client socket would.
type resetReader struct{ n int }

func (r *resetReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, fmt.Errorf("client: %w", syscall.ECONNRESET)
	}
	k := min(len(p), r.n)
	r.n -= k
	return k, nil
}

// A body whose source fails, whatever its error, is not taken for the
// origin's close: the exchange fails at once instead of waiting for an
// answer the origin, still reading the body, never sends.
func TestBodySourceResetNotAwaited(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		readHead(br)
		io.Copy(io.Discard, br)
	})
	c := dial(t, o.addr())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ex := &Exchange{Head: request(t, "POST /u HTTP/1.1\r\nHost: o\r\nContent-Length: 100000\r\n\r\n"),
		Body: &resetReader{n: 50000}, ContentLength: 100000}
	_, err := c.RoundTrip(ctx, ex, &sink{})
	if e := AsError(err); e == nil || e.Phase != PhaseWrite || !errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, context.DeadlineExceeded) || e.Responded {
		t.Fatalf("err %v", err)
	}
}

// interimSink records the interim heads it is given.
type interimSink struct {
	sink
	interim []string // "status link"
}

func (s *interimSink) OnInterim(r *parser.Response) error {
	s.interim = append(s.interim, strconv.Itoa(r.Status())+" "+string(r.Peek([]byte("Link"))))
	return nil
}

// TestInterimToSink: 1xx responses reach a sink that implements
// InterimSink, in order, before the final head, with their fields; with
// Expect: 100-continue too (the 100 itself included). A sink without
// OnInterim gets only the final response.
func TestInterimToSink(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		for {
			h, err := readHead(br)
			if err != nil {
				return
			}
			if strings.Contains(strings.Join(h, "\n"), "100-continue") {
				io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n")
				io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
				if _, err := io.ReadFull(br, make([]byte, 4)); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			io.WriteString(c, "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.js>\r\n\r\n")
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	c := dial(t, o.addr())
	s := &interimSink{sink: sink{keep: true}}
	if _, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, s); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.interim, ", "); s.status != 200 || string(s.body) != "ok" || got != "102 , 103 </a.js>" {
		t.Fatalf("got %d %q, interim %q", s.status, s.body, got)
	}
	plain := &sink{keep: true}
	if _, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, plain); err != nil || plain.status != 200 {
		t.Fatalf("plain sink: %d, %v", plain.status, err)
	}
	s = &interimSink{sink: sink{keep: true}}
	post := request(t, "POST /up HTTP/1.1\r\nHost: o\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
	ex := &Exchange{Head: post, Body: strings.NewReader("data"), ContentLength: 4}
	if _, err := c.RoundTrip(context.Background(), ex, s); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.interim, ", "); s.status != 200 || got != "103 </style.css>, 100 " {
		t.Fatalf("expect: got %d, interim %q", s.status, got)
	}
	if !c.Reusable() {
		t.Fatal("not reusable after interim responses")
	}
}

// TestTooManyInterim: an origin that sends interim responses without end
// gets a protocol error after 64 of them, not a wait until the header
// timeout; a few are fine.
func TestTooManyInterim(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		h, err := readHead(br)
		if err != nil {
			return
		}
		n := 1000
		if strings.Contains(h[0], "/few") {
			n = 64
		}
		io.WriteString(c, strings.Repeat("HTTP/1.1 102 Processing\r\n\r\n", n)+"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		io.Copy(io.Discard, br)
	})
	c := dial(t, o.addr())
	s := &sink{}
	ex := &Exchange{Head: request(t, "GET /few HTTP/1.1\r\nHost: o\r\n\r\n"), Config: Config{ResponseHeaderTimeout: time.Minute}}
	if _, err := c.RoundTrip(context.Background(), ex, s); err != nil || s.status != 200 {
		t.Fatalf("64 interim responses: %d %v", s.status, err)
	}
	c2 := dial(t, o.addr())
	ex = &Exchange{Head: request(t, getReq), Config: Config{ResponseHeaderTimeout: time.Minute}}
	_, err := c2.RoundTrip(context.Background(), ex, &sink{})
	if e := AsError(err); e == nil || e.Phase != PhaseProtocol || !errors.Is(err, ErrTooManyInterim) || c2.Reusable() {
		t.Fatalf("1000 interim responses: %v", err)
	}
}

// TestUntilCloseBodyReset: a body delimited by the close ends cleanly on
// a FIN, but a reset (RST) cuts it short and is an error, on netpoll (which
// reports both as one "peer close") as on Go net.
func TestUntilCloseBodyReset(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		h, err := readHead(br)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\npartial body")
		time.Sleep(50 * time.Millisecond) // the bytes arrive before the close
		if strings.Contains(h[0], "/rst") {
			_ = c.(*net.TCPConn).SetLinger(0) // close with RST
		}
		c.Close()
	})
	for _, tc := range []struct {
		path  string
		reset bool
	}{{"/fin", false}, {"/rst", true}} {
		c := dial(t, o.addr())
		s := &sink{keep: true}
		_, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, "GET "+tc.path+" HTTP/1.1\r\nHost: o\r\n\r\n")}, s)
		if string(s.body) != "partial body" {
			t.Fatalf("%s: body %q", tc.path, s.body)
		}
		if tc.reset {
			if e := AsError(err); e == nil || e.Phase != PhaseBody || !errors.Is(err, ErrPeerReset) {
				t.Fatalf("%s: %v, want ErrPeerReset", tc.path, err)
			}
		} else if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if c.Reusable() {
			t.Fatalf("%s: reusable after a body delimited by the close", tc.path)
		}
	}
}

// A 101 switches to protocols the request offered (RFC 9110 §7.8): one
// whose Upgrade names none, or another one, is a protocol error, never
// handed to the sink. Protocols compare without regard to case. (A 101
// without Upgrade at all is refused by the parser.)
func TestSwitchToOfferedProtocol(t *testing.T) {
	for _, tc := range []struct {
		offer, answer string // the Upgrade values
		ok            bool
	}{
		{"websocket", "websocket", true},
		{"h2c, WebSocket", "websocket", true},
		{"foo/2, bar", "FOO/2", true},
		{"websocket", "h2c", false},
		{"websocket", "websocket, h2c", false},
		{"foo/2", "foo/3", false},
		{"websocket", " , ", false},
	} {
		t.Run(tc.offer+" → "+tc.answer, func(t *testing.T) {
			checkLeaks(t)
			o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
				readHead(br)
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: "+tc.answer+"\r\n\r\n")
				io.Copy(io.Discard, br)
			})
			c := dial(t, o.addr())
			defer c.Close()
			s := &sink{}
			_, err := c.RoundTrip(context.Background(), &Exchange{
				Head: request(t, "GET /ws HTTP/1.1\r\nHost: o\r\nConnection: upgrade\r\nUpgrade: "+tc.offer+"\r\n\r\n")}, s)
			if tc.ok {
				if err != nil || s.status != 101 {
					t.Fatalf("status %d err %v", s.status, err)
				}
				return
			}
			if e := AsError(err); e == nil || e.Phase != PhaseProtocol || !errors.Is(err, ErrUnofferedSwitch) || s.status != 0 {
				t.Fatalf("status %d err %v, want ErrUnofferedSwitch", s.status, err)
			}
		})
	}
}

// countingSink counts the body pieces it is handed.
type countingSink struct {
	sink
	pieces int
}

func (s *countingSink) OnBody(p []byte) error {
	s.pieces++
	return s.sink.OnBody(p)
}

// TestTinyChunksGathered: a chunked body of 20,000 one-byte chunks,
// arriving in one write, reaches the sink whole and in order, gathered
// into a few pieces rather than one per chunk: every piece is a sink call
// (a write to the proxy's client), so a body of tiny chunks would cost a
// system call per byte. The connection stays reusable.
func TestTinyChunksGathered(t *testing.T) {
	checkLeaks(t)
	const n = 20000
	var want, wire bytes.Buffer
	wire.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
	for i := 0; i < n; i++ {
		b := byte('a' + i%26)
		want.WriteByte(b)
		wire.WriteString("1;x=y\r\n")
		wire.WriteByte(b)
		wire.WriteString("\r\n")
	}
	wire.WriteString("0\r\n\r\n")
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		c.Write(wire.Bytes())
		io.Copy(io.Discard, br)
	})
	c := dial(t, o.addr())
	s := &countingSink{sink: sink{keep: true}}
	if _, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq)}, s); err != nil {
		t.Fatal(err)
	}
	if s.status != 200 || !bytes.Equal(s.body, want.Bytes()) || !c.Reusable() {
		t.Fatalf("status %d, %d body bytes (equal %v), reusable %v", s.status, len(s.body), bytes.Equal(s.body, want.Bytes()), c.Reusable())
	}
	if s.pieces > n/100 {
		t.Fatalf("%d one-byte chunks reached the sink in %d pieces", n, s.pieces)
	}
	t.Logf("%d one-byte chunks reached the sink in %d pieces", n, s.pieces)
}

// echoReader is the body of TestFullDuplexSuccess: its first Read waits
// for gate; while c is on netpoll, each Read (between two body writes, on
// the exchange's goroutine) waits until the origin has echoed all that
// was read before, and notes the most response bytes netpoll held.
type echoReader struct {
	gate   <-chan struct{}
	r      io.Reader
	c      *Conn
	echoed *atomic.Int64
	read   int64
	maxBuf int
}

func (e *echoReader) Read(p []byte) (int, error) {
	<-e.gate
	if e.c.g == nil && !e.c.detached.Load() {
		for deadline := time.Now().Add(5 * time.Second); e.echoed.Load() < e.read && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		e.maxBuf = max(e.maxBuf, e.c.nc.Reader().Len())
	}
	n, err := e.r.Read(p[:min(len(p), 32<<10)])
	e.read += int64(n)
	return n, err
}

// A full-duplex origin answers 200 at once and then echoes the request
// body as it reads it: a success before the body is no refusal, so the
// whole body goes out and the whole echo comes back. On netpoll, the echo
// that arrives while the body still goes out is not buffered past the
// high-water mark: the exchange moves to Go net I/O (Detached), where TCP
// holds the origin back.
func TestFullDuplexSuccess(t *testing.T) {
	for _, gonet := range []bool{false, true} {
		t.Run(fmt.Sprint("gonet=", gonet), func(t *testing.T) {
			checkLeaks(t)
			const n = 1 << 20 // over the high-water mark, within the socket buffers
			headOut := make(chan struct{})
			var echoed atomic.Int64
			got := make(chan int, 1)
			o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := readHead(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
				close(headOut)
				buf := make([]byte, 64<<10)
				total := 0
				for total < n {
					k, err := br.Read(buf[:min(len(buf), n-total)])
					if k > 0 {
						total += k
						fmt.Fprintf(c, "%x\r\n%s\r\n", k, buf[:k])
						echoed.Add(int64(k))
					}
					if err != nil {
						break
					}
				}
				io.WriteString(c, "0\r\n\r\n")
				got <- total
			})
			var c *Conn
			if gonet {
				c = goDial(t, o.addr())
			} else {
				c = dial(t, o.addr())
			}
			gate := make(chan struct{})
			go func() {
				<-headOut
				time.Sleep(50 * time.Millisecond) // the head reaches the poller before the body goes
				close(gate)
			}()
			const hw = 128 << 10
			body := &echoReader{gate: gate, r: strings.NewReader(strings.Repeat("x", n)), c: c, echoed: &echoed}
			ex := &Exchange{Head: request(t, "POST /echo HTTP/1.1\r\nHost: o\r\nContent-Length: 1048576\r\n\r\n"),
				Body: body, ContentLength: n,
				Config: Config{ResponseHeaderTimeout: 5 * time.Second, BodyHighWater: hw}}
			s := &sink{}
			out, err := c.RoundTrip(context.Background(), ex, s)
			if err != nil || s.status != 200 || s.n != n || out.BodySkipped {
				t.Fatalf("status %d body %d bytes outcome %+v err %v", s.status, s.n, out, err)
			}
			if total := <-got; total != n {
				t.Fatalf("origin got %d bytes, want %d", total, n)
			}
			t.Logf("netpoll held at most %d response bytes during the body", body.maxBuf)
			// At most the mark, and what came in during one body write.
			if body.maxBuf > hw+256<<10 {
				t.Fatalf("netpoll held %d response bytes while the body went out (high-water mark %d)", body.maxBuf, hw)
			}
		})
	}
}

// TestRoundTripEditedMethod: a request whose edits change its method is
// the request of that method: a GET sent as HEAD reads a HEAD response
// (its Content-Length announces no body that follows), and the
// connection serves the next request.
func TestRoundTripEditedMethod(t *testing.T) {
	checkLeaks(t)
	methods := make(chan string, 2)
	o := newOrigin(t, func(c net.Conn, br *bufio.Reader) {
		for {
			lines, err := readHead(br)
			if err != nil {
				return
			}
			methods <- strings.Fields(lines[0])[0]
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
			if strings.HasPrefix(lines[0], "GET ") {
				_, _ = io.WriteString(c, "hello")
			}
		}
	})
	c := dial(t, o.addr())
	short := Config{ReadTimeout: 2 * time.Second}
	ex := &Exchange{Head: request(t, getReq), Edits: &parser.Edits{Method: []byte("HEAD")}, Config: short}
	if _, err := c.RoundTrip(context.Background(), ex, &sink{}); err != nil {
		t.Fatalf("GET sent as HEAD: %v", err)
	}
	if m := <-methods; m != "HEAD" {
		t.Fatalf("origin read %s, want HEAD", m)
	}
	s := &sink{}
	out, err := c.RoundTrip(context.Background(), &Exchange{Head: request(t, getReq), Config: short}, s)
	if err != nil || !out.Reused || s.n != 5 {
		t.Fatalf("next GET: reused %v, %d body bytes, err %v", out.Reused, s.n, err)
	}
}
