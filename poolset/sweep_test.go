package poolset_test

import (
	"testing"
	"time"

	"github.com/serverside-go/serverside/poolset"
)

// TestSweeperRealTimer lets the real timer close expired idle conns, with
// no Get to notice them.
func TestSweeperRealTimer(t *testing.T) {
	p := poolset.New[*fakeConn](poolset.Config{IdleTimeout: 30 * time.Millisecond})
	defer p.Close()
	r := &registry{}
	conns := []*fakeConn{dial(t, p, r, keyA), dial(t, p, r, keyA), dial(t, p, r, keyB)}
	// One busy connection per key keeps the key from being retired (and
	// its stats forgotten) IdleTimeout after its idle ones closed, which
	// a slow test run could otherwise see before it reads the stats.
	busyA, busyB := dial(t, p, r, keyA), dial(t, p, r, keyB)
	p.Put(keyA, conns[0], poolset.PutInfo{Requests: 1})
	p.Put(keyA, conns[1], poolset.PutInfo{Requests: 1})
	p.Put(keyB, conns[2], poolset.PutInfo{Requests: 1})
	deadline := time.Now().Add(5 * time.Second)
	for p.IdleCountForTesting() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := p.IdleCountForTesting(); n != 0 {
		t.Fatalf("sweeper left %d idle conns", n)
	}
	if a, b := p.Stats(keyA), p.Stats(keyB); a.Closed.IdleTimeout != 2 || b.Closed.IdleTimeout != 1 {
		t.Fatalf("A %+v\nB %+v", a.Closed, b.Closed)
	}
	for _, c := range []struct {
		key poolset.Key
		c   *fakeConn
	}{{keyA, busyA}, {keyB, busyB}} {
		_ = c.c.Close()
		p.Closed(c.key, poolset.Busy)
	}
	r.checkAllClosedOnce(t)
}

func TestSweepClosesOnlyWhatIsDue(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{IdleTimeout: time.Minute, MaxLifetime: 10 * time.Minute, ProbeInterval: -1})
	born := clock.Now().Add(-9*time.Minute - 50*time.Second) // lifetime ends in 10s
	plain, hinted, old := dial(t, p, r, keyA), dial(t, p, r, keyA), dial(t, p, r, keyB)
	p.Put(keyA, plain, poolset.PutInfo{Requests: 1, Born: clock.Now()})
	p.Put(keyA, hinted, poolset.PutInfo{Requests: 1, Born: clock.Now(), KeepAliveHint: 5 * time.Second})
	p.Put(keyB, old, poolset.PutInfo{Requests: 1, Born: born})

	// The sweeper is armed for the earliest expiry: the hint window.
	if at, want := p.SweepAtForTesting(), clock.Now().Add(4*time.Second); !at.Equal(want) {
		t.Fatalf("armed for %v, want %v", at, want)
	}

	clock.Advance(4 * time.Second)
	p.SweepForTesting()
	if !hinted.closed() || plain.closes.Load() != 0 || old.closes.Load() != 0 {
		t.Fatal("sweep at 4s")
	}
	if at, want := p.SweepAtForTesting(), clock.Now().Add(6*time.Second); !at.Equal(want) {
		t.Fatalf("re-armed for %v, want %v (lifetime)", at, want)
	}

	clock.Advance(6 * time.Second)
	p.SweepForTesting()
	if !old.closed() || plain.closes.Load() != 0 {
		t.Fatal("sweep at 10s")
	}

	plain.dead.Store(true) // the origin closed it while idle
	p.SweepForTesting()
	if !plain.closed() {
		t.Fatal("dead idle conn survived the sweep")
	}
	a, b := p.Stats(keyA).Closed, p.Stats(keyB).Closed
	if a.HintExpired != 1 || a.PeerClosedIdle != 1 || b.Lifetime != 1 || a.Total()+b.Total() != 3 {
		t.Fatalf("A %+v\nB %+v", a, b)
	}
	if p.IdleCountForTesting() != 0 {
		t.Fatal("idle conns left")
	}
}

func TestSweeperNotArmedWhenNothingIsDue(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{IdleTimeout: -1, ProbeInterval: -1})
	c := dial(t, p, r, keyA)
	p.Put(keyA, c, poolset.PutInfo{Requests: 1})
	if at := p.SweepAtForTesting(); !at.IsZero() {
		t.Fatalf("armed for %v with nothing due", at)
	}
	clock.Advance(24 * time.Hour)
	mustGet(t, p, keyA, c)
}

// TestProbeFindsPeerClosedIdle: while connections are idle the sweeper
// probes them every ProbeInterval, so one the origin closed goes within
// about that long, not at its expiry.
func TestProbeFindsPeerClosedIdle(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{IdleTimeout: time.Minute, ProbeInterval: 2 * time.Second})
	live, gone := dial(t, p, r, keyA), dial(t, p, r, keyA)
	p.Put(keyA, live, poolset.PutInfo{Requests: 1})
	p.Put(keyA, gone, poolset.PutInfo{Requests: 1})
	if at, want := p.SweepAtForTesting(), clock.Now().Add(2*time.Second); !at.Equal(want) {
		t.Fatalf("armed for %v, want the probe at %v", at, want)
	}
	gone.dead.Store(true)
	clock.Advance(2 * time.Second)
	p.SweepForTesting()
	if !gone.closed() || live.closes.Load() != 0 {
		t.Fatal("probe did not close exactly the dead conn")
	}
	if st := p.Stats(keyA); st.Closed.PeerClosedIdle != 1 || st.Idle != 1 {
		t.Fatalf("stats %+v", st)
	}
	if at, want := p.SweepAtForTesting(), clock.Now().Add(2*time.Second); !at.Equal(want) {
		t.Fatalf("re-armed for %v, want %v", at, want)
	}
	mustGet(t, p, keyA, live)
	p.Put(keyA, live, poolset.PutInfo{Requests: 2})
}
