package poolset_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serverside-go/serverside/poolset"
)

// fakeConn is a connection that only counts: Alive is false once it is
// marked dead or closed, and every Close is counted so tests can insist on
// exactly one.
type fakeConn struct {
	id     int
	dead   atomic.Bool
	closes atomic.Int32
}

func (c *fakeConn) Alive() bool  { return !c.dead.Load() && c.closes.Load() == 0 }
func (c *fakeConn) Close() error { c.closes.Add(1); return nil }

// closed reports whether c was closed exactly once.
func (c *fakeConn) closed() bool { return c.closes.Load() == 1 }

// registry hands out fakeConns and remembers them for the final check.
type registry struct {
	mu    sync.Mutex
	conns []*fakeConn
}

func (r *registry) conn() *fakeConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &fakeConn{id: len(r.conns) + 1}
	r.conns = append(r.conns, c)
	return c
}

// checkAllClosedOnce waits (closes of a racing sweep may still be running
// after Close returns) until every conn was closed, then insists on once.
func (r *registry) checkAllClosedOnce(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range r.conns {
		for c.closes.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if n := c.closes.Load(); n != 1 {
			t.Errorf("conn %d closed %d times, want 1", c.id, n)
		}
	}
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type pool = poolset.Pool[*fakeConn]

var (
	keyA = poolset.Key{Addr: "10.0.0.1:80"}
	keyB = poolset.Key{Addr: "10.0.0.2:443", TLS: "sni=b.example;verify=full"}
)

// newPool returns a pool on a fake clock whose sweeps the test runs by hand.
func newPool(t *testing.T, cfg poolset.Config) (*pool, *fakeClock, *registry) {
	t.Helper()
	clock := newFakeClock()
	cfg.Now = clock.Now
	p := poolset.New[*fakeConn](cfg)
	p.ManualSweepForTesting()
	t.Cleanup(p.Close)
	return p, clock, &registry{}
}

// dial takes a permit for key and turns it into a new busy conn.
func dial(t *testing.T, p *pool, r *registry, key poolset.Key) *fakeConn {
	t.Helper()
	if !p.TryReserve(key) {
		t.Fatalf("TryReserve(%v) = false", key)
	}
	p.Dialed(key)
	return r.conn()
}

// info is a PutInfo for a conn born now that served one request.
func info(clock *fakeClock) poolset.PutInfo {
	return poolset.PutInfo{Requests: 1, Born: clock.Now()}
}

// mustGet takes an idle conn and insists it is want.
func mustGet(t *testing.T, p *pool, key poolset.Key, want *fakeConn) {
	t.Helper()
	c, ok := p.Get(key)
	if !ok {
		t.Fatalf("Get(%v): no conn, want %d", key, want.id)
	}
	if c != want {
		t.Fatalf("Get(%v) = conn %d, want %d", key, c.id, want.id)
	}
}

// mustMiss insists there is no usable idle conn.
func mustMiss(t *testing.T, p *pool, key poolset.Key) {
	t.Helper()
	if c, ok := p.Get(key); ok {
		t.Fatalf("Get(%v) = conn %d, want none", key, c.id)
	}
}

// wantStats compares the gauges of key.
func wantGauges(t *testing.T, p *pool, key poolset.Key, connecting, busy, idle, pinned, waiting int) {
	t.Helper()
	s := p.Stats(key)
	got := [5]int{s.Connecting, s.Busy, s.Idle, s.Pinned, s.Waiting}
	want := [5]int{connecting, busy, idle, pinned, waiting}
	if got != want {
		t.Fatalf("gauges of %v (connecting, busy, idle, pinned, waiting) = %v, want %v", key, got, want)
	}
}

// recorder collects grants delivered to a Wait callback.
type recorder struct {
	ch chan poolset.Grant[*fakeConn]
}

func newRecorder() *recorder { return &recorder{ch: make(chan poolset.Grant[*fakeConn], 1)} }

func (r *recorder) fn(g poolset.Grant[*fakeConn]) {
	select {
	case r.ch <- g:
	default:
		panic("grant delivered twice")
	}
}

// none insists nothing was delivered.
func (r *recorder) none(t *testing.T) {
	t.Helper()
	select {
	case g := <-r.ch:
		t.Fatalf("unexpected grant %+v", g)
	default:
	}
}

// got returns the delivered grant, waiting up to 5s for it.
func (r *recorder) got(t *testing.T) poolset.Grant[*fakeConn] {
	t.Helper()
	select {
	case g := <-r.ch:
		return g
	case <-time.After(5 * time.Second):
		t.Fatal("no grant delivered")
		return poolset.Grant[*fakeConn]{}
	}
}
