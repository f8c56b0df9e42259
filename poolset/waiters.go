package poolset

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Grant is what a waiter receives. Exactly one of these holds:
//
//   - Err != nil: nothing was granted (ErrPoolTimeout, ErrDraining or
//     ErrPoolClosed, wrapped with the key);
//   - Permit: a dial permit, counted connecting; the receiver must call
//     exactly one of Dialed or DialFailed;
//   - otherwise Conn is a connection handed over, counted busy; the
//     receiver returns it with Put, Pin or Closed.
type Grant[C Conn] struct {
	Conn   C
	Permit bool
	Err    error

	info  PutInfo   // for giving Conn back: as its last Put described it
	since time.Time // for giving Conn back: when it went idle
}

// Waiter states. The single compare-and-swap out of waitPending decides
// the race between a delivery and Cancel.
const (
	waitPending uint32 = iota
	waitDelivered
	waitCanceled
)

// Waiter is a pending acquisition: the place where three racing outcomes
// meet, as in net/http's wantConn. The pool may hand it an idle connection
// or a dial permit, its deadline may pass, or its owner may Cancel it.
// Whichever moves state out of waitPending first wins. A grant the pool had
// already taken for a waiter whose Cancel won goes back to the pool, so
// nothing leaks: a connection is Put back (to the next waiter or the idle
// list), a permit is released (to the next waiter, or as free capacity).
type Waiter[C Conn] struct {
	pool  *Pool[C]
	key   Key
	fn    func(Grant[C]) // called once, by deliver
	since time.Time      // when Wait was called
	timer *time.Timer    // deadline; nil without one. Set under pool.mu before Wait returns.
	state atomic.Uint32  // waitPending, then waitDelivered or waitCanceled

	// Guarded by pool.mu.
	ks         *keyState[C] // while queued
	prev, next *Waiter[C]   // wait queue links
	queued     bool         // on ks.waiters

	// Written under pool.mu by the goroutine that dequeued the waiter,
	// then read by that same goroutine in deliver, after the unlock.
	grant     Grant[C]
	readyNext *Waiter[C] // batch list of waiters to deliver to
}

// Wait queues a request for a connection of key. fn is called exactly once,
// never with the pool's lock held, with a Grant: an idle connection handed
// over, a dial permit once capacity frees, or an error (ErrPoolTimeout at
// deadline, ErrDraining, ErrPoolClosed). Waiters of one key are served in
// FIFO order. A zero deadline means the pool never times the waiter out
// (the caller may still Cancel).
//
// If nobody is queued ahead and a connection or capacity is available now,
// Wait grants it at once: fn runs on the calling goroutine before Wait
// returns. Otherwise fn later runs on whichever goroutine freed the
// capacity (a Put, Closed or DialFailed caller) or on a timer goroutine,
// so fn must not block: a shard's fn posts the grant to its inbox.
//
// Wait returns an error, and never calls fn, when the pool is closed, the
// key drains, the deadline has already passed, or MaxWaitersPerKey waiters
// are queued (ErrQueueFull).
//
// # Race window
//
// A caller typically runs Get, then TryReserve, then Wait. Capacity may free
// between those calls; Wait checks again under the same lock in which it
// queues, so a connection returned in between is never stranded idle while
// the caller waits.
func (p *Pool[C]) Wait(key Key, deadline time.Time, fn func(Grant[C])) (*Waiter[C], error) {
	if fn == nil {
		panic("poolset: Wait with a nil callback")
	}
	var b batch[C]
	now := p.now()
	w := &Waiter[C]{pool: p, key: key, fn: fn, since: now}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("%w (wait for %v)", ErrPoolClosed, key)
	}
	ks := p.keyLocked(key)
	if ks.draining {
		p.mu.Unlock()
		return nil, fmt.Errorf("%w (wait for %v)", ErrDraining, key)
	}
	if ks.waiters.prune() == 0 {
		if c, ok := p.checkoutLocked(ks, now, &b); ok {
			w.grant = Grant[C]{Conn: c}
			b.deliver(w)
		} else if p.underCapLocked(ks) {
			ks.connecting++
			w.grant = Grant[C]{Permit: true}
			b.deliver(w)
		}
	}
	var err error
	switch {
	case b.ready != nil: // granted at once
	case !deadline.IsZero() && !now.Before(deadline):
		ks.stats.WaitTimeouts++
		err = fmt.Errorf("%w (wait for %v: deadline already passed)", ErrPoolTimeout, key)
	case ks.waiters.n >= p.maxWaitersLocked(ks): // also when the bound is negative
		ks.stats.QueueFull++
		err = fmt.Errorf("%w (wait for %v: %d waiting)", ErrQueueFull, key, ks.waiters.n)
	default:
		ks.waiters.pushBack(w)
		w.ks = ks
		ks.stats.Waits++
		if !deadline.IsZero() {
			w.timer = time.AfterFunc(deadline.Sub(now), w.expire)
		}
	}
	p.settleLocked(ks, now)
	p.mu.Unlock()
	b.run(p)
	if err != nil {
		return nil, err
	}
	return w, nil
}

// Cancel withdraws the waiter and reports whether it won. True: fn will
// never be called, and anything the pool had already picked for this
// waiter goes back to the pool. False: fn has been called or is being
// called (possibly on another goroutine, possibly still running) with the
// grant, and the owner is responsible for it, as after any delivery.
//
// # Race window
//
// The pool picks a waiter under its lock but delivers after releasing it,
// and Cancel may run in between. The compare-and-swap on state settles it
// (net/http's wantConn.tryDeliver against wantConn.cancel): if Cancel gets
// there first, the delivering goroutine finds the waiter canceled and gives
// the grant back itself; if the delivery gets there first, Cancel returns
// false and the owner must take the grant from fn and use or return it, as
// Acquire does.
func (w *Waiter[C]) Cancel() bool {
	if !w.state.CompareAndSwap(waitPending, waitCanceled) {
		return false
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	p := w.pool
	now := p.now()
	p.mu.Lock()
	ks := p.keys[w.key]
	if w.queued {
		ks = w.ks
		ks.waiters.remove(w)
		p.settleLocked(ks, now)
	}
	if ks != nil {
		ks.stats.WaitCancels++
	}
	p.mu.Unlock()
	return true
}

// expire runs on the deadline timer's goroutine.
func (w *Waiter[C]) expire() {
	p := w.pool
	now := p.now()
	p.mu.Lock()
	if !w.queued {
		p.mu.Unlock() // already dequeued for a delivery, or canceled
		return
	}
	ks := w.ks
	ks.waiters.remove(w)
	p.settleLocked(ks, now)
	if w.state.Load() != waitPending {
		p.mu.Unlock() // Cancel won and will count it; not a timeout
		return
	}
	ks.stats.WaitTimeouts++
	p.mu.Unlock()
	w.grant = Grant[C]{Err: fmt.Errorf("%w (waited %v for %v)", ErrPoolTimeout, now.Sub(w.since), w.key)}
	p.deliver(w)
}

// deliver hands w its grant, or gives the grant back if w was canceled.
// Only the goroutine that dequeued w calls it, after releasing the lock.
func (p *Pool[C]) deliver(w *Waiter[C]) {
	g := w.grant
	w.grant = Grant[C]{}
	if w.timer != nil {
		w.timer.Stop()
	}
	if p.testHookDeliver != nil {
		p.testHookDeliver()
	}
	if w.state.CompareAndSwap(waitPending, waitDelivered) {
		fn := w.fn
		w.fn = nil
		fn(g)
		return
	}
	p.giveBack(w.key, g)
}

// GiveBack returns a grant its receiver will not use after all (its
// request ended before it could take it), as a canceled waiter's goes
// back: a connection as it was handed over, idle since then and under the
// Keep-Alive hint and lifetime of its last Put, so that the time it spent
// on the way does not stretch its idle window; a permit as free capacity,
// not as a failed dial. The connection must not have been used, and must
// be in the state it was handed over in. Both may pass on to the next
// waiter.
func (p *Pool[C]) GiveBack(key Key, g Grant[C]) { p.giveBack(key, g) }

// giveBack returns a grant nobody will use: a connection is Put back, a
// permit released. Both may pass on to the next waiter.
func (p *Pool[C]) giveBack(key Key, g Grant[C]) {
	switch {
	case g.Err != nil:
	case g.Permit:
		p.releasePermit(key, "giveBack", false)
	default:
		p.put(key, g.Conn, g.info, g.since)
	}
}

// waitQueue is the FIFO of one key's waiters, an intrusive doubly linked
// list. net/http's wantConnQueue uses two slices and leaves canceled
// entries in place until they reach the front; linking through the waiters
// instead makes Cancel and deadline removal O(1), so a canceled waiter
// never holds a MaxWaitersPerKey slot, and queueing allocates nothing
// beyond the Waiter itself. Guarded by the pool's mu.
type waitQueue[C Conn] struct {
	head, tail *Waiter[C]
	n          int
}

func (q *waitQueue[C]) pushBack(w *Waiter[C]) {
	w.prev, w.next, w.queued = q.tail, nil, true
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.n++
}

func (q *waitQueue[C]) remove(w *Waiter[C]) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next, w.queued, w.ks = nil, nil, false, nil
	q.n--
}

// popFront dequeues the first waiter still pending. Waiters whose Cancel has
// won but not yet taken the lock are dropped on the way; Cancel counts them
// when it gets the lock.
func (q *waitQueue[C]) popFront() *Waiter[C] {
	for w := q.head; w != nil; w = q.head {
		q.remove(w)
		if w.state.Load() == waitPending {
			return w
		}
	}
	return nil
}

// prune drops canceled waiters from the front and returns how many remain.
func (q *waitQueue[C]) prune() int {
	for w := q.head; w != nil && w.state.Load() != waitPending; w = q.head {
		q.remove(w)
	}
	return q.n
}
