package poolset_test

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serverside-go/serverside/poolset"
)

// TestStress runs goroutines that do random pool operations on a few keys
// with a small MaxConnsPerKey, with the real sweeper and real waiter
// deadlines running against a fake clock the goroutines move. It checks
// that connecting+busy+idle+pinned never exceeds the cap, that no closed
// conn is ever handed out, that every conn is closed exactly once, and that
// all accounting returns to zero.
func TestStress(t *testing.T) {
	const (
		workers  = 8
		ops      = 2000
		maxConns = 3
	)
	keys := []poolset.Key{keyA, keyB, {Addr: "10.0.0.3:80", Via: "fwd", Cred: "u1"}}
	clock := newFakeClock()
	p := poolset.New[*fakeConn](poolset.Config{
		IdleTimeout:      50 * time.Millisecond,
		MaxIdlePerKey:    2,
		MaxIdle:          4,
		MaxConnsPerKey:   maxConns,
		MaxWaitersPerKey: 4,
		MaxRequests:      5,
		MaxLifetime:      time.Second,
		Now:              clock.Now,
	})
	reg := &registry{}
	var violations atomic.Int64
	check := func(where string) {
		for _, k := range keys {
			s := p.Stats(k)
			if s.Conns() > maxConns || s.Waiting > 4 || s.Connecting < 0 || s.Busy < 0 || s.Idle < 0 || s.Pinned < 0 {
				if violations.Add(1) <= 5 {
					t.Errorf("%s: %v: %+v", where, k, s)
				}
			}
		}
	}

	// An observer snapshots the whole pool while the workers run.
	stop := make(chan struct{})
	var observer sync.WaitGroup
	observer.Add(1)
	go func() {
		defer observer.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for k, s := range p.Snapshot() {
				if s.Conns() > maxConns {
					violations.Add(1)
					t.Errorf("snapshot: %v: %+v", k, s)
				}
			}
			time.Sleep(50 * time.Microsecond)
		}
	}()

	var wg sync.WaitGroup
	for id := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &worker{t: t, p: p, reg: reg, clock: clock, keys: keys, rng: rand.New(rand.NewPCG(uint64(id), 7))}
			for i := range ops {
				w.step(id, i)
				check("step")
			}
			w.finish()
			check("finish")
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("stress test did not finish in 60s (deadlock?)")
	}
	close(stop)
	observer.Wait()

	// Everything is back: only idle conns remain, and Close takes them.
	for k, s := range p.Snapshot() {
		if s.Connecting+s.Busy+s.Pinned+s.Waiting != 0 {
			t.Errorf("after workers: %v: %+v", k, s)
		}
	}
	p.Close()
	for k, s := range p.Snapshot() {
		if s.Conns() != 0 || s.Waiting != 0 {
			t.Errorf("after Close: %v: %+v", k, s)
		}
		t.Logf("%v: %+v", k, s) // counters since the key's state was last retired
	}
	reg.checkAllClosedOnce(t)
	t.Logf("%d conns dialed", len(reg.conns))
}

// worker is one goroutine's view: what it holds and what it waits for.
type worker struct {
	t     *testing.T
	p     *pool
	reg   *registry
	clock *fakeClock
	keys  []poolset.Key
	rng   *rand.Rand

	held    []heldConn
	permits []poolset.Key
	waits   []pendingWait
	seen    []heldConn // conns this worker returned, for PeerClosed
}

type heldConn struct {
	key    poolset.Key
	c      *fakeConn
	pinned bool
	reqs   int
	born   time.Time
}

type pendingWait struct {
	key poolset.Key
	w   *poolset.Waiter[*fakeConn]
	ch  chan poolset.Grant[*fakeConn]
}

func (w *worker) step(id, i int) {
	key := w.keys[w.rng.IntN(len(w.keys))]
	switch op := w.rng.IntN(14); op {
	case 0, 1:
		if c, ok := w.p.Get(key); ok {
			w.take(key, c, time.Time{})
		}
	case 2:
		if w.p.TryReserve(key) {
			w.permits = append(w.permits, key)
		}
	case 3: // a dial finishes
		if n := len(w.permits); n > 0 {
			k := w.permits[n-1]
			w.permits = w.permits[:n-1]
			w.resolvePermit(k)
		}
	case 4, 5: // a response finishes: pool it
		if h, ok := w.pick(false); ok {
			var hint time.Duration
			if w.rng.IntN(3) == 0 {
				hint = time.Duration(1+w.rng.IntN(5)) * time.Second
			}
			if w.rng.IntN(20) == 0 {
				h.c.dead.Store(true) // unread bytes at return
			}
			w.p.Put(h.key, h.c, poolset.PutInfo{KeepAliveHint: hint, Requests: h.reqs + 1, Born: h.born})
			w.seen = append(w.seen, h)
		}
	case 6: // the owner closes
		if h, ok := w.pick(w.rng.IntN(2) == 0); ok {
			h.c.Close()
			state := poolset.Busy
			if h.pinned {
				state = poolset.Pinned
			}
			w.p.Closed(h.key, state)
		}
	case 7: // pin or unpin
		if n := len(w.held); n > 0 {
			h := &w.held[w.rng.IntN(n)]
			if h.pinned {
				w.p.Unpin(h.key)
			} else {
				w.p.Pin(h.key)
			}
			h.pinned = !h.pinned
		}
	case 8, 9:
		var deadline time.Time
		if w.rng.IntN(2) == 0 {
			deadline = w.clock.Now().Add(time.Duration(w.rng.IntN(3000)) * time.Microsecond)
		}
		ch := make(chan poolset.Grant[*fakeConn], 1)
		wt, err := w.p.Wait(key, deadline, func(g poolset.Grant[*fakeConn]) { ch <- g })
		switch {
		case err == nil:
			w.waits = append(w.waits, pendingWait{key, wt, ch})
		case errors.Is(err, poolset.ErrQueueFull), errors.Is(err, poolset.ErrPoolTimeout), errors.Is(err, poolset.ErrDraining):
		default:
			w.t.Errorf("Wait: %v", err)
		}
	case 10: // collect what has arrived
		kept := w.waits[:0]
		for _, pw := range w.waits {
			select {
			case g := <-pw.ch:
				w.grant(pw.key, g)
			default:
				kept = append(kept, pw)
			}
		}
		w.waits = kept
	case 11: // a request goes away
		if n := len(w.waits); n > 0 {
			j := w.rng.IntN(n)
			pw := w.waits[j]
			w.waits = append(w.waits[:j], w.waits[j+1:]...)
			w.cancel(pw)
		}
	case 12: // the origin closes a conn this worker returned earlier
		if n := len(w.seen); n > 0 {
			h := w.seen[w.rng.IntN(n)]
			h.c.dead.Store(true)
			w.p.PeerClosed(h.key, h.c)
		}
	case 13:
		switch w.rng.IntN(4) {
		case 0:
			w.clock.Advance(time.Duration(w.rng.IntN(40)) * time.Millisecond)
		case 1:
			w.p.SweepForTesting()
		case 2:
			if id == 0 && i%400 == 0 {
				w.p.Drain(w.keys[2])
			} else if id == 0 && i%400 == 200 {
				w.p.Undrain(w.keys[2])
			}
		case 3:
			if id == 1 && i%500 == 0 {
				w.p.CloseIdle()
			}
		}
	default:
		panic(op)
	}
}

// take records a conn handed to this worker; it must never be closed.
func (w *worker) take(key poolset.Key, c *fakeConn, born time.Time) {
	if n := c.closes.Load(); n != 0 {
		w.t.Errorf("conn %d handed out after %d closes", c.id, n)
	}
	if born.IsZero() {
		born = w.clock.Now().Add(-time.Duration(w.rng.IntN(500)) * time.Millisecond)
	}
	w.held = append(w.held, heldConn{key: key, c: c, reqs: w.rng.IntN(5), born: born})
}

// pick removes and returns a held conn; pinned ones only if allowPinned
// (a pinned conn is never Put).
func (w *worker) pick(allowPinned bool) (heldConn, bool) {
	for range 4 {
		if n := len(w.held); n > 0 {
			j := w.rng.IntN(n)
			if h := w.held[j]; !h.pinned || allowPinned {
				w.held = append(w.held[:j], w.held[j+1:]...)
				return h, true
			}
		}
	}
	return heldConn{}, false
}

func (w *worker) resolvePermit(key poolset.Key) {
	if w.rng.IntN(4) == 0 {
		w.p.DialFailed(key)
		return
	}
	w.p.Dialed(key)
	w.take(key, w.reg.conn(), w.clock.Now())
}

func (w *worker) grant(key poolset.Key, g poolset.Grant[*fakeConn]) {
	switch {
	case g.Err != nil:
		if !errors.Is(g.Err, poolset.ErrPoolTimeout) && !errors.Is(g.Err, poolset.ErrDraining) {
			w.t.Errorf("grant error: %v", g.Err)
		}
	case g.Permit:
		w.permits = append(w.permits, key)
	default:
		w.take(key, g.Conn, time.Time{})
	}
}

// cancel withdraws a wait; if the delivery won, the grant is ours.
func (w *worker) cancel(pw pendingWait) {
	if pw.w.Cancel() {
		return
	}
	select {
	case g := <-pw.ch:
		w.grant(pw.key, g)
	case <-time.After(10 * time.Second):
		w.t.Error("Cancel lost but no grant arrived")
	}
}

// finish gives everything back.
func (w *worker) finish() {
	for _, pw := range w.waits {
		w.cancel(pw)
	}
	w.waits = nil
	for _, k := range w.permits {
		w.resolvePermit(k)
	}
	w.permits = nil
	for _, h := range w.held {
		if h.pinned {
			w.p.Unpin(h.key)
		}
		if w.rng.IntN(2) == 0 {
			w.p.Put(h.key, h.c, poolset.PutInfo{Requests: 1, Born: h.born})
		} else {
			h.c.Close()
			w.p.Closed(h.key, poolset.Busy)
		}
	}
	w.held = nil
}
