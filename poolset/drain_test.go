package poolset_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/serverside-go/serverside/poolset"
)

func TestDrain(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 2})
	idle, busy := dial(t, p, r, keyA), dial(t, p, r, keyA)
	p.Put(keyA, idle, info(clock))
	other := dial(t, p, r, keyB)
	p.Put(keyB, other, info(clock))

	p.Drain(keyA)
	if !idle.closed() || busy.closes.Load() != 0 || other.closes.Load() != 0 {
		t.Fatalf("Drain: closes idle %d, busy %d, other %d", idle.closes.Load(), busy.closes.Load(), other.closes.Load())
	}
	if p.TryReserve(keyA) {
		t.Fatal("TryReserve while draining")
	}
	if _, err := p.Wait(keyA, time.Time{}, newRecorder().fn); !errors.Is(err, poolset.ErrDraining) {
		t.Fatalf("Wait while draining = %v", err)
	}
	if _, err := p.Acquire(context.Background(), keyA); !errors.Is(err, poolset.ErrDraining) {
		t.Fatalf("Acquire while draining = %v", err)
	}
	// The busy conn finishes its work, then is closed, not pooled.
	if err := p.PutForTesting(keyA, busy, info(clock)); !errors.Is(err, poolset.ErrDrainingPutForTesting) {
		t.Fatalf("Put while draining = %v", err)
	}
	if !busy.closed() {
		t.Fatal("Put while draining kept the conn")
	}
	if s := p.Stats(keyA); s.Conns() != 0 || s.Closed.Drained != 2 {
		t.Fatalf("stats = %+v", s)
	}
	// keyB is untouched.
	mustGet(t, p, keyB, other)

	p.Undrain(keyA)
	if !p.TryReserve(keyA) {
		t.Fatal("TryReserve after Undrain failed")
	}
	p.DialFailed(keyA)
}

func TestDrainFailsWaiters(t *testing.T) {
	p, _, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	dial(t, p, r, keyA)
	rec1, rec2 := newRecorder(), newRecorder()
	for _, rec := range []*recorder{rec1, rec2} {
		if _, err := p.Wait(keyA, time.Time{}, rec.fn); err != nil {
			t.Fatal(err)
		}
	}
	p.Drain(keyA)
	for _, rec := range []*recorder{rec1, rec2} {
		if g := rec.got(t); !errors.Is(g.Err, poolset.ErrDraining) {
			t.Fatalf("waiter got %+v, want ErrDraining", g)
		}
	}
	wantGauges(t, p, keyA, 0, 1, 0, 0, 0)
	p.Closed(keyA, poolset.Busy)
}

func TestCloseIdle(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{})
	a, b, busy := dial(t, p, r, keyA), dial(t, p, r, keyB), dial(t, p, r, keyB)
	p.Put(keyA, a, info(clock))
	p.Put(keyB, b, info(clock))
	p.CloseIdle()
	if !a.closed() || !b.closed() || busy.closes.Load() != 0 || p.IdleCountForTesting() != 0 {
		t.Fatal("CloseIdle")
	}
	p.Put(keyB, busy, info(clock)) // the pool stays open
	mustGet(t, p, keyB, busy)
}

func TestClose(t *testing.T) {
	clock := newFakeClock()
	p := poolset.New[*fakeConn](poolset.Config{MaxConnsPerKey: 2, Now: clock.Now})
	r := &registry{}
	idle, busy, pinned := dial(t, p, r, keyA), dial(t, p, r, keyA), dial(t, p, r, keyB)
	p.Put(keyA, idle, info(clock))
	p.Pin(keyB)
	if !p.TryReserve(keyB) {
		t.Fatal("TryReserve")
	}
	rec := newRecorder()
	if _, err := p.Wait(keyB, time.Time{}, rec.fn); err != nil {
		t.Fatal(err)
	}

	p.Close()
	p.Close() // idempotent
	if !idle.closed() {
		t.Fatal("idle conn not closed")
	}
	if g := rec.got(t); !errors.Is(g.Err, poolset.ErrPoolClosed) {
		t.Fatalf("waiter got %+v", g)
	}
	if _, err := p.Wait(keyA, time.Time{}, rec.fn); !errors.Is(err, poolset.ErrPoolClosed) {
		t.Fatalf("Wait after Close = %v", err)
	}
	if _, err := p.Acquire(context.Background(), keyA); !errors.Is(err, poolset.ErrPoolClosed) {
		t.Fatalf("Acquire after Close = %v", err)
	}
	if p.TryReserve(keyA) {
		t.Fatal("TryReserve after Close")
	}
	mustMiss(t, p, keyA)

	// Connections still out come back and the accounting returns to zero.
	p.Put(keyA, busy, info(clock))
	pinned.Close()
	p.Closed(keyB, poolset.Pinned)
	p.Dialed(keyB)
	late := r.conn()
	p.Put(keyB, late, info(clock))
	for k, s := range p.Snapshot() {
		if s.Conns() != 0 || s.Waiting != 0 {
			t.Fatalf("%v after Close: %+v", k, s)
		}
	}
	r.checkAllClosedOnce(t)
}
