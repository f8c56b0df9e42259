package shard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/poolset"
)

// keepAliveOrigin answers every request with an empty 200, keeping the
// connection open.
func keepAliveOrigin(t *testing.T) *bench.Origin {
	return bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
			if _, err := fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"); err != nil {
				return
			}
		}
	})
}

// TestRunResend: a Run that asks for ErrResend has the task sent again on
// another connection (the first one closed, not pooled), through a shard
// and from the inline path alike; Retried reports it.
func TestRunResend(t *testing.T) {
	checkLeaks(t)
	o := keepAliveOrigin(t)
	pool := poolset.New[*conn.Conn](poolset.Config{})
	var reg Registry
	set, err := New(Config{Shards: 1}, pool, &reg)
	if err != nil {
		t.Fatal(err)
	}
	key := poolset.Key{Addr: o.Addr()}
	for _, inline := range []bool{false, true} {
		done := make(chan error, 1)
		tk := task(t, context.Background(), o.Addr(), done)
		var runs []*conn.Conn
		tk.Run = func(ctx context.Context, c *conn.Conn, tk *Task) (conn.Outcome, error) {
			runs = append(runs, c)
			out, err := c.RoundTrip(ctx, &tk.Exchange, tk.Sink)
			if err == nil && len(runs) == 1 {
				_ = c.Close() // the connection cannot carry the next request
				return out, fmt.Errorf("test: %w", ErrResend)
			}
			return out, err
		}
		if inline {
			if !set.RunInline(tk) {
				t.Fatal("RunInline found no pooled connection")
			}
		} else {
			set.Submit(tk)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("inline %v: %v", inline, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("inline %v: no Done", inline)
		}
		if len(runs) != 2 || runs[0] == runs[1] || !tk.Retried() {
			t.Fatalf("inline %v: %d runs (same connection: %v), retried %v; want two runs on two connections",
				inline, len(runs), len(runs) == 2 && runs[0] == runs[1], tk.Retried())
		}
	}
	if s := pool.Stats(key); s.Idle != 1 || s.Busy != 0 || s.Closed.Owner != 2 {
		t.Fatalf("pool %+v: want the two resent-from connections closed and one idle", s)
	}
	if o.Accepted() != 3 {
		t.Fatalf("origin accepted %d connections, want 3", o.Accepted())
	}
	set.Close(5 * time.Second)
	pool.Close()
}

// TestRunIsolate: a task whose Run sets Isolate without a pin key leaves
// its connection closed, not pooled; with a pin key and Pin it is pinned.
func TestRunIsolate(t *testing.T) {
	checkLeaks(t)
	o := keepAliveOrigin(t)
	pool := poolset.New[*conn.Conn](poolset.Config{})
	var reg Registry
	set, err := New(Config{Shards: 1}, pool, &reg)
	if err != nil {
		t.Fatal(err)
	}
	key := poolset.Key{Addr: o.Addr()}
	run := func(ctx context.Context, c *conn.Conn, tk *Task) (conn.Outcome, error) {
		tk.Isolate = true
		if tk.PinKey != 0 {
			tk.Pin = true
		}
		return c.RoundTrip(ctx, &tk.Exchange, tk.Sink)
	}
	done := make(chan error, 1)
	tk := task(t, context.Background(), o.Addr(), done)
	tk.Run = run
	set.Submit(tk)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := pool.Stats(key); s.Idle != 0 || s.Pinned != 0 || s.Closed.Owner != 1 {
		t.Fatalf("pool %+v: want the connection closed", s)
	}
	tk = task(t, context.Background(), o.Addr(), done)
	tk.Run, tk.PinKey = run, 9
	set.Submit(tk)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st, ok := set.PinnedState(context.Background(), 9); !ok || st != conn.Pinned {
		t.Fatalf("session 9: state %v, known %v; want pinned", st, ok)
	}
	set.Unpin(9)
	set.Close(5 * time.Second)
	pool.Close()
}

// TestPinnedPeerClose: the upstream closes an idle pinned connection; the
// probe ends the session and calls OnPinnedClosed, and the next request of
// the session fails with ErrPinnedGone without a dial.
func TestPinnedPeerClose(t *testing.T) {
	checkLeaks(t)
	hangUp := make(chan struct{})
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		_, _ = fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		<-hangUp // then the connection closes
	})
	pool := poolset.New[*conn.Conn](poolset.Config{})
	var reg Registry
	closed := make(chan uint64, 1)
	set, err := New(Config{Shards: 1, ProbeInterval: 20 * time.Millisecond,
		OnPinnedClosed: func(k uint64) { closed <- k }}, pool, &reg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	tk := task(t, context.Background(), o.Addr(), done)
	tk.PinKey, tk.Pin = 4, true
	set.Submit(tk)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(hangUp)
	select {
	case k := <-closed:
		if k != 4 {
			t.Fatalf("OnPinnedClosed(%d), want 4", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no OnPinnedClosed")
	}
	tk = task(t, context.Background(), o.Addr(), done)
	tk.PinKey = 4
	set.Submit(tk)
	if err := <-done; !errors.Is(err, ErrPinnedGone) {
		t.Fatalf("request after the close: %v, want ErrPinnedGone", err)
	}
	if s := pool.Stats(poolset.Key{Addr: o.Addr()}); s.Pinned != 0 || s.Dialed != 1 || o.Accepted() != 1 {
		t.Fatalf("pool %+v, accepted %d: want one dial, nothing pinned", s, o.Accepted())
	}
	set.Close(5 * time.Second)
	pool.Close()
}

// TestEndSessions: EndSessions ends an idle pinned session at once and a
// busy one when its exchange completes (that exchange still succeeds),
// each reported to OnPinnedClosed; their keys then fail with
// ErrPinnedGone, with no new connection.
func TestEndSessions(t *testing.T) {
	checkLeaks(t)
	held, gate := make(chan struct{}), make(chan struct{})
	o := bench.NewOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		for n := 0; ; n++ {
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
			reply := "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
			if i == 1 && n == 1 {
				close(held)
				<-gate
				// Not reusable either: the session is reported all the same.
				reply = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
			}
			if _, err := fmt.Fprint(c, reply); err != nil {
				return
			}
		}
	})
	pool := poolset.New[*conn.Conn](poolset.Config{})
	var reg Registry
	closed := make(chan uint64, 2)
	// Idle sessions outlive the test unless something ends them.
	set, err := New(Config{Shards: 1, PinnedIdleTimeout: 10 * time.Minute,
		OnPinnedClosed: func(k uint64) { closed <- k }}, pool, &reg)
	if err != nil {
		t.Fatal(err)
	}
	next := func() uint64 {
		select {
		case k := <-closed:
			return k
		case <-time.After(10 * time.Second):
			t.Fatal("no OnPinnedClosed")
			return 0
		}
	}
	key := poolset.Key{Addr: o.Addr()}
	done := make(chan error, 1)
	submit := func(pinKey uint64, pin bool) {
		tk := task(t, context.Background(), o.Addr(), done)
		tk.PinKey, tk.Pin = pinKey, pin
		set.Submit(tk)
	}
	for _, k := range []uint64{4, 5} {
		submit(k, true)
		if err := <-done; err != nil {
			t.Fatalf("pinning session %d: %v", k, err)
		}
	}
	submit(5, false) // held by the origin: session 5 is busy
	<-held
	set.EndSessions(key)
	if k := next(); k != 4 {
		t.Fatalf("OnPinnedClosed(%d) first, want the idle session 4", k)
	}
	select {
	case k := <-closed:
		t.Fatalf("OnPinnedClosed(%d) while its exchange runs", k)
	default:
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatalf("the busy session's exchange: %v, want it to complete", err)
	}
	if k := next(); k != 5 {
		t.Fatalf("OnPinnedClosed(%d), want 5 once its exchange completed", k)
	}
	for _, k := range []uint64{4, 5} {
		submit(k, false)
		if err := <-done; !errors.Is(err, ErrPinnedGone) {
			t.Fatalf("session %d after EndSessions: %v, want ErrPinnedGone", k, err)
		}
	}
	if s := pool.Stats(key); s.Pinned != 0 || s.Conns() != 0 || o.Accepted() != 2 {
		t.Fatalf("pool %+v, accepted %d: want both connections closed, no new one", s, o.Accepted())
	}
	set.Close(5 * time.Second)
	pool.Close()
}

// TestEndSessionsHandshakeInFlight: a drain that comes while the exchange
// that will pin a connection (an NTLM handshake's first leg) is in flight
// leaves no live session on the draining upstream: the exchange succeeds,
// the session it starts ends at once, reported to OnPinnedClosed, and its
// key fails with ErrPinnedGone; nothing stays open.
func TestEndSessionsHandshakeInFlight(t *testing.T) {
	checkLeaks(t)
	held, gate := make(chan struct{}), make(chan struct{})
	o := bench.NewOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		for n := 0; ; n++ {
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
			if n == 0 {
				close(held)
				<-gate
			}
			if _, err := fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"); err != nil {
				return
			}
		}
	})
	pool := poolset.New[*conn.Conn](poolset.Config{})
	var reg Registry
	closed := make(chan uint64, 1)
	set, err := New(Config{Shards: 1, PinnedIdleTimeout: 10 * time.Minute,
		OnPinnedClosed: func(k uint64) { closed <- k }}, pool, &reg)
	if err != nil {
		t.Fatal(err)
	}
	key := poolset.Key{Addr: o.Addr()}
	done := make(chan error, 1)
	tk := task(t, context.Background(), o.Addr(), done)
	tk.PinKey, tk.Pin = 4, true
	set.Submit(tk)
	<-held
	pool.Drain(key)
	set.EndSessions(key)
	close(gate)
	if err := <-done; err != nil {
		t.Fatalf("the handshake's exchange: %v, want it to complete", err)
	}
	select {
	case k := <-closed:
		if k != 4 {
			t.Fatalf("OnPinnedClosed(%d), want 4", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a session started on the draining upstream, and lives on")
	}
	tk = task(t, context.Background(), o.Addr(), done)
	tk.PinKey = 4
	set.Submit(tk)
	if err := <-done; !errors.Is(err, ErrPinnedGone) {
		t.Fatalf("session 4 after the drain: %v, want ErrPinnedGone", err)
	}
	if s := pool.Stats(key); s.Pinned != 0 || s.Conns() != 0 {
		t.Fatalf("pool %+v: want the connection closed", s)
	}
	set.Close(5 * time.Second)
	pool.Close()
}

// goNetDialer dials Go net connections (conn.NewGo), as the engine's
// Config.GoNetIO and TLS dialers do.
type goNetDialer struct{}

func (goNetDialer) Dial(ctx context.Context, addr string) (*conn.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return conn.NewGo(addr, nc), nil
}

// TestPinnedGoNetCloseSeenBeforeUse: the upstream closes a pinned Go net
// connection right after its responses; the session's next request, a
// moment later (within the pool's grace, in which Alive takes a Go net
// connection that carried more than one exchange as alive without a
// look), fails with ErrPinnedGone without being sent: a pinned request
// never goes again, so the socket is looked at first.
func TestPinnedGoNetCloseSeenBeforeUse(t *testing.T) {
	checkLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for i := 0; i < 2; i++ {
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
			_, _ = fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
		// Closed without a word after the second response.
	})
	pool := poolset.New[*conn.Conn](poolset.Config{})
	var reg Registry
	set, err := New(Config{Shards: 1, ProbeInterval: time.Hour}, pool, &reg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	for i := 0; i < 2; i++ {
		tk := task(t, context.Background(), o.Addr(), done)
		tk.PinKey, tk.Pin, tk.Dialer = 4, true, goNetDialer{}
		set.Submit(tk)
		if err := <-done; err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	time.Sleep(10 * time.Millisecond) // the close reaches our kernel
	tk := task(t, context.Background(), o.Addr(), done)
	tk.PinKey, tk.Dialer = 4, goNetDialer{}
	set.Submit(tk)
	err = <-done
	if !errors.Is(err, ErrPinnedGone) {
		t.Fatalf("request after the close: %v, want ErrPinnedGone", err)
	}
	if e := conn.AsError(err); e == nil || e.Written {
		t.Fatalf("request after the close: %#v, want one never sent", e)
	}
	set.Unpin(4)
	set.Close(5 * time.Second)
	pool.Close()
}
