package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/parser"
	"github.com/serverside-go/serverside/poolset"
)

// keepAlive answers every request on a connection with "ok <i>".
func keepAlive(extra string) func(int, net.Conn, *bufio.Reader) {
	return func(_ int, c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			lines, err := readHead(br)
			if err != nil {
				return
			}
			for _, l := range lines {
				if strings.HasPrefix(strings.ToLower(l), "content-length: ") {
					var n int64
					fmt.Sscan(l[len("content-length: "):], &n)
					io.CopyN(io.Discard, br, n)
				}
			}
			body := fmt.Sprintf("ok %d", i)
			send := body
			if strings.HasPrefix(lines[0], "HEAD ") {
				send = ""
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s", extra, len(body), send)
		}
	}
}

func TestDoKeepAliveReuse(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive(""))
	e := newEngine(t, Config{Shards: 2})
	for i := 0; i < 5; i++ {
		st, body, err := do(t, e, get(o.addr(), t))
		if err != nil || st != 200 || body != fmt.Sprintf("ok %d", i) {
			t.Fatalf("request %d: %d %q %v", i, st, body, err)
		}
	}
	s := e.Stats()[o.addr()]
	if s.Pool.Dialed != 1 || s.Pool.Reused != 4 || s.OnReused != 4 || s.Requests != 5 || s.ReuseRatio != 0.8 {
		t.Fatalf("stats %+v", s)
	}
	if o.accepted() != 1 {
		t.Fatalf("origin accepted %d connections", o.accepted())
	}
}

func TestKeepAliveHintHonoured(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		hint                    string
		dialed, reused, expired uint64
	}{
		// timeout=0 leaves no idle time at all: each request dials.
		{"Keep-Alive: timeout=0\r\n", 2, 0, 2},
		// timeout=1 leaves half a second (poolset: max(min(0.8s, 0s),
		// 0.5s)): back-to-back requests share the connection.
		{"Keep-Alive: timeout=1\r\n", 1, 1, 0},
	} {
		o := newOrigin(t, keepAlive(tc.hint))
		e := newEngine(t, Config{Shards: 1})
		for i := 0; i < 2; i++ {
			if st, _, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 {
				t.Fatalf("%q: %d %v", tc.hint, st, err)
			}
		}
		s := e.Stats()[o.addr()]
		if s.Pool.Dialed != tc.dialed || s.Pool.Reused != tc.reused || s.Pool.Closed.HintExpired != tc.expired {
			t.Fatalf("%q: stats %+v", tc.hint, s.Pool)
		}
	}
}

// staleOrigin serves one request per connection and then, like a server
// whose idle timer fired, closes the connection as the next request
// arrives, without answering it.
func staleOrigin(t *testing.T) *origin {
	return newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		readHead(br)
		c.(*net.TCPConn).SetLinger(0)
	})
}

func TestStaleConnRetriedForGET(t *testing.T) {
	checkLeaks(t)
	o := staleOrigin(t)
	e := newEngine(t, Config{Shards: 1})
	for i := 0; i < 3; i++ {
		if st, body, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q %v", i, st, body, err)
		}
	}
	s := e.Stats()[o.addr()]
	if s.RacesHit != 2 || s.RacesRetried != 2 || s.Retries != 2 || s.Requests != 3 || len(s.Errors) != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestStaleConnPOSTNotRetried(t *testing.T) {
	checkLeaks(t)
	o := staleOrigin(t)
	e := newEngine(t, Config{Shards: 1})
	if st, _, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 {
		t.Fatalf("%d %v", st, err)
	}
	post := &Request{Upstream: Upstream{Addr: o.addr()},
		Head: head(t, "POST /p HTTP/1.1\r\nHost: o\r\nContent-Length: 5\r\n\r\n"),
		Body: strings.NewReader("hello"), ContentLength: 5}
	_, _, err := do(t, e, post)
	ce := conn.AsError(err)
	if ce == nil || !ce.Reused || !ce.Written || ce.Responded || ce.Phase != conn.PhaseAwaitHead {
		t.Fatalf("err %v (%+v)", err, ce)
	}
	s := e.Stats()[o.addr()]
	if s.RacesHit != 1 || s.RacesRetried != 0 || s.Errors["await-head"] != 1 {
		t.Fatalf("stats %+v", s)
	}
	// The same POST with a replayable body and an idempotent method goes
	// through: PUT with GetBody.
	if st, _, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 {
		t.Fatalf("%d %v", st, err)
	}
	put := &Request{Upstream: Upstream{Addr: o.addr()},
		Head: head(t, "PUT /p HTTP/1.1\r\nHost: o\r\nContent-Length: 5\r\n\r\n"),
		Body: strings.NewReader("hello"), ContentLength: 5,
		GetBody: func() (io.Reader, error) { return strings.NewReader("hello"), nil }}
	if st, _, err := do(t, e, put); err != nil || st != 200 {
		t.Fatalf("PUT: %d %v", st, err)
	}
}

// TestStaleConnIdempotencyKeyRetried: a POST whose head carries an
// Idempotency-Key is sent again after the stale race even though the
// origin read it (it closed without answering), as net/http's Transport
// does: its sender made it safe to receive twice. Its body comes from
// GetBody.
func TestStaleConnIdempotencyKeyRetried(t *testing.T) {
	checkLeaks(t)
	o := staleOrigin(t)
	e := newEngine(t, Config{Shards: 1})
	if st, _, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 {
		t.Fatalf("%d %v", st, err)
	}
	post := &Request{Upstream: Upstream{Addr: o.addr()},
		Head: head(t, "POST /p HTTP/1.1\r\nHost: o\r\nIdempotency-Key: \"8e03978e\"\r\nContent-Length: 5\r\n\r\n"),
		Body: strings.NewReader("hello"), ContentLength: 5,
		GetBody: func() (io.Reader, error) { return strings.NewReader("hello"), nil }}
	if st, body, err := do(t, e, post); err != nil || st != 200 || body != "ok" {
		t.Fatalf("POST: %d %q %v", st, body, err)
	}
	s := e.Stats()[o.addr()]
	if s.RacesHit != 1 || s.RacesRetried != 1 || len(s.Errors) != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestStaleConnUnreadBodyRetried: a PUT with "Expect: 100-continue" and
// no GetBody meets a stale connection while it waits for the 100: its
// body was never read, so it goes again as it is, on a fresh connection,
// and reaches the origin once. Without Expect the small body goes with
// the head, and the engine keeps the bytes sent until a response byte
// comes: the PUT, idempotent, goes again with them, also without GetBody.
func TestStaleConnUnreadBodyRetried(t *testing.T) {
	checkLeaks(t)
	bodies := make(chan string, 4)
	o := newOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		for n := 0; ; n++ {
			lines, err := readHead(br)
			if err != nil {
				return
			}
			if n == 1 {
				c.(*net.TCPConn).SetLinger(0) // the stale race: closed as the request came
				return
			}
			if strings.HasPrefix(lines[0], "PUT ") {
				io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
				b := make([]byte, 5)
				if _, err := io.ReadFull(br, b); err != nil {
					return
				}
				bodies <- string(b)
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	e := newEngine(t, Config{Shards: 1})
	put := func(expect bool) (int, error) {
		raw := "PUT /p HTTP/1.1\r\nHost: o\r\nContent-Length: 5\r\n"
		if expect {
			raw += "Expect: 100-continue\r\n"
		}
		st, _, err := do(t, e, &Request{Upstream: Upstream{Addr: o.addr()}, Head: head(t, raw+"\r\n"),
			Body: strings.NewReader("hello"), ContentLength: 5})
		return st, err
	}
	if st, _, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 {
		t.Fatalf("GET: %d %v", st, err)
	}
	if st, err := put(true); err != nil || st != 200 {
		t.Fatalf("PUT with Expect on the stale connection: %d %v, want it retried", st, err)
	}
	if b := <-bodies; b != "hello" || len(bodies) != 0 {
		t.Fatalf("origin got body %q (%d more), want hello once", b, len(bodies))
	}
	s := e.Stats()[o.addr()]
	if s.RacesHit != 1 || s.RacesRetried != 1 {
		t.Fatalf("stats %+v, want one race, retried", s)
	}
	// The fresh connection answered the PUT: its next request meets the close.
	if st, err := put(false); err != nil || st != 200 {
		t.Fatalf("PUT without Expect on the stale connection: %d %v, want it retried", st, err)
	}
	if b := <-bodies; b != "hello" || len(bodies) != 0 {
		t.Fatalf("origin got body %q (%d more), want hello once", b, len(bodies))
	}
	if s := e.Stats()[o.addr()]; s.RacesHit != 2 || s.RacesRetried != 2 {
		t.Fatalf("stats %+v: want the second race retried too", s)
	}
}

func TestFaults(t *testing.T) {
	cases := []struct {
		name  string
		serve func(c net.Conn, br *bufio.Reader)
		phase conn.Phase
		cause error
		head  bool // the head arrives; the error comes from the body
	}{
		{"reset before head", func(c net.Conn, br *bufio.Reader) {
			readHead(br)
			c.(*net.TCPConn).SetLinger(0)
		}, conn.PhaseAwaitHead, conn.ErrUnexpectedEOF, false},
		{"reset mid-body", func(c net.Conn, br *bufio.Reader) {
			readHead(br)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
			time.Sleep(20 * time.Millisecond)
			c.(*net.TCPConn).SetLinger(0)
		}, conn.PhaseBody, conn.ErrUnexpectedEOF, true},
		{"close mid-chunked-body", func(c net.Conn, br *bufio.Reader) {
			readHead(br)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
		}, conn.PhaseBody, conn.ErrUnexpectedEOF, true},
		{"stall", func(c net.Conn, br *bufio.Reader) {
			readHead(br)
			io.Copy(io.Discard, br)
		}, conn.PhaseAwaitHead, conn.ErrHeaderTimeout, false},
		{"malformed", func(c net.Conn, br *bufio.Reader) {
			readHead(br)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n")
			io.Copy(io.Discard, br)
		}, conn.PhaseProtocol, parser.ErrTEAndCL, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) { tc.serve(c, br) })
			e := newEngine(t, Config{Shards: 1, ResponseHeaderTimeout: 200 * time.Millisecond})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := e.Do(ctx, get(o.addr(), t))
			if tc.head {
				if err != nil {
					t.Fatal(err)
				}
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			ce := conn.AsError(err)
			if ce == nil || ce.Phase != tc.phase || !errors.Is(err, tc.cause) || ce.Reused {
				t.Fatalf("err %v, want phase %v cause %v", err, tc.phase, tc.cause)
			}
			s := e.Stats()[o.addr()]
			if s.Errors[tc.phase.String()] != 1 || s.Pool.Closed.Owner != 1 || s.Pool.Idle != 0 || s.Retries != 0 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestMalformedConnNeverReused(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := readHead(br); err != nil {
				return
			}
			if i == 0 { // first connection: a valid head with a bad chunk
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	e := newEngine(t, Config{Shards: 1})
	_, _, err := do(t, e, get(o.addr(), t))
	if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhaseProtocol || !errors.Is(err, parser.ErrBadChunkSize) {
		t.Fatalf("err %v", err)
	}
	if st, body, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 || body != "ok" {
		t.Fatalf("%d %q %v", st, body, err)
	}
	if s := e.Stats()[o.addr()]; s.Pool.Dialed != 2 || s.OnReused != 0 || o.accepted() != 2 {
		t.Fatalf("stats %+v accepted %d", s, o.accepted())
	}
}

func TestExpectContinueEarlyFinal(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		readHead(br)
		io.WriteString(c, "HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
		io.Copy(io.Discard, br)
	})
	e := newEngine(t, Config{Shards: 1, ExpectContinueTimeout: 5 * time.Second})
	req := &Request{Upstream: Upstream{Addr: o.addr()},
		Head: head(t, "POST /u HTTP/1.1\r\nHost: o\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n"),
		Body: strings.NewReader(strings.Repeat("x", 1000000)), ContentLength: 1000000}
	start := time.Now()
	st, _, err := do(t, e, req)
	if err != nil || st != 413 || time.Since(start) > 3*time.Second {
		t.Fatalf("%d %v after %v", st, err, time.Since(start))
	}
	if s := e.Stats()[o.addr()]; s.Pool.Closed.Owner != 1 || s.Pool.Idle != 0 {
		t.Fatalf("connection kept: %+v", s.Pool)
	}
}

func TestPinnedSessions(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive(""))
	o2 := newOrigin(t, keepAlive(""))
	e := newEngine(t, Config{Shards: 2})
	ctx := context.Background()
	r := get(o.addr(), t)
	r.PinKey, r.Pin = 7, true
	if st, _, err := do(t, e, r); err != nil || st != 200 {
		t.Fatal(st, err)
	}
	if st, ok := e.shards.PinnedState(ctx, 7); !ok || st != conn.Pinned {
		t.Fatalf("session: %v %v", st, ok)
	}
	// Concurrent requests of the session run one at a time on its
	// connection.
	var wg sync.WaitGroup
	bodies := make(chan string, 6)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := get(o.addr(), t)
			r.PinKey = 7
			_, body, err := do(t, e, r)
			if err != nil {
				body = err.Error()
			}
			bodies <- body
		}()
	}
	wg.Wait()
	close(bodies)
	seen := map[string]bool{}
	for b := range bodies {
		seen[b] = true
	}
	for i := 1; i <= 6; i++ {
		if !seen[fmt.Sprintf("ok %d", i)] {
			t.Fatalf("session bodies %v", seen)
		}
	}
	if s := e.Stats()[o.addr()]; s.Pool.Pinned != 1 || o.accepted() != 1 {
		t.Fatalf("pool %+v accepted %d", s.Pool, o.accepted())
	}
	// Another upstream under the same session: served there, unpinned;
	// the session stays.
	r = get(o2.addr(), t)
	r.PinKey = 7
	if st, _, err := do(t, e, r); err != nil || st != 200 {
		t.Fatalf("another upstream: %d %v", st, err)
	}
	if s := e.Stats()[o2.addr()]; s.Pool.Pinned != 0 || s.Pool.Idle != 1 {
		t.Fatalf("another upstream's pool %+v: want its connection pooled, not pinned", s.Pool)
	}
	if st, ok := e.shards.PinnedState(ctx, 7); !ok || st != conn.Pinned {
		t.Fatalf("session: %v %v", st, ok)
	}
	e.Unpin(7)
	if _, ok := e.shards.PinnedState(ctx, 7); ok {
		t.Fatal("session survived Unpin")
	}
	// A session whose connection the origin closed: its requests fail
	// until Unpin, and are never sent on a new connection.
	r = get(o2.addr(), t)
	r.PinKey, r.Pin = 8, true
	if _, _, err := do(t, e, r); err != nil {
		t.Fatal(err)
	}
	o2.close()
	for i := 0; i < 2; i++ {
		r = get(o2.addr(), t)
		r.PinKey = 8
		if _, _, err := do(t, e, r); !errors.Is(err, ErrPinnedGone) {
			t.Fatalf("err %v", err)
		}
	}
	if st, ok := e.shards.PinnedState(ctx, 8); !ok || st != conn.Closed {
		t.Fatalf("session: %v %v", st, ok)
	}
	e.Unpin(8)
	r = get(o.addr(), t)
	r.PinKey = 8
	if _, body, err := do(t, e, r); err != nil || body != "ok 0" {
		t.Fatalf("after Unpin: %q %v", body, err)
	}
	if s := e.Stats()[o.addr()]; s.Pool.Pinned != 0 {
		t.Fatalf("pool %+v", s.Pool)
	}
	if s := e.Stats()[o2.addr()]; s.Pool.Pinned != 0 || s.Pool.Busy != 0 {
		t.Fatalf("pool %+v", s.Pool)
	}
}

func TestAPIErrors(t *testing.T) {
	checkLeaks(t)
	e := newEngine(t, Config{Shards: 1})
	r := get("127.0.0.1:1", t)
	r.Group = "g"
	if _, err := e.Do(context.Background(), r); !errors.Is(err, ErrNoGroup) {
		t.Fatal(err)
	}
	if _, _, err := do(t, e, get("127.0.0.1:1", t)); conn.AsError(err) == nil || conn.AsError(err).Phase != conn.PhaseDial {
		t.Fatalf("dial error %v", err)
	}
	e.Close()
	if _, err := e.Do(context.Background(), get("127.0.0.1:1", t)); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
}

func TestDrainWaitsForInFlight(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		readHead(br)
		<-release
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		io.Copy(io.Discard, br)
	})
	e := newEngine(t, Config{Shards: 1})
	got := make(chan error, 1)
	go func() {
		_, _, err := do(t, e, get(o.addr(), t))
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	drained := make(chan error, 1)
	go func() { drained <- e.Drain(context.Background()) }()
	select {
	case <-drained:
		t.Fatal("Drain returned with a request in flight")
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := e.Do(context.Background(), get(o.addr(), t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("accepted while draining: %v", err)
	}
	close(release)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
}

func TestCloseAbortsInFlight(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		readHead(br)
		io.Copy(io.Discard, br)
	})
	e := newEngine(t, Config{Shards: 1})
	got := make(chan error, 1)
	go func() {
		_, _, err := do(t, e, get(o.addr(), t))
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	e.Close()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
}

// TestIdleCloseByOrigin: the origin closes a pooled connection while it is
// idle; the next request notices (Alive) and dials anew, with no error.
func TestIdleCloseByOrigin(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		readHead(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		time.Sleep(20 * time.Millisecond)
	})
	e := newEngine(t, Config{Shards: 1})
	if st, _, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 {
		t.Fatal(st, err)
	}
	time.Sleep(100 * time.Millisecond)
	if st, _, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 {
		t.Fatal(st, err)
	}
	s := e.Stats()[o.addr()]
	if s.Pool.Dialed != 2 || s.Pool.Closed.DeadOnCheckout+s.Pool.Closed.PeerClosedIdle != 1 || s.RacesHit != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestWarnsBelowTwoProcs(t *testing.T) {
	checkLeaks(t)
	var buf strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
	prev := runtime.GOMAXPROCS(1)
	e, err := New(Config{Logger: logger})
	runtime.GOMAXPROCS(prev)
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(buf.String(), "GOMAXPROCS") || len(e.shards.Shards()) != 1 {
		t.Fatalf("log %q", buf.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// recSink records the order of sink calls.
type recSink struct {
	mu     sync.Mutex
	events []string
	done   chan error
}

func (s *recSink) add(ev string) {
	s.mu.Lock()
	s.events = append(s.events, ev)
	s.mu.Unlock()
}
func (s *recSink) OnHead(r *parser.Response) error {
	s.add(fmt.Sprint("head ", r.Status()))
	return nil
}
func (s *recSink) OnBody(p []byte) error { s.add("body " + string(p)); return nil }
func (s *recSink) OnDone(err error)      { s.add(fmt.Sprint("done ", err)); s.done <- err }

func TestSendSinkOrderAndHead(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive("Keep-Alive: timeout=30\r\n"))
	e := newEngine(t, Config{Shards: 1})
	s := &recSink{done: make(chan error, 1)}
	if err := e.Send(context.Background(), get(o.addr(), t), s); err != nil {
		t.Fatal(err)
	}
	if err := <-s.done; err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.events, "|"); got != "head 200|body ok 0|done <nil>" {
		t.Fatalf("events %q", got)
	}
	// HEAD: the announced length is reported, no body is read, and the
	// connection stays reusable.
	req := &Request{Upstream: Upstream{Addr: o.addr()}, Head: head(t, "HEAD /r HTTP/1.1\r\nHost: o\r\n\r\n")}
	resp, err := e.Do(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || len(b) != 0 || resp.Status != 200 || resp.Header.Get("Content-Length") != "4" {
		t.Fatalf("HEAD: %d %q %v %v", resp.Status, b, resp.Header, err)
	}
	if st, body, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 || body != "ok 2" {
		t.Fatalf("%d %q %v", st, body, err)
	}
	if s := e.Stats()[o.addr()]; s.Pool.Dialed != 1 {
		t.Fatalf("stats %+v", s.Pool)
	}
}

// TestDialRefused: a refused dial is a PhaseDial error that names the
// cause (syscall.ECONNREFUSED) on netpoll as on Go net; netpoll v0.7.2
// alone reports it as a peer close.
func TestDialRefused(t *testing.T) {
	checkLeaks(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	for _, goNet := range []bool{false, true} {
		e := newEngine(t, Config{Shards: 1, GoNetIO: goNet})
		_, _, err := do(t, e, get(addr, t))
		if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhaseDial || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("GoNetIO %v: %v, want a PhaseDial error with ECONNREFUSED", goNet, err)
		}
		if want := "conn: dial " + addr + ": dial tcp " + addr + ": connect: connection refused"; err.Error() != want {
			t.Errorf("GoNetIO %v: %q, want %q", goNet, err, want)
		}
		if s := e.Stats()[addr]; s.Pool.DialFailed != 1 || s.Errors["dial"] != 1 {
			t.Errorf("GoNetIO %v: stats %+v", goNet, s)
		}
	}
}

// TestDialCutByDeadline: a dial that the caller's deadline cuts short
// (the connect hangs) fails with the context's error, counted as
// canceled: not as the upstream's dial failure, and not against a peer's
// health. On netpoll and Go net alike.
func TestDialCutByDeadline(t *testing.T) {
	checkLeaks(t)
	addr := bench.UnansweredAddr(t)
	const n = 20
	for _, goNet := range []bool{false, true} {
		e := newEngine(t, Config{Shards: 2, GoNetIO: goNet, Groups: map[string]GroupConfig{
			"g": {Peers: []Peer{{Name: "a", Addr: addr}}},
		}})
		for i := 0; i < n; i++ {
			for _, req := range []*Request{get(addr, t), groupGet(t, "g", "/")} {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
				err := e.Exchange(ctx, req, &chanSink{done: make(chan error, 1)})
				cancel()
				if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhaseDial || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("GoNetIO %v, request %d: %v, want a PhaseDial error with the context's deadline", goNet, i, err)
				}
			}
		}
		if s := e.Stats()[addr]; s.Requests != 2*n || s.Canceled != 2*n || len(s.Errors) != 0 {
			t.Errorf("GoNetIO %v: stats %+v, want %d requests canceled, no error", goNet, s, 2*n)
		}
		if ps := e.PeerStats()["g"].Peers[0]; ps.Failures != 0 || ps.Rerouted != 0 {
			t.Errorf("GoNetIO %v: peer %+v, want no failure", goNet, ps)
		}
	}
}

// TestDialCanceled: a caller that gives up while the connect hangs gets
// its Exchange back at once, with the context's error, not at
// ConnectTimeout; on netpoll as on Go net. The request counts as
// canceled, and nothing counts against the upstream: no dial error, no
// failed dial in the pool's counters, no failure of the peer (whose
// request is not moved to another).
func TestDialCanceled(t *testing.T) {
	checkLeaks(t)
	addr, addrB := bench.UnansweredAddr(t), bench.UnansweredAddr(t)
	for _, goNet := range []bool{false, true} {
		// Two peers, so that a failure would move the request to b;
		// round-robin picks a first.
		e := newEngine(t, Config{Shards: 1, GoNetIO: goNet, ConnectTimeout: time.Minute,
			Groups: map[string]GroupConfig{"g": {Peers: []Peer{{Name: "a", Addr: addr}, {Name: "b", Addr: addrB}}}}})
		for i, req := range []*Request{get(addr, t), groupGet(t, "g", "/")} {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- e.Exchange(ctx, req, &chanSink{done: make(chan error, 1)}) }()
			deadline := time.Now().Add(5 * time.Second)
			for e.Stats()[addr].Pool.Connecting != 1 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			cancel()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("GoNetIO %v: Exchange still dialing 10s after its context was canceled", goNet)
			}
			if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhaseDial || !errors.Is(err, context.Canceled) {
				t.Fatalf("GoNetIO %v: %v, want a PhaseDial error with the context's cancellation", goNet, err)
			}
			if s := e.Stats()[addr]; s.Pool.Connecting != 0 || s.Pool.DialFailed != 0 || s.Canceled != uint64(i+1) || len(s.Errors) != 0 {
				t.Errorf("GoNetIO %v, request %d: stats %+v", goNet, i, s)
			}
		}
		for _, ps := range e.PeerStats()["g"].Peers {
			if ps.Failures != 0 || ps.Rerouted != 0 || ps.State != PeerUp {
				t.Errorf("GoNetIO %v: peer %+v, want no failure", goNet, ps)
			}
		}
	}
}

// TestBasicAnswerToMixedChallengeDoesNotPin: a 401 that offers NTLM and
// Basic, answered by the engine with its own Basic credentials, starts no
// connection-based handshake: the connection goes back to the shared
// pool, not into a session for the request's pin key.
func TestBasicAnswerToMixedChallengeDoesNotPin(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			lines, err := readHead(br)
			if err != nil {
				return
			}
			authed := false
			for _, l := range lines {
				authed = authed || strings.HasPrefix(l, "Authorization: Basic ")
			}
			if !authed {
				io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\n\r\n")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	login := &Auth{Origin: Login{Mode: LoginOwn, Credentials: Credentials{User: "u", Password: "p"}}}
	e := newEngine(t, Config{Shards: 1, Auth: func(Upstream) *Auth { return login }})
	for i := 0; i < 2; i++ {
		r := get(o.addr(), t)
		r.PinKey = 5
		if st, body, err := do(t, e, r); err != nil || st != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q %v", i, st, body, err)
		}
		var pool poolset.Stats
		for k, s := range e.Stats() { // keyed "addr cred=…": the login is in the key
			if strings.HasPrefix(k, o.addr()) {
				pool = s.Pool
			}
		}
		if e.Pinned(5) || pool.Pinned != 0 || pool.Idle != 1 {
			t.Fatalf("request %d: pinned %v, pool %+v; want the connection pooled", i, e.Pinned(5), pool)
		}
	}
	if o.accepted() != 1 {
		t.Fatalf("origin accepted %d connections, want 1", o.accepted())
	}
}

// TestNilSinkRefused: a request without a sink is refused with
// ErrBadRequest by Send, Exchange and Upgrade, before anything is sent,
// rather than accepted and then failing on a shard when its outcome is
// reported; the engine goes on serving.
func TestNilSinkRefused(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive(""))
	e := newEngine(t, Config{Shards: 1})
	ctx := context.Background()
	if err := e.Send(ctx, get(o.addr(), t), nil); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("Send: %v", err)
	}
	if err := e.Exchange(ctx, get(o.addr(), t), nil); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("Exchange: %v", err)
	}
	if c, err := e.Upgrade(ctx, get(o.addr(), t), nil); c != nil || !errors.Is(err, ErrBadRequest) {
		t.Fatalf("Upgrade: %v, %v", c, err)
	}
	if n := o.accepted(); n != 0 {
		t.Fatalf("%d connections to the origin", n)
	}
	if st, body, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 || body != "ok 0" {
		t.Fatalf("after: %d %q %v", st, body, err)
	}
}

// TestNilContextRefused: a nil context is ErrBadRequest from every call
// that takes one, not a panic; Send's left the request counted in flight,
// so that Close waited out its abort timeout for a request that never
// existed.
func TestNilContextRefused(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive(""))
	e := newEngine(t, Config{Shards: 1})
	var nilCtx context.Context
	try := func(name string, f func() error) {
		t.Helper()
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("%s panicked: %v", name, r)
			}
		}()
		if err := f(); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: %v", name, err)
		}
	}
	sink := &chanSink{done: make(chan error, 1)}
	try("Send", func() error { return e.Send(nilCtx, get(o.addr(), t), sink) })
	try("Exchange", func() error { return e.Exchange(nilCtx, get(o.addr(), t), sink) })
	try("Upgrade", func() error { _, err := e.Upgrade(nilCtx, get(o.addr(), t), sink); return err })
	try("Do", func() error { _, err := e.Do(nilCtx, get(o.addr(), t)); return err })
	try("Tunnel", func() error { _, _, err := e.Tunnel(nilCtx, TunnelRequest{Target: o.addr()}); return err })
	if n := o.accepted(); n != 0 {
		t.Fatalf("%d connections to the origin", n)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// failingBody returns some bytes, then err.
type failingBody struct {
	sent bool
	err  error
}

func (b *failingBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, "hel"), nil
	}
	return 0, b.err
}

// A request body that fails to read with a reset (the client of a proxy
// gone mid-upload) on a reused connection is the caller's failure: not a
// stale connection, not retried even with GetBody, and the error says so.
func TestRequestBodyResetNotStale(t *testing.T) {
	// 5 bytes go out with the head; 1 MiB is streamed after it.
	for _, size := range []int64{5, 1 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { requestBodyResetNotStale(t, size) })
	}
}

func requestBodyResetNotStale(t *testing.T, size int64) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive(""))
	e := newEngine(t, Config{Shards: 1})
	if st, _, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 {
		t.Fatalf("GET: %d %v", st, err)
	}
	reset := fmt.Errorf("client: %w", syscall.ECONNRESET)
	gets := 0
	req := &Request{Upstream: Upstream{Addr: o.addr()}, Head: head(t, fmt.Sprintf("PUT /p HTTP/1.1\r\nHost: o\r\nContent-Length: %d\r\n\r\n", size)),
		Body: &failingBody{err: reset}, ContentLength: size,
		GetBody: func() (io.Reader, error) { gets++; return &failingBody{err: reset}, nil }}
	_, _, err := do(t, e, req)
	if !errors.Is(err, conn.ErrRequestBody) || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("PUT: %v, want the request body's error", err)
	}
	s := e.Stats()[o.addr()]
	if s.RacesHit != 0 || s.RacesRetried != 0 || s.Retries != 0 || gets != 0 || o.accepted() != 1 {
		t.Fatalf("stats %+v, GetBody called %d times, origin accepted %d: want no race, no retry", s, gets, o.accepted())
	}
}

// TestConnectTimeout: a connect that ConnectTimeout ends (the caller's
// context still live) is the upstream's failure, on netpoll and Go net
// alike: an error wrapping conn.ErrConnectTimeout (a net.Error whose
// Timeout is true), counted as a dial error, not as canceled, and
// against the peer's health.
func TestConnectTimeout(t *testing.T) {
	checkLeaks(t)
	addr := bench.UnansweredAddr(t)
	for _, goNet := range []bool{false, true} {
		e := newEngine(t, Config{Shards: 1, GoNetIO: goNet, ConnectTimeout: 100 * time.Millisecond,
			Groups: map[string]GroupConfig{"g": {Peers: []Peer{{Name: "a", Addr: addr}}}}})
		for _, req := range []*Request{get(addr, t), groupGet(t, "g", "/")} {
			err := e.Exchange(context.Background(), req, &chanSink{done: make(chan error, 1)})
			var ne net.Error
			if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhaseDial || !errors.Is(err, conn.ErrConnectTimeout) ||
				!errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("GoNetIO %v: %v, want a PhaseDial error with ErrConnectTimeout", goNet, err)
			}
		}
		if s := e.Stats()[addr]; s.Requests != 2 || s.Canceled != 0 || s.Errors["dial"] != 2 {
			t.Errorf("GoNetIO %v: stats %+v, want 2 dial errors, none canceled", goNet, s)
		}
		if ps := e.PeerStats()["g"].Peers[0]; ps.Failures != 1 {
			t.Errorf("GoNetIO %v: peer %+v, want one failure", goNet, ps)
		}
	}
}

// closeWaitSink holds the body's delivery until the origin has closed the
// connection, and a moment more for the engine's poller to see the close.
type closeWaitSink struct {
	closed <-chan struct{}
	body   []byte
}

func (s *closeWaitSink) OnHead(*parser.Response) error { return nil }
func (s *closeWaitSink) OnDone(error)                  {}
func (s *closeWaitSink) OnBody(b []byte) error {
	s.body = append(s.body, b...)
	<-s.closed
	time.Sleep(20 * time.Millisecond)
	return nil
}

// TestCloseAfterResponseByOrigin: the origin closes each connection right
// after a response that let it be kept (HTTP/1.1, no "Connection: close"),
// and the engine sees the close by the time the exchange ends. The
// connection is counted as found dead on return, the upstream's doing,
// not as a close of the engine's own (Owner), which stands for failed
// exchanges and the engine's own reasons.
func TestCloseAfterResponseByOrigin(t *testing.T) {
	checkLeaks(t)
	closed := make(chan struct{}, 1)
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		readHead(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		c.Close()
		closed <- struct{}{}
	})
	e := newEngine(t, Config{Shards: 1})
	const n = 3
	for i := 0; i < n; i++ {
		sink := &closeWaitSink{closed: closed}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := e.Exchange(ctx, get(o.addr(), t), sink)
		cancel()
		if err != nil || string(sink.body) != "ok" {
			t.Fatalf("request %d: %q %v", i, sink.body, err)
		}
	}
	s := e.Stats()[o.addr()]
	if c := s.Pool.Closed; s.Pool.Dialed != n || c.DeadOnReturn != n || c.Owner != 0 || s.RacesHit != 0 || s.Pool.Idle != 0 {
		t.Fatalf("dialed %d, idle %d, races hit %d, closes %+v; want %d dialed, each closed as dead on return", s.Pool.Dialed, s.Pool.Idle, s.RacesHit, c, n)
	}
}

// TestPostAfterOriginClosed: the origin closes each connection right after
// a response that let it be kept, and the next request, a POST whose body
// cannot be had again (no GetBody), comes once that close is in the
// engine's kernel (bench.WaitPeerFIN), whether or not the poller has seen
// it yet. The pool's check at checkout (Alive, and for such a
// request conn.Probe, which reads the kernel's view) must not hand it that
// connection: a POST sent on it meets the close and cannot go again. Each
// POST gets its 200 on a new connection, and the origin reads each once.
// (Waiting for less, the FIN could arrive after any check: the race no
// check can close. TestProbeSeesCloseInKernel in conn checks Probe alone.)
func TestPostAfterOriginClosed(t *testing.T) {
	checkLeaks(t)
	closed := make(chan [2]string, 1) // each connection closed: the engine's end, the origin's
	var mu sync.Mutex
	var got []string
	o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		defer func() { closed <- [2]string{c.RemoteAddr().String(), c.LocalAddr().String()} }()
		if _, err := readHead(br); err != nil {
			return
		}
		body := make([]byte, 3)
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		mu.Lock()
		got = append(got, string(body))
		mu.Unlock()
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		c.Close()
	})
	e := newEngine(t, Config{Shards: 1})
	const n = 30
	for i := 0; i < n; i++ {
		body := fmt.Sprintf("p%02d", i)
		req := &Request{Upstream: Upstream{Addr: o.addr()}, Body: strings.NewReader(body), ContentLength: 3,
			Head: head(t, "POST /r HTTP/1.1\r\nHost: o\r\nContent-Length: 3\r\n\r\n")}
		if st, b, err := do(t, e, req); err != nil || st != 200 || b != "ok" {
			t.Fatalf("POST %d: %d %q %v", i, st, b, err)
		}
		ends := <-closed
		bench.WaitPeerFIN(t, ends[0], ends[1], 5*time.Second)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != n {
		t.Fatalf("the origin read %d POSTs, want %d: %q", len(got), n, got)
	}
	s := e.Stats()[o.addr()]
	if s.RacesHit != 0 || s.Pool.Dialed != n {
		t.Fatalf("races hit %d, dialed %d; want none, %d", s.RacesHit, s.Pool.Dialed, n)
	}
}

// TestRetryUnderCapGoesOnNewConnection: a retry after the stale race goes
// on a new connection even when the upstream's cap is full and it waits:
// the connection another request hands it on return is a reused one,
// which may be as stale as the first (an origin that drops the second
// request on each connection). The retry closes it and dials in its
// place, so one retry is enough.
func TestRetryUnderCapGoesOnNewConnection(t *testing.T) {
	checkLeaks(t)
	gotB, drop := make(chan struct{}), make(chan struct{})
	o := newOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		if _, err := readHead(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		if _, err := readHead(br); err != nil {
			return
		}
		if i == 0 {
			close(gotB)
			<-drop
		}
		// The second request on a connection is dropped unanswered.
	})
	e := newEngine(t, Config{MaxConnsPerUpstream: 1, MaxRetries: 1})
	if st, _, err := do(t, e, get(o.addr(), t)); err != nil || st != 200 {
		t.Fatalf("first request: %d %v", st, err)
	}
	type result struct {
		st  int
		err error
	}
	b, d := make(chan result, 1), make(chan result, 1)
	go func() { st, _, err := do(t, e, get(o.addr(), t)); b <- result{st, err} }()
	<-gotB
	go func() { st, _, err := do(t, e, get(o.addr(), t)); d <- result{st, err} }()
	deadline := time.Now().Add(5 * time.Second)
	for e.Stats()[o.addr()].Pool.Waiting != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the second request did not queue")
		}
		time.Sleep(time.Millisecond)
	}
	close(drop)
	if r := <-d; r.err != nil || r.st != 200 {
		t.Fatalf("the queued request: %d %v", r.st, r.err)
	}
	if r := <-b; r.err != nil || r.st != 200 {
		t.Fatalf("the retried request: %d %v, want 200 on a new connection", r.st, r.err)
	}
	if s := e.Stats()[o.addr()]; s.RacesHit != 1 || s.RacesRetried != 1 || o.accepted() != 3 {
		t.Fatalf("races hit %d, retried %d, connections %d; want 1, 1, 3", s.RacesHit, s.RacesRetried, o.accepted())
	}
}
