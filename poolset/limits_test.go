package poolset_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/serverside-go/serverside/poolset"
)

func TestSetLimitsCapsOneKey(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 5, MaxWaitersPerKey: 5})
	p.SetLimits(keyA, poolset.KeyLimits{MaxConns: 1, MaxWaiters: 1})
	c := dial(t, p, r, keyA)
	if p.TryReserve(keyA) {
		t.Fatal("TryReserve over keyA's own cap of 1 succeeded")
	}
	// keyB keeps the pool-wide cap.
	for i := 0; i < 5; i++ {
		dial(t, p, r, keyB)
	}
	if p.TryReserve(keyB) {
		t.Fatal("TryReserve over the pool-wide cap of 5 succeeded")
	}
	rec := newRecorder()
	if _, err := p.Wait(keyA, time.Time{}, rec.fn); err != nil {
		t.Fatalf("first Wait: %v", err)
	}
	if _, err := p.Wait(keyA, time.Time{}, func(poolset.Grant[*fakeConn]) {}); !errors.Is(err, poolset.ErrQueueFull) {
		t.Fatalf("second Wait over MaxWaiters 1: err = %v, want ErrQueueFull", err)
	}
	// Raising the cap serves the waiter at once.
	p.SetLimits(keyA, poolset.KeyLimits{MaxConns: 2})
	if g := rec.got(t); !g.Permit {
		t.Fatalf("grant after raising the cap = %+v, want a permit", g)
	}
	p.DialFailed(keyA)
	p.Put(keyA, c, info(clock))
}

func TestSetLimitsSurviveRetirement(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{IdleTimeout: time.Second})
	p.SetLimits(keyA, poolset.KeyLimits{MaxConns: 1})
	c := dial(t, p, r, keyA)
	_ = c.Close()
	p.Closed(keyA, poolset.Busy)
	clock.Advance(2 * time.Second)
	p.SweepForTesting()
	if len(p.Snapshot()) != 0 {
		t.Fatalf("key state not retired: %v", p.Snapshot())
	}
	dial(t, p, r, keyA)
	if p.TryReserve(keyA) {
		t.Fatal("cap lost when the key's state was retired")
	}
	p.SetLimits(keyA, poolset.KeyLimits{})
	if !p.TryReserve(keyA) {
		t.Fatal("cap kept after SetLimits with zero limits")
	}
	p.DialFailed(keyA)
}

func TestLoads(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 2})
	keyC := poolset.Key{Addr: "10.0.0.3:80", Via: "fwd"}
	c1 := dial(t, p, r, keyA)
	c2 := dial(t, p, r, keyA)
	if _, err := p.Wait(keyA, time.Time{}, func(poolset.Grant[*fakeConn]) {}); err != nil {
		t.Fatal(err)
	}
	if !p.TryReserve(keyB) {
		t.Fatal("TryReserve keyB")
	}
	keys := []poolset.Key{keyA, keyB, keyC}
	out := []int{-1, -1, -1}
	p.Loads(keys, out)
	if out[0] != 3 || out[1] != 1 || out[2] != 0 {
		t.Fatalf("Loads = %v, want [3 1 0] (2 busy + 1 waiting, 1 connecting, unknown key)", out)
	}
	p.DialFailed(keyB)
	p.Put(keyA, c1, info(clock)) // handed to the waiter: still busy
	p.Put(keyA, c2, info(clock))
	p.Loads(keys, out)
	if out[0] != 1 || out[1] != 0 {
		t.Fatalf("Loads after returns = %v, want [1 0 0]", out)
	}
	if n := testing.AllocsPerRun(100, func() { p.Loads(keys, out) }); n != 0 {
		t.Fatalf("Loads allocates %v times", n)
	}
}

// TestHold: a slot held for a connection of another key counts against
// the key's cap (not in Conns), a Hold at the cap waits in the key's
// queue with its requests and times out as they do, an idle connection
// at the cap is closed to make room, and Unhold serves the next waiter.
func TestHold(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 5, MaxWaitersPerKey: 5})
	p.SetLimits(keyA, poolset.KeyLimits{MaxConns: 2})
	ctx := context.Background()
	if err := p.Hold(ctx, keyA); err != nil {
		t.Fatalf("Hold under the cap: %v", err)
	}
	c := dial(t, p, r, keyA)
	if s := p.Stats(keyA); s.Held != 1 || s.Conns() != 1 || s.Connecting != 0 {
		t.Fatalf("stats %+v: want one held slot and one busy connection", s)
	}
	if p.TryReserve(keyA) {
		t.Fatal("TryReserve at the cap (a held slot, a busy connection) succeeded")
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	err := p.Hold(short, keyA)
	cancel()
	if !errors.Is(err, poolset.ErrPoolTimeout) {
		t.Fatalf("Hold at the cap past its deadline: %v, want ErrPoolTimeout", err)
	}

	// A request waits; the held slot's release serves it.
	rec := newRecorder()
	if _, err := p.Wait(keyA, time.Time{}, rec.fn); err != nil {
		t.Fatal(err)
	}
	rec.none(t)
	p.Unhold(keyA)
	if g := rec.got(t); !g.Permit {
		t.Fatalf("grant after Unhold = %+v, want a permit", g)
	}
	p.Dialed(keyA)
	p.Put(keyA, c, info(clock))
	if s := p.Stats(keyA); s.Held != 0 || s.Idle != 1 || s.Busy != 1 {
		t.Fatalf("stats %+v: want one idle, one busy, none held", s)
	}

	// At the cap with an idle connection: it is closed to make room,
	// and not counted as reused.
	reused := p.Stats(keyA).Reused
	if err := p.Hold(ctx, keyA); err != nil {
		t.Fatalf("Hold at the cap with an idle connection: %v", err)
	}
	if !c.closed() {
		t.Fatal("the idle connection was not closed to make room")
	}
	if s := p.Stats(keyA); s.Held != 1 || s.Idle != 0 || s.Busy != 1 || s.Closed.OverCap != 1 || s.Reused != reused {
		t.Fatalf("stats %+v: want one held, one busy, the idle one closed as OverCap, reused still %d", s, reused)
	}

	// A drain fails a waiting Hold.
	done := make(chan error, 1)
	go func() { done <- p.Hold(ctx, keyA) }()
	for deadline := time.Now().Add(5 * time.Second); p.Stats(keyA).Waiting != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second Hold did not queue")
		}
	}
	p.Drain(keyA)
	if err := <-done; !errors.Is(err, poolset.ErrDraining) {
		t.Fatalf("Hold queued at a drain: %v, want ErrDraining", err)
	}
	p.Unhold(keyA)
	if s := p.Stats(keyA); s.Held != 0 {
		t.Fatalf("stats %+v after Unhold: want none held", s)
	}
}
