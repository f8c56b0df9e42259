package poolset_test

import (
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
