package shard

import (
	"bufio"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/parser"
	"github.com/serverside-go/serverside/poolset"
)

// blockSink holds the exchange in OnHead until release is closed.
type blockSink struct {
	entered chan struct{}
	release chan struct{}
}

func (s blockSink) OnHead(*parser.Response) error {
	close(s.entered)
	<-s.release
	return nil
}
func (blockSink) OnBody([]byte) error { return nil }

// TestCanceledWaiterKeepsIdleStartAndHint hands a connection whose last
// response said "Keep-Alive: timeout=5" (an idle window of 4s) to a
// waiting request whose context ends before its shard takes the grant.
// The connection goes back to the pool as it was handed over: idle since
// the response before, under the origin's hint, so that it expires 4s
// after that response, before the origin closes it, and not an
// IdleTimeout after the request gave up.
func TestCanceledWaiterKeepsIdleStartAndHint(t *testing.T) {
	checkLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	pool := poolset.New[*conn.Conn](poolset.Config{MaxConnsPerKey: 1, ProbeInterval: -1, Now: clock})
	defer pool.Close()
	var reg Registry
	set, err := New(Config{Shards: 1}, pool, &reg)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close(5 * time.Second)
	key := poolset.Key{Addr: o.Addr()}

	// A holds the one connection the cap allows; B waits for it.
	releaseA, cancelB, doneB := heldAndWaiting(t, set, pool, o.Addr())
	defer cancelB()
	// The shard is held, so that B's grant waits in its inbox.
	leaveDone := holdShard(t, set)

	// A's response completes: its connection is handed to B at once.
	if err := releaseA(); err != nil {
		t.Fatal(err)
	}
	// B gives up 3s later, before its shard took the connection.
	advance(3 * time.Second)
	cancelB()
	leaveDone()
	if err := <-doneB; err == nil {
		t.Fatal("B succeeded after its context ended")
	}
	if s := pool.Stats(key); s.Idle != 1 || s.Busy != 0 {
		t.Fatalf("pool after B: %+v", s)
	}
	// 5s after A's response the origin closes the connection: it must
	// have expired by then.
	advance(2 * time.Second)
	if c, ok := pool.Get(key); ok {
		c.Close()
		pool.Closed(key, poolset.Busy)
		t.Fatalf("connection idle since A's response, 5s ago, handed out again: %+v", pool.Stats(key))
	}
	if s := pool.Stats(key); s.Closed.HintExpired != 1 {
		t.Fatalf("pool %+v, want the connection closed for its hint", s)
	}
}

// holdShard keeps the one shard of set busy, in the Done of a request
// whose dial failed, until the returned function is called: events posted
// meanwhile wait in its inbox.
func holdShard(t *testing.T, set *Set) (leave func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	in, out := make(chan struct{}), make(chan struct{})
	tX := task(t, context.Background(), dead, nil)
	tX.Done = func(error) { close(in); <-out }
	set.Submit(tX)
	<-in
	return func() { close(out) }
}

// TestCanceledWaiterPermitNotADialFailure ends a waiting request whose
// grant, a dial permit freed by a closed connection, waits in its shard's
// inbox: the permit goes back as free capacity. Nothing was dialed, so no
// dial failure is counted.
func TestCanceledWaiterPermitNotADialFailure(t *testing.T) {
	checkLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for _, close := range []string{"", "Connection: close\r\n"} {
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\n"+close+"Content-Length: 2\r\n\r\nok")
		}
	})
	pool := poolset.New[*conn.Conn](poolset.Config{MaxConnsPerKey: 1})
	defer pool.Close()
	var reg Registry
	set, err := New(Config{Shards: 1}, pool, &reg)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close(5 * time.Second)
	key := poolset.Key{Addr: o.Addr()}

	// A holds the one connection the cap allows; B waits for it.
	releaseA, cancelB, doneB := heldAndWaiting(t, set, pool, o.Addr())
	defer cancelB()
	leave := holdShard(t, set)
	// A's response closes its connection: B is granted a permit, which
	// waits behind the held shard.
	if err := releaseA(); err != nil {
		t.Fatal(err)
	}
	cancelB()
	leave()
	if err := <-doneB; err == nil {
		t.Fatal("B succeeded after its context ended")
	}
	if s := pool.Stats(key); s.Connecting != 0 || s.Dialed != 1 || s.DialFailed != 0 {
		t.Fatalf("pool %+v: a permit nobody used counted as a failed dial", s)
	}
}

// heldAndWaiting sets up A and B under a cap of one connection: A warms
// the connection, then holds it in its sink, on its own goroutine (run
// inline, where the exchange's outcome is settled); B, whose context
// cancelB ends, waits in the pool for it. releaseA lets A's exchange end
// and returns its error; doneB gets B's.
func heldAndWaiting(t *testing.T, set *Set, pool *poolset.Pool[*conn.Conn], addr string) (releaseA func() error, cancelB context.CancelFunc, doneB chan error) {
	t.Helper()
	doneA := make(chan error, 1)
	set.Submit(task(t, context.Background(), addr, doneA))
	if err := <-doneA; err != nil {
		t.Fatal(err)
	}
	sinkA := blockSink{entered: make(chan struct{}), release: make(chan struct{})}
	tA := task(t, context.Background(), addr, doneA)
	tA.Sink = sinkA
	go func() {
		if !set.RunInline(tA) {
			doneA <- io.ErrNoProgress
		}
	}()
	<-sinkA.entered
	ctxB, cancelB := context.WithCancel(context.Background())
	doneB = make(chan error, 1)
	set.Submit(task(t, ctxB, addr, doneB))
	for pool.Stats(poolset.Key{Addr: addr}).Waiting != 1 {
		time.Sleep(time.Millisecond)
	}
	return func() error { close(sinkA.release); return <-doneA }, cancelB, doneB
}
