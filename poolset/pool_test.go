package poolset_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/serverside-go/serverside/poolset"
)

func TestConfigDefaults(t *testing.T) {
	p := poolset.New[*fakeConn](poolset.Config{})
	defer p.Close()
	c := p.Config()
	if c.IdleTimeout != 60*time.Second || c.MaxIdlePerKey != 32 || c.MaxIdle != 1024 ||
		c.MaxConnsPerKey != 0 || c.MaxWaitersPerKey != 1024 || c.MaxLifetime != 0 ||
		c.MaxRequests != 0 || c.KeepAliveSafety != 0.8 || c.Now == nil {
		t.Fatalf("defaults = %+v", c)
	}
}

func TestKeyStringHidesCred(t *testing.T) {
	k := poolset.Key{Addr: "10.0.0.1:443", TLS: "sni=a", Via: "connect=10.0.0.9:3128", Cred: "secret-scope"}
	s := k.String()
	if strings.Contains(s, "secret-scope") || !strings.Contains(s, "cred=*") || !strings.Contains(s, "via=connect=10.0.0.9:3128") {
		t.Fatalf("String() = %q", s)
	}
}

func TestLIFO(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{})
	c1, c2, c3 := dial(t, p, r, keyA), dial(t, p, r, keyA), dial(t, p, r, keyA)
	for _, c := range []*fakeConn{c1, c2, c3} {
		p.Put(keyA, c, info(clock))
	}
	wantGauges(t, p, keyA, 0, 0, 3, 0, 0)
	mustGet(t, p, keyA, c3)
	mustGet(t, p, keyA, c2)
	mustGet(t, p, keyA, c1)
	mustMiss(t, p, keyA)
	wantGauges(t, p, keyA, 0, 3, 0, 0, 0)
	if s := p.Stats(keyA); s.Reused != 3 || s.Dialed != 3 {
		t.Fatalf("Reused, Dialed = %d, %d, want 3, 3", s.Reused, s.Dialed)
	}
	// Keys never mix.
	mustMiss(t, p, keyB)
}

func TestIdleTimeout(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{IdleTimeout: 10 * time.Second})
	c := dial(t, p, r, keyA)
	p.Put(keyA, c, info(clock))
	clock.Advance(9 * time.Second)
	mustGet(t, p, keyA, c)
	p.Put(keyA, c, info(clock)) // idle time starts again
	clock.Advance(9 * time.Second)
	mustGet(t, p, keyA, c)
	p.Put(keyA, c, info(clock))
	clock.Advance(10 * time.Second)
	mustMiss(t, p, keyA)
	if !c.closed() {
		t.Fatalf("expired conn closed %d times", c.closes.Load())
	}
	if s := p.Stats(keyA); s.Closed.IdleTimeout != 1 || s.Closed.Total() != 1 || s.Conns() != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestHintWindow(t *testing.T) {
	for _, tc := range []struct {
		safety float64
		hint   time.Duration
		want   time.Duration
	}{
		{0, 60 * time.Second, 48 * time.Second},
		{0, 5 * time.Second, 4 * time.Second},
		{0, 2 * time.Second, time.Second},
		{0, time.Second, 500 * time.Millisecond},
		{0, 1500 * time.Millisecond, 750 * time.Millisecond},
		{0, 0, 0},
		{0.5, 10 * time.Second, 5 * time.Second},
		// A safety under one half is the user's to choose: the floor of
		// half the hint stands in for the one-second margin, never for
		// the fraction.
		{0.3, 10 * time.Second, 3 * time.Second},
		{0.3, time.Second, 300 * time.Millisecond},
		{1, 10 * time.Second, 9 * time.Second},
		{7, 10 * time.Second, 8 * time.Second}, // out of range: default
	} {
		got := poolset.HintWindowForTesting(poolset.Config{KeepAliveSafety: tc.safety}, tc.hint)
		if got != tc.want {
			t.Errorf("safety %v, hint %v: window %v, want %v", tc.safety, tc.hint, got, tc.want)
		}
	}
}

func TestKeepAliveHintExpiresBeforeOrigin(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{})
	c := dial(t, p, r, keyA)
	hinted := poolset.PutInfo{KeepAliveHint: 5 * time.Second, Requests: 1, Born: clock.Now()}
	p.Put(keyA, c, hinted)
	clock.Advance(4*time.Second - time.Millisecond)
	mustGet(t, p, keyA, c)
	p.Put(keyA, c, hinted)
	clock.Advance(4 * time.Second) // the origin would close at 5s
	mustMiss(t, p, keyA)
	if !c.closed() {
		t.Fatal("hint-expired conn not closed")
	}
	if s := p.Stats(keyA); s.Closed.HintExpired != 1 || s.Closed.Total() != 1 {
		t.Fatalf("closed = %+v", s.Closed)
	}
}

func TestKeepAliveHintCappedByIdleTimeout(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{IdleTimeout: 2 * time.Second})
	c := dial(t, p, r, keyA)
	p.Put(keyA, c, poolset.PutInfo{KeepAliveHint: time.Minute, Requests: 1})
	clock.Advance(2 * time.Second)
	mustMiss(t, p, keyA)
	if s := p.Stats(keyA); s.Closed.IdleTimeout != 1 {
		t.Fatalf("closed = %+v", s.Closed)
	}
}

func TestKeepAliveHintNoWindow(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	zero := poolset.PutInfo{KeepAliveHint: -1, Requests: 1} // timeout=0

	// Nobody waits: timeout=0 leaves no safe idle time, so it is closed.
	c := dial(t, p, r, keyA)
	if err := p.PutForTesting(keyA, c, zero); !errors.Is(err, poolset.ErrNoIdleWindowForTesting) {
		t.Fatalf("Put after timeout=0 = %v, want no idle window", err)
	}
	if !c.closed() || p.Stats(keyA).Closed.HintExpired != 1 {
		t.Fatal("conn after timeout=0 kept")
	}
	// timeout=1 leaves half a second.
	c = dial(t, p, r, keyA)
	if err := p.PutForTesting(keyA, c, poolset.PutInfo{KeepAliveHint: time.Second, Requests: 1}); err != nil {
		t.Fatalf("Put after timeout=1 = %v, want it kept", err)
	}
	clock.Advance(500*time.Millisecond - time.Millisecond)
	mustGet(t, p, keyA, c)
	if err := p.PutForTesting(keyA, c, poolset.PutInfo{KeepAliveHint: time.Second, Requests: 2}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(500 * time.Millisecond)
	mustMiss(t, p, keyA)
	if !c.closed() || p.Stats(keyA).Closed.HintExpired != 2 {
		t.Fatal("conn idle for timeout=1's half second kept")
	}

	// Somebody waits: the hand-off takes no idle time, so it is allowed.
	c = dial(t, p, r, keyA)
	rec := newRecorder()
	if _, err := p.Wait(keyA, time.Time{}, rec.fn); err != nil {
		t.Fatal(err)
	}
	p.Put(keyA, c, zero)
	if g := rec.got(t); g.Conn != c {
		t.Fatalf("grant = %+v, want conn %d", g, c.id)
	}
}

func TestMaxLifetime(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxLifetime: 30 * time.Second})
	born := clock.Now()
	c := dial(t, p, r, keyA)
	clock.Advance(10 * time.Second)
	p.Put(keyA, c, poolset.PutInfo{Requests: 1, Born: born})
	clock.Advance(19 * time.Second)
	mustGet(t, p, keyA, c)
	p.Put(keyA, c, poolset.PutInfo{Requests: 2, Born: born})
	clock.Advance(time.Second) // 30s after birth, idle for only 1s
	mustMiss(t, p, keyA)
	if !c.closed() || p.Stats(keyA).Closed.Lifetime != 1 {
		t.Fatalf("lifetime: closed %d, stats %+v", c.closes.Load(), p.Stats(keyA).Closed)
	}

	// Returned already too old: refused.
	c = dial(t, p, r, keyA)
	err := p.PutForTesting(keyA, c, poolset.PutInfo{Requests: 1, Born: clock.Now().Add(-time.Minute)})
	if !errors.Is(err, poolset.ErrLifetimeForTesting) || !c.closed() || p.Stats(keyA).Closed.Lifetime != 2 {
		t.Fatalf("old conn: Put = %v, closes %d", err, c.closes.Load())
	}
}

func TestMaxRequests(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxRequests: 3})
	c := dial(t, p, r, keyA)
	p.Put(keyA, c, poolset.PutInfo{Requests: 2, Born: clock.Now()})
	mustGet(t, p, keyA, c)
	if err := p.PutForTesting(keyA, c, poolset.PutInfo{Requests: 3, Born: clock.Now()}); !errors.Is(err, poolset.ErrMaxRequestsForTesting) {
		t.Fatalf("Put = %v", err)
	}
	if !c.closed() || p.Stats(keyA).Closed.MaxRequests != 1 || p.Stats(keyA).Conns() != 0 {
		t.Fatalf("closes %d, stats %+v", c.closes.Load(), p.Stats(keyA))
	}
}

func TestDeadConnSkippedOnGet(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{})
	c1, c2, c3 := dial(t, p, r, keyA), dial(t, p, r, keyA), dial(t, p, r, keyA)
	for _, c := range []*fakeConn{c1, c2, c3} {
		p.Put(keyA, c, info(clock))
	}
	c3.dead.Store(true) // unread bytes or peer FIN on the two warmest
	c2.dead.Store(true)
	mustGet(t, p, keyA, c1)
	if !c2.closed() || !c3.closed() || c1.closes.Load() != 0 {
		t.Fatalf("closes: %d %d %d", c1.closes.Load(), c2.closes.Load(), c3.closes.Load())
	}
	if s := p.Stats(keyA); s.Closed.DeadOnCheckout != 2 || s.Conns() != 1 || s.Busy != 1 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestDeadConnRefusedOnPut(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{})
	c := dial(t, p, r, keyA)
	c.dead.Store(true)
	if err := p.PutForTesting(keyA, c, info(clock)); !errors.Is(err, poolset.ErrConnDeadForTesting) {
		t.Fatalf("Put = %v", err)
	}
	if !c.closed() || p.Stats(keyA).Closed.DeadOnReturn != 1 || p.IdleCountForTesting() != 0 {
		t.Fatal("dead conn pooled")
	}
}

func TestIdleCapPerKey(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxIdlePerKey: 2})
	c1, c2, c3 := dial(t, p, r, keyA), dial(t, p, r, keyA), dial(t, p, r, keyA)
	p.Put(keyA, c1, info(clock))
	p.Put(keyA, c2, info(clock))
	if err := p.PutForTesting(keyA, c3, info(clock)); !errors.Is(err, poolset.ErrTooManyIdleForTesting) {
		t.Fatalf("Put over cap = %v", err)
	}
	if !c3.closed() || p.Stats(keyA).Closed.OverCap != 1 {
		t.Fatal("conn over MaxIdlePerKey kept")
	}
	if got := p.IdleForTesting(keyA); len(got) != 2 || got[0] != c1 || got[1] != c2 {
		t.Fatalf("idle = %v", got)
	}
	// Another key has its own cap.
	p.Put(keyB, dial(t, p, r, keyB), info(clock))
	if n := p.IdleCountForTesting(); n != 3 {
		t.Fatalf("idle = %d, want 3", n)
	}
}

func TestIdleCapGlobalEvictsOldest(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxIdle: 3})
	a1, b1, a2 := dial(t, p, r, keyA), dial(t, p, r, keyB), dial(t, p, r, keyA)
	b2, a3 := dial(t, p, r, keyB), dial(t, p, r, keyA)
	for _, put := range []struct {
		k poolset.Key
		c *fakeConn
	}{{keyA, a1}, {keyB, b1}, {keyA, a2}} {
		clock.Advance(time.Second)
		p.Put(put.k, put.c, info(clock))
	}
	p.Put(keyB, b2, info(clock)) // evicts a1, the oldest of any key
	if !a1.closed() || p.IdleCountForTesting() != 3 {
		t.Fatalf("a1 closes %d, idle %d", a1.closes.Load(), p.IdleCountForTesting())
	}
	p.Put(keyA, a3, info(clock)) // evicts b1
	if !b1.closed() || a2.closes.Load() != 0 || b2.closes.Load() != 0 {
		t.Fatal("wrong conn evicted")
	}
	if a, b := p.Stats(keyA), p.Stats(keyB); a.Closed.OverCap != 1 || b.Closed.OverCap != 1 || a.Idle != 2 || b.Idle != 1 {
		t.Fatalf("A %+v\nB %+v", a, b)
	}
	mustGet(t, p, keyA, a3)
	mustGet(t, p, keyA, a2)
	mustGet(t, p, keyB, b2)
}

func TestIdleDisabled(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxIdlePerKey: -1})
	c := dial(t, p, r, keyA)
	p.Put(keyA, c, info(clock))
	if !c.closed() || p.Stats(keyA).Closed.OverCap != 1 {
		t.Fatal("conn kept with idle pooling disabled")
	}
}

func TestHardCapPermits(t *testing.T) {
	p, _, r := newPool(t, poolset.Config{MaxConnsPerKey: 2})
	if !p.TryReserve(keyA) || !p.TryReserve(keyA) {
		t.Fatal("TryReserve under cap failed")
	}
	if p.TryReserve(keyA) {
		t.Fatal("TryReserve over cap succeeded")
	}
	wantGauges(t, p, keyA, 2, 0, 0, 0, 0)
	p.Dialed(keyA)
	p.DialFailed(keyA)
	wantGauges(t, p, keyA, 0, 1, 0, 0, 0)
	if !p.TryReserve(keyA) {
		t.Fatal("TryReserve after DialFailed failed")
	}
	p.DialFailed(keyA)
	if s := p.Stats(keyA); s.Dialed != 1 || s.DialFailed != 2 {
		t.Fatalf("stats = %+v", s)
	}
	// Other keys are not affected by keyA's cap.
	_ = dial(t, p, r, keyB)
}

func TestPinUnpin(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	c := dial(t, p, r, keyA)
	p.Pin(keyA)
	wantGauges(t, p, keyA, 0, 0, 0, 1, 0)
	if p.TryReserve(keyA) {
		t.Fatal("pinned conn not counted against the cap")
	}
	p.Unpin(keyA)
	p.Put(keyA, c, info(clock))
	wantGauges(t, p, keyA, 0, 0, 1, 0, 0)

	// A pinned conn that ends frees capacity for a waiter.
	mustGet(t, p, keyA, c)
	p.Pin(keyA)
	rec := newRecorder()
	if _, err := p.Wait(keyA, time.Time{}, rec.fn); err != nil {
		t.Fatal(err)
	}
	c.Close()
	p.Closed(keyA, poolset.Pinned)
	if g := rec.got(t); !g.Permit {
		t.Fatalf("grant = %+v, want a permit", g)
	}
	wantGauges(t, p, keyA, 1, 0, 0, 0, 0)
	if p.Stats(keyA).Closed.Owner != 1 {
		t.Fatal("owner close not counted")
	}
	p.DialFailed(keyA)
}

func TestPeerClosed(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{})
	idle, busy := dial(t, p, r, keyA), dial(t, p, r, keyA)
	p.Put(keyA, idle, info(clock))
	if !p.PeerClosed(keyA, idle) {
		t.Fatal("PeerClosed of an idle conn = false")
	}
	if p.PeerClosed(keyA, busy) || p.PeerClosed(keyB, busy) {
		t.Fatal("PeerClosed of a busy conn = true")
	}
	if !idle.closed() || busy.closes.Load() != 0 || p.Stats(keyA).Closed.PeerClosedIdle != 1 {
		t.Fatal("wrong closes")
	}
	wantGauges(t, p, keyA, 0, 1, 0, 0, 0)
}

func TestMisusePanics(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{})
	c := r.conn()
	for name, f := range map[string]func(){
		"Put unknown key": func() { p.Put(keyA, c, info(clock)) },
		"Dialed no permit": func() {
			p.TryReserve(keyB)
			p.Dialed(keyB)
			p.Dialed(keyB)
		},
		"DialFailed no permit": func() { p.DialFailed(keyB) },
		"Closed no pinned":     func() { p.Closed(keyB, poolset.Pinned) },
		"Unpin no pinned":      func() { p.Unpin(keyB) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
	// The pool still works: the lock was released before each panic.
	p.Closed(keyB, poolset.Busy)
	wantGauges(t, p, keyB, 0, 0, 0, 0, 0)
}

func TestKeyStateRetired(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{IdleTimeout: 10 * time.Second})
	c := dial(t, p, r, keyA)
	c.Close()
	p.Closed(keyA, poolset.Busy)
	p.Drain(keyB)
	if n := p.KeyCountForTesting(); n != 2 {
		t.Fatalf("keys = %d", n)
	}
	clock.Advance(9 * time.Second)
	p.SweepForTesting()
	if n := p.KeyCountForTesting(); n != 2 {
		t.Fatalf("key retired early: keys = %d", n)
	}
	clock.Advance(time.Second)
	p.SweepForTesting()
	if n := p.KeyCountForTesting(); n != 1 { // keyB drains: kept
		t.Fatalf("keys = %d, want 1", n)
	}
	if s := p.Stats(keyA); s != (poolset.Stats{}) {
		t.Fatalf("retired key stats = %+v", s)
	}
	// A retired key comes back fresh.
	p.Put(keyA, dial(t, p, r, keyA), info(clock))
	wantGauges(t, p, keyA, 0, 0, 1, 0, 0)
}

// A busy connection closed because its upstream asked for it frees its
// capacity as Closed does, and counts under UpstreamClose, not Owner.
func TestClosedByUpstream(t *testing.T) {
	p, _, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	c := dial(t, p, r, keyA)
	rec := newRecorder()
	if _, err := p.Wait(keyA, time.Time{}, rec.fn); err != nil {
		t.Fatal(err)
	}
	c.Close()
	p.ClosedByUpstream(keyA, poolset.Busy)
	if g := rec.got(t); !g.Permit {
		t.Fatalf("grant = %+v, want a permit", g)
	}
	if cc := p.Stats(keyA).Closed; cc.UpstreamClose != 1 || cc.Owner != 0 || cc.Total() != 1 {
		t.Fatalf("closes %+v, want one UpstreamClose", cc)
	}
	p.DialFailed(keyA)
}

// ClosedDead frees the capacity of a connection taken from the pool and
// found dead by its taker, and counts it dead on checkout.
func TestClosedDead(t *testing.T) {
	p, _, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	c := dial(t, p, r, keyA)
	rec := newRecorder()
	if _, err := p.Wait(keyA, time.Time{}, rec.fn); err != nil {
		t.Fatal(err)
	}
	c.Close()
	p.ClosedDead(keyA, poolset.Busy)
	if g := rec.got(t); !g.Permit {
		t.Fatalf("grant = %+v, want a permit", g)
	}
	if cc := p.Stats(keyA).Closed; cc.DeadOnCheckout != 1 || cc.Owner != 0 || cc.Total() != 1 {
		t.Fatalf("closes %+v, want one DeadOnCheckout", cc)
	}
	p.DialFailed(keyA)
}

// Replace turns a busy connection the caller closed into a dial permit
// for that caller: the capacity does not go to a waiter, and the close
// counts as the owner's.
func TestReplace(t *testing.T) {
	p, _, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	c := dial(t, p, r, keyA)
	rec := newRecorder()
	if _, err := p.Wait(keyA, time.Time{}, rec.fn); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !p.Replace(keyA) {
		t.Fatal("Replace: no permit")
	}
	if s := p.Stats(keyA); s.Busy != 0 || s.Connecting != 1 || s.Waiting != 1 || s.Closed.Owner != 1 {
		t.Fatalf("stats %+v, want the replaced connection's place connecting, the waiter still waiting", s)
	}
	if p.TryReserve(keyA) {
		t.Fatal("TryReserve past the cap after Replace")
	}
	p.DialFailed(keyA) // the replacement's dial: its capacity goes to the waiter
	if g := rec.got(t); !g.Permit {
		t.Fatalf("grant = %+v, want a permit", g)
	}
	p.DialFailed(keyA)
}

// Replace gives no permit once the key drains or the pool is closed,
// which take no new connection: the close is accounted as Closed's.
func TestReplaceDrainingOrClosed(t *testing.T) {
	p, _, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	c := dial(t, p, r, keyA)
	p.Drain(keyA)
	c.Close()
	if p.Replace(keyA) {
		t.Fatal("Replace gave a permit on a draining key")
	}
	if s := p.Stats(keyA); s.Conns() != 0 || s.Connecting != 0 || s.Closed.Owner != 1 {
		t.Fatalf("stats %+v, want the drain complete, the close counted under Owner", s)
	}
	p.Undrain(keyA)
	c = dial(t, p, r, keyA)
	p.Close()
	c.Close()
	if p.Replace(keyA) {
		t.Fatal("Replace gave a permit on a closed pool")
	}
	if s := p.Stats(keyA); s.Conns() != 0 {
		t.Fatalf("stats %+v, want no connection left", s)
	}
}

// Replace gives no permit over a cap lowered since the connection was
// dialed: the new connection would overshoot it, as TryReserve's would.
func TestReplaceOverLoweredCap(t *testing.T) {
	p, _, r := newPool(t, poolset.Config{MaxConnsPerKey: 2})
	c1 := dial(t, p, r, keyA)
	c2 := dial(t, p, r, keyA)
	p.SetLimits(keyA, poolset.KeyLimits{MaxConns: 1})
	c1.Close()
	if p.Replace(keyA) {
		t.Fatal("Replace gave a permit over the cap")
	}
	if s := p.Stats(keyA); s.Conns() != 1 || s.Busy != 1 || s.Connecting != 0 {
		t.Fatalf("stats %+v, want c2 alone, busy", s)
	}
	c2.Close()
	if !p.Replace(keyA) {
		t.Fatal("Replace under the cap: no permit")
	}
	p.DialFailed(keyA)
}

// A dial given up by its request frees its permit for a waiter, as a
// failed one does, without counting as failed.
func TestDialCanceled(t *testing.T) {
	p, _, _ := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	if !p.TryReserve(keyA) {
		t.Fatal("TryReserve = false")
	}
	rec := newRecorder()
	if _, err := p.Wait(keyA, time.Time{}, rec.fn); err != nil {
		t.Fatal(err)
	}
	p.DialCanceled(keyA)
	if g := rec.got(t); !g.Permit {
		t.Fatalf("grant = %+v, want a permit", g)
	}
	if s := p.Stats(keyA); s.DialFailed != 0 || s.Connecting != 1 {
		t.Fatalf("stats %+v, want no failed dial and the waiter's permit out", s)
	}
	p.DialFailed(keyA)
	if s := p.Stats(keyA); s.DialFailed != 1 || s.Connecting != 0 {
		t.Fatalf("stats %+v after DialFailed", s)
	}
}

// TestIdleCountsFromResponseEnd: the idle expiry, the hint's and
// IdleTimeout's, counts from PutInfo.Ended (the response's last byte
// read), not from the Put, which a slow sink delays: the upstream's idle
// timer started at its last byte.
func TestIdleCountsFromResponseEnd(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{IdleTimeout: 10 * time.Second})

	// timeout=5 leaves 4s; the sink took 3s of them.
	c := dial(t, p, r, keyA)
	p.Put(keyA, c, poolset.PutInfo{KeepAliveHint: 5 * time.Second, Requests: 1, Ended: clock.Now().Add(-3 * time.Second)})
	clock.Advance(time.Second - time.Millisecond)
	mustGet(t, p, keyA, c)
	p.Put(keyA, c, poolset.PutInfo{KeepAliveHint: 5 * time.Second, Requests: 2, Ended: clock.Now().Add(-3 * time.Second)})
	clock.Advance(time.Second)
	mustMiss(t, p, keyA)
	if !c.closed() || p.Stats(keyA).Closed.HintExpired != 1 {
		t.Fatalf("conn idle 4s since its response's end: closes %d, stats %+v", c.closes.Load(), p.Stats(keyA).Closed)
	}

	// No hint: IdleTimeout counts from the end too.
	c = dial(t, p, r, keyA)
	p.Put(keyA, c, poolset.PutInfo{Requests: 1, Ended: clock.Now().Add(-9 * time.Second)})
	clock.Advance(time.Second)
	mustMiss(t, p, keyA)
	if !c.closed() || p.Stats(keyA).Closed.IdleTimeout != 1 {
		t.Fatalf("conn idle 10s since its response's end: closes %d, stats %+v", c.closes.Load(), p.Stats(keyA).Closed)
	}

	// Past the window already on return: refused.
	c = dial(t, p, r, keyA)
	err := p.PutForTesting(keyA, c, poolset.PutInfo{KeepAliveHint: 5 * time.Second, Requests: 1, Ended: clock.Now().Add(-4 * time.Second)})
	if !errors.Is(err, poolset.ErrNoIdleWindowForTesting) || !c.closed() || p.Stats(keyA).Closed.HintExpired != 2 {
		t.Fatalf("Put 4s after the end of a timeout=5 response = %v, closes %d", err, c.closes.Load())
	}
	c = dial(t, p, r, keyA)
	err = p.PutForTesting(keyA, c, poolset.PutInfo{Requests: 1, Ended: clock.Now().Add(-10 * time.Second)})
	if !errors.Is(err, poolset.ErrIdleExpiredForTesting) || !c.closed() || p.Stats(keyA).Closed.IdleTimeout != 2 {
		t.Fatalf("Put 10s after the end = %v, closes %d", err, c.closes.Load())
	}

	// An end later than the Put (another clock) counts as the Put.
	c = dial(t, p, r, keyA)
	p.Put(keyA, c, poolset.PutInfo{KeepAliveHint: 5 * time.Second, Requests: 1, Ended: clock.Now().Add(time.Hour)})
	clock.Advance(4*time.Second - time.Millisecond)
	mustGet(t, p, keyA, c)
	p.Put(keyA, c, poolset.PutInfo{KeepAliveHint: 5 * time.Second, Requests: 2})
	clock.Advance(4 * time.Second)
	mustMiss(t, p, keyA)
	if !c.closed() || p.Stats(keyA).Closed.HintExpired != 3 {
		t.Fatalf("stats %+v", p.Stats(keyA).Closed)
	}
}

// TestHandOffRefusedPastWindow: a connection whose hint window ran out
// while its response was delivered (the upstream may be closing it) is not
// handed to a waiter; the waiter gets a permit to dial instead. A window
// that was empty from the start (timeout=0) still allows the hand-off,
// which takes no idle time (TestKeepAliveHintNoWindow).
func TestHandOffRefusedPastWindow(t *testing.T) {
	p, clock, r := newPool(t, poolset.Config{MaxConnsPerKey: 1})
	c := dial(t, p, r, keyA)
	rec := newRecorder()
	if _, err := p.Wait(keyA, time.Time{}, rec.fn); err != nil {
		t.Fatal(err)
	}
	err := p.PutForTesting(keyA, c, poolset.PutInfo{KeepAliveHint: time.Second, Requests: 1, Ended: clock.Now().Add(-500 * time.Millisecond)})
	if !errors.Is(err, poolset.ErrNoIdleWindowForTesting) || !c.closed() {
		t.Fatalf("Put half a second after a timeout=1 response = %v, closes %d; want refused", err, c.closes.Load())
	}
	if g := rec.got(t); g.Conn != nil || !g.Permit || g.Err != nil {
		t.Fatalf("grant = %+v, want a permit to dial", g)
	}
	if s := p.Stats(keyA); s.Closed.HintExpired != 1 || s.Reused != 0 {
		t.Fatalf("stats %+v", s)
	}
}
