package shard

import (
	"bufio"
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serverside-go/serverside/bench"
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/poolset"
)

// TestRerouteAfterFailedDial: a dial that fails calls Reroute, and the
// task runs again on the upstream Reroute chose; counters follow the key.
func TestRerouteAfterFailedDial(t *testing.T) {
	checkLeaks(t)
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	pool := poolset.New[*conn.Conn](poolset.Config{})
	defer pool.Close()
	var reg Registry
	set, err := New(Config{Shards: 1}, pool, &reg)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close(5 * time.Second)

	done := make(chan error, 1)
	tk := task(t, context.Background(), dead, done)
	var calls []string
	tk.Reroute = func(t *Task, err error) bool {
		calls = append(calls, t.Key.Addr)
		if t.Key.Addr != dead {
			return false
		}
		t.Key = poolset.Key{Addr: o.Addr()}
		return true
	}
	set.Submit(tk)
	if err := <-done; err != nil {
		t.Fatalf("rerouted request: %v", err)
	}
	if len(calls) != 1 || calls[0] != dead {
		t.Fatalf("Reroute calls %v", calls)
	}
	if c := reg.For(poolset.Key{Addr: dead}); c.Retries.Load() != 1 || c.Requests.Load() != 0 {
		t.Fatalf("dead key: retries %d, requests %d", c.Retries.Load(), c.Requests.Load())
	}
	if c := reg.For(poolset.Key{Addr: o.Addr()}); c.Requests.Load() != 1 || c.Attempts.Load() != 1 {
		t.Fatalf("live key: requests %d, attempts %d", c.Requests.Load(), c.Attempts.Load())
	}
	if s := pool.Stats(poolset.Key{Addr: dead}); s.DialFailed != 1 || s.Conns() != 0 {
		t.Fatalf("dead key pool %+v", s)
	}

	// Reroute declining: the dial error is the outcome.
	tk = task(t, context.Background(), dead, done)
	tk.Reroute = func(*Task, error) bool { return false }
	set.Submit(tk)
	if ce := conn.AsError(<-done); ce == nil || ce.Phase != conn.PhaseDial {
		t.Fatalf("declined reroute: %v", ce)
	}
}

// TestTaskPendingTimeout: a task's own PendingTimeout bounds its wait for
// a connection instead of the Set's.
func TestTaskPendingTimeout(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	o := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		<-release
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	pool := poolset.New[*conn.Conn](poolset.Config{MaxConnsPerKey: 1})
	defer pool.Close()
	var reg Registry
	set, err := New(Config{Shards: 1, PendingTimeout: time.Hour}, pool, &reg)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close(5 * time.Second)
	first, second := make(chan error, 1), make(chan error, 1)
	set.Submit(task(t, context.Background(), o.Addr(), first))
	for pool.Stats(poolset.Key{Addr: o.Addr()}).Busy != 1 {
		time.Sleep(time.Millisecond)
	}
	tk := task(t, context.Background(), o.Addr(), second)
	tk.PendingTimeout = 50 * time.Millisecond
	set.Submit(tk)
	select {
	case err := <-second:
		if ce := conn.AsError(err); ce == nil || ce.Phase != conn.PhasePoolWait {
			t.Fatalf("second: %v, want a pool-wait timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the task's PendingTimeout was not applied")
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
}

// TestRerouteDroppedNewConnection: a GET whose new connection the peer
// closes after reading it is offered to Reroute and served elsewhere;
// with stale-connection retries disabled (MaxRetries negative), the
// request, which was sent whole, is not sent again: it fails with the
// close.
func TestRerouteDroppedNewConnection(t *testing.T) {
	checkLeaks(t)
	good := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := bench.ReadHead(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	var drops atomic.Int32
	dropper := bench.NewOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := bench.ReadHead(br); err != nil {
			return
		}
		drops.Add(1)
		// Closed with the request read: nothing answers it.
	})
	for _, tc := range []struct {
		name       string
		maxRetries int
		rerouted   bool
	}{
		{"retries on", 0, true},
		{"retries off", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := poolset.New[*conn.Conn](poolset.Config{})
			defer pool.Close()
			var reg Registry
			set, err := New(Config{Shards: 1, MaxRetries: tc.maxRetries}, pool, &reg)
			if err != nil {
				t.Fatal(err)
			}
			defer set.Close(5 * time.Second)
			before := drops.Load()
			done := make(chan error, 1)
			tk := task(t, context.Background(), dropper.Addr(), done)
			calls := 0
			tk.Reroute = func(t *Task, err error) bool {
				calls++
				if t.Key.Addr != dropper.Addr() {
					return false
				}
				t.Key = poolset.Key{Addr: good.Addr()}
				return true
			}
			set.Submit(tk)
			err = <-done
			if drops.Load() != before+1 {
				t.Fatalf("the dropping origin read %d requests, want 1", drops.Load()-before)
			}
			if tc.rerouted {
				if err != nil || calls != 1 {
					t.Fatalf("err %v after %d Reroute calls; want the request served elsewhere", err, calls)
				}
				return
			}
			if ce := conn.AsError(err); ce == nil || !ce.Written || ce.Responded || calls != 0 {
				t.Fatalf("err %v after %d Reroute calls; want the drop's error and no resend", err, calls)
			}
		})
	}
}
