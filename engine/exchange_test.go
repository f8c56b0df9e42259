package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/parser"
)

// bodySink collects the status and body on the calling goroutine.
type bodySink struct {
	status int
	body   strings.Builder
	done   int
	err    error
}

func (s *bodySink) OnHead(r *parser.Response) error { s.status = r.Status(); return nil }
func (s *bodySink) OnBody(p []byte) error           { s.body.Write(p); return nil }
func (s *bodySink) OnDone(err error)                { s.done++; s.err = err }

func exchange(t *testing.T, e *Engine, req *Request) *bodySink {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := &bodySink{}
	if err := e.Exchange(ctx, req, s); err != s.err || s.done != 1 {
		t.Fatalf("Exchange returned %v, OnDone %d times with %v", err, s.done, s.err)
	}
	return s
}

// The first request dials through a shard; the next ones find an idle
// connection and run inline on the caller's goroutine, reusing it.
func TestExchangeInlineReuse(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive(""))
	e := newEngine(t, Config{Shards: 2})
	for i := 0; i < 5; i++ {
		s := exchange(t, e, get(o.addr(), t))
		if s.err != nil || s.status != 200 || s.body.String() != fmt.Sprintf("ok %d", i) {
			t.Fatalf("request %d: %d %q %v", i, s.status, s.body.String(), s.err)
		}
	}
	st := e.Stats()[o.addr()]
	if st.Pool.Dialed != 1 || st.Pool.Reused != 4 || st.Requests != 5 || o.accepted() != 1 {
		t.Fatalf("stats %+v, origin accepted %d", st, o.accepted())
	}
}

// A stale idle connection found inline is retried through a shard, which
// dials: the caller sees one clean answer.
func TestExchangeInlineStaleRetried(t *testing.T) {
	checkLeaks(t)
	o := staleOrigin(t)
	e := newEngine(t, Config{Shards: 1})
	for i := 0; i < 3; i++ {
		if s := exchange(t, e, get(o.addr(), t)); s.err != nil || s.status != 200 || s.body.String() != "ok" {
			t.Fatalf("request %d: %d %q %v", i, s.status, s.body.String(), s.err)
		}
	}
	st := e.Stats()[o.addr()]
	if st.RacesHit != 2 || st.RacesRetried != 2 || st.Requests != 3 || len(st.Errors) != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Concurrent callers share the pool without exceeding what they need.
func TestExchangeConcurrent(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive(""))
	e := newEngine(t, Config{Shards: 2})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				s := &bodySink{}
				if err := e.Exchange(context.Background(), get(o.addr(), t), s); err != nil || s.status != 200 {
					errs <- fmt.Errorf("%d %v", s.status, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := o.accepted(); n > 8 {
		t.Fatalf("origin accepted %d connections for 8 callers", n)
	}
	if st := e.Stats()[o.addr()]; st.Requests != 400 {
		t.Fatalf("requests %d", st.Requests)
	}
}

// panicSink panics in OnHead: the engine must still report the request
// and free the connection's slot.
type panicSink struct{ done chan error }

func (s *panicSink) OnHead(*parser.Response) error { panic("sink bug") }
func (s *panicSink) OnBody([]byte) error           { return nil }
func (s *panicSink) OnDone(err error)              { s.done <- err }

func TestSinkPanicReportedAndSlotFreed(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive(""))
	e := newEngine(t, Config{Shards: 1, MaxConnsPerUpstream: 1, PendingTimeout: 2 * time.Second})
	s := &panicSink{done: make(chan error, 1)}
	if err := e.Send(context.Background(), get(o.addr(), t), s); err != nil {
		t.Fatal(err)
	}
	if err := <-s.done; !errors.Is(err, conn.ErrSink) {
		t.Fatalf("OnDone got %v, want an ErrSink", err)
	}
	// Inline path too: the second request finds no idle connection (the
	// panicked one was closed) and dials; a third runs inline and panics.
	if b := exchange(t, e, get(o.addr(), t)); b.err != nil || b.status != 200 {
		t.Fatalf("after the panic: %d %v", b.status, b.err)
	}
	if err := e.Exchange(context.Background(), get(o.addr(), t), &panicSink{done: make(chan error, 1)}); !errors.Is(err, conn.ErrSink) {
		t.Fatalf("inline panic: got %v", err)
	}
	if b := exchange(t, e, get(o.addr(), t)); b.err != nil || b.status != 200 {
		t.Fatalf("with MaxConnsPerUpstream 1 after two panics: %d %v", b.status, b.err)
	}
}

// One Edits serves request after request: the engine's framing for a
// body must not stick to it.
func TestEditsReusedAcrossRequests(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive(""))
	e := newEngine(t, Config{Shards: 1, ResponseHeaderTimeout: 2 * time.Second})
	var ed parser.Edits
	ed.Add("X-Via", []byte("test"))
	post := &Request{Upstream: Upstream{Addr: o.addr()}, Head: head(t, "POST /p HTTP/1.1\r\nHost: o\r\n\r\n"),
		Edits: &ed, Body: strings.NewReader("hello"), ContentLength: 5}
	if b := exchange(t, e, post); b.err != nil || b.status != 200 {
		t.Fatalf("POST: %d %v", b.status, b.err)
	}
	g := get(o.addr(), t)
	g.Edits = &ed
	if b := exchange(t, e, g); b.err != nil || b.status != 200 {
		t.Fatalf("GET after POST with the same Edits: %d %v", b.status, b.err)
	}
}

// TestExchangeCanceledBeforeStart: an Exchange whose context has already
// ended sends nothing and leaves the idle connection it would have run
// inline on in the pool, as a request through a shard does; it fails with
// the context's error, counted as canceled.
func TestExchangeCanceledBeforeStart(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive(""))
	e := newEngine(t, Config{Shards: 1})
	if s := exchange(t, e, get(o.addr(), t)); s.err != nil || s.status != 200 {
		t.Fatalf("first: %d %v", s.status, s.err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := &bodySink{}
	err := e.Exchange(ctx, get(o.addr(), t), s)
	if ce := conn.AsError(err); ce == nil || ce.Written || !errors.Is(err, context.Canceled) || s.err != err || s.done != 1 {
		t.Fatalf("Exchange returned %v, OnDone %d times with %v", err, s.done, s.err)
	}
	if s := exchange(t, e, get(o.addr(), t)); s.err != nil || s.status != 200 || s.body.String() != "ok 1" {
		t.Fatalf("after: %d %q %v", s.status, s.body.String(), s.err)
	}
	st := e.Stats()[o.addr()]
	if st.Pool.Dialed != 1 || st.Pool.Closed.Owner != 0 || st.Pool.Idle != 1 || st.Attempts != 2 ||
		st.Requests != 3 || st.Canceled != 1 || len(st.Errors) != 0 || o.accepted() != 1 {
		t.Fatalf("stats %+v, origin accepted %d", st, o.accepted())
	}
}

// An exchange blocked on a pooled connection (the inline path) is aborted
// by its caller's context, and by Close when the caller's context can
// never end.
func TestExchangeInlineAborted(t *testing.T) {
	for _, byClose := range []bool{false, true} {
		t.Run(fmt.Sprint("byClose=", byClose), func(t *testing.T) {
			checkLeaks(t)
			o := newOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
				readHead(br)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				readHead(br)
				io.Copy(io.Discard, br) // the second request is never answered
			})
			e := newEngine(t, Config{Shards: 1})
			if s := exchange(t, e, get(o.addr(), t)); s.err != nil || s.status != 200 {
				t.Fatalf("first: %d %v", s.status, s.err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if byClose {
				ctx = context.Background()
			}
			go func() {
				time.Sleep(50 * time.Millisecond)
				if byClose {
					e.Close()
				} else {
					cancel()
				}
			}()
			s := &bodySink{}
			err := e.Exchange(ctx, get(o.addr(), t), s)
			if !errors.Is(err, context.Canceled) || s.err != err || s.done != 1 {
				t.Fatalf("Exchange returned %v, OnDone %d times with %v", err, s.done, s.err)
			}
			if !byClose {
				if st := e.Stats()[o.addr()]; st.Pool.Reused != 1 || st.Requests != 2 {
					t.Fatalf("stats %+v", st)
				}
			}
		})
	}
}

// TestEditsFramingReplacedByEngine: a caller's Edits that name a framing
// field (a Content-Length copied from somewhere, say) do not reach the
// origin next to the framing the engine adds for the body it sends: the
// head carries one framing, the engine's. Two would make nginx refuse the
// request, or read the next request on the connection as this one's body.
func TestEditsFramingReplacedByEngine(t *testing.T) {
	checkLeaks(t)
	ng := bench.StartNginx(t, bench.NginxOptions{})
	e := newEngine(t, Config{Shards: 1, ResponseHeaderTimeout: 3 * time.Second})
	ed := &parser.Edits{}
	ed.Set("Content-Length", []byte("999"))
	for _, c := range []struct {
		body io.Reader
		cl   int64
		want string
	}{
		{strings.NewReader("abc"), 3, "3\n"},
		{strings.NewReader("abcd"), -1, "4\n"},
		{nil, 0, "0\n"},
	} {
		r := &Request{Upstream: Upstream{Addr: ng.Addr()}, Edits: ed, Body: c.body, ContentLength: c.cl,
			Head: head(t, "POST /echo HTTP/1.1\r\nHost: o\r\nContent-Length: 7\r\n\r\n")}
		st, body, err := do(t, e, r)
		if err != nil || st != 200 || body != c.want {
			t.Errorf("body length %d: %d %q %v, want 200 %q", c.cl, st, body, err, c.want)
		}
	}
}

// sessionSink is a bodySink that counts OnPinnedConn, and when it came
// (before OnHead or after).
type sessionSink struct {
	bodySink
	told, late int
}

func (s *sessionSink) OnPinnedConn() {
	s.told++
	if s.status != 0 {
		s.late++
	}
}

// A SessionSink learns, before OnHead, that its exchange runs on its
// session's pinned connection: not for the exchange that starts the
// session (Request.Pin), not for a request under the session's key that
// goes to another upstream, not for a request without a key. It learns it
// too for a request with a key whose NTLM credentials (a handshake
// message) go on a connection that the exchange pins.
func TestSessionSinkTold(t *testing.T) {
	checkLeaks(t)
	o := newOrigin(t, keepAlive(""))
	o2 := newOrigin(t, keepAlive(""))
	e := newEngine(t, Config{Shards: 2})
	run := func(r *Request) *sessionSink {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s := &sessionSink{}
		if err := e.Exchange(ctx, r, s); err != nil || s.status != 200 {
			t.Fatalf("%d %v", s.status, err)
		}
		return s
	}
	r := get(o.addr(), t)
	r.PinKey, r.Pin = 7, true
	if s := run(r); s.told != 0 {
		t.Fatalf("the exchange that pins: told %d times", s.told)
	}
	r = get(o.addr(), t)
	r.PinKey = 7
	if s := run(r); s.told != 1 || s.late != 0 {
		t.Fatalf("on the pinned connection: told %d times, %d after OnHead; want once, before", s.told, s.late)
	}
	r = get(o2.addr(), t)
	r.PinKey = 7
	if s := run(r); s.told != 0 {
		t.Fatalf("another upstream under the key: told %d times", s.told)
	}
	if s := run(get(o.addr(), t)); s.told != 0 {
		t.Fatalf("no key: told %d times", s.told)
	}
	e.Unpin(7)
	ntlm := func(key uint64) *Request {
		r := get(o2.addr(), t)
		r.Head = head(t, "GET /r HTTP/1.1\r\nHost: o\r\nAuthorization: NTLM TlRMTVNTUAABAAAAB4IAAAAAAAAgAAAAAAAAACAAAAA=\r\n\r\n")
		r.PinKey = key
		return r
	}
	if s := run(ntlm(8)); s.told != 1 || s.late != 0 {
		t.Fatalf("a handshake message on the connection it pins: told %d times, %d after OnHead; want once, before", s.told, s.late)
	}
	if s := run(ntlm(0)); s.told != 0 {
		t.Fatalf("a handshake message without a key: told %d times", s.told)
	}
	e.Unpin(8)
}
