package poolset

import "time"

// Put returns a busy connection of key after a complete response that left
// it reusable. If a waiter is queued, the connection goes straight to the
// first one, still counted busy, without passing through the idle list.
// Otherwise it becomes the newest idle connection, unless it must not be
// kept: the pool is closed or the key draining, it fails Alive, it reached
// MaxRequests or MaxLifetime, its idle expiry (counted from info.Ended) has
// passed or its Keep-Alive hint leaves no idle time, or MaxIdlePerKey idle
// connections are already kept. An expiry that passed since info.Ended
// keeps it from a waiter too. Then Put closes it
// (after releasing the lock) and counts why. At the MaxIdle cap, the oldest
// idle connection of any key is evicted to make room.
//
// Put of a connection that is not counted busy panics. The caller must not
// use c after Put.
//
// # Race window
//
// Alive is probed before the lock is taken, to keep the critical section
// short; a connection that dies in between is caught by the next Get's
// probe, by the sweeper, or by PeerClosed.
func (p *Pool[C]) Put(key Key, c C, info PutInfo) {
	p.put(key, c, info, time.Time{})
}

// put is Put with the time the connection went idle; zero means
// info.Ended, or now when that is zero or later. A grant given back by a
// canceled waiter keeps its original idle start, so that the hint window is
// not stretched.
func (p *Pool[C]) put(key Key, c C, info PutInfo, since time.Time) *putError {
	var b batch[C]
	alive := c.Alive()
	now := p.now()
	if since.IsZero() {
		since = info.Ended
	}
	if since.IsZero() || since.After(now) {
		since = now
	}
	p.mu.Lock()
	ks := p.mustKeyLocked(key, "Put")
	if ks.busy == 0 {
		p.misuseLocked("Put", key, "no busy connection")
	}
	ks.busy--
	err := p.tryPutLocked(ks, c, info, alive, since, now, &b)
	if err != nil {
		ks.stats.Closed.add(err.why)
		p.serveLocked(ks, &b)
	}
	p.settleLocked(ks, now)
	p.mu.Unlock()
	if err != nil {
		c.Close()
	}
	b.run(p)
	return err
}

// tryPutLocked hands c to the first waiter of ks or pushes it idle. c is no
// longer counted busy. It returns why it refused c, in which case c is
// counted nowhere and the caller closes it. p.mu must be held.
//
// The checks on the connection itself (closed, draining, Alive, MaxRequests,
// MaxLifetime) come first and apply to a hand-off too. So does an idle
// expiry that passed between since and now (the response's end and its
// return: a slow sink): the upstream may be closing the connection by now.
// The rest of the idle expiry and the idle caps come after the hand-off: a
// connection handed straight to a waiter goes idle no longer, so even a
// Keep-Alive hint too short for any idle time (timeout=0) does not stop it.
func (p *Pool[C]) tryPutLocked(ks *keyState[C], c C, info PutInfo, alive bool, since, now time.Time, b *batch[C]) *putError {
	switch {
	case p.closed:
		return errPutClosed
	case ks.draining:
		return errPutDraining
	case !alive:
		return errConnDead
	case p.cfg.MaxRequests > 0 && info.Requests >= p.cfg.MaxRequests:
		return errMaxRequests
	case p.cfg.MaxLifetime > 0 && !info.Born.IsZero() && !now.Before(info.Born.Add(p.cfg.MaxLifetime)):
		return errLifetime
	}

	expireAt, why := p.expiry(info, since)
	expired := !expireAt.IsZero() && !now.Before(expireAt)
	if expired && expireAt.After(since) {
		return errExpired[why]
	}
	if w := ks.waiters.popFront(); w != nil {
		ks.busy++
		ks.stats.Reused++
		w.grant = Grant[C]{Conn: c, info: info, since: since}
		b.deliver(w)
		return nil
	}

	switch {
	case expired:
		return errExpired[why]
	case p.cfg.MaxIdle < 0:
		return errIdleDisabled
	case ks.idle >= p.cfg.MaxIdlePerKey: // also when MaxIdlePerKey < 0
		return errTooManyIdle
	}
	if p.idle >= p.cfg.MaxIdle {
		old := p.lruHead.ks
		p.discardIdleLocked(p.lruHead, whyOverCap, b)
		if old != ks {
			p.serveLocked(old, b)
			p.settleLocked(old, now)
		}
	}
	p.pushIdleLocked(ks, c, info, since, expireAt, why)
	p.armLocked(expireAt, now)
	p.armLocked(p.probeAtLocked(now), now)
	return nil
}

// Pin moves one busy connection of key to pinned: its owner keeps it for a
// session (NTLM/Negotiate, a tunnel) and it never enters the idle lists. It
// still counts against MaxConnsPerKey. Pin without a busy connection
// panics.
func (p *Pool[C]) Pin(key Key) {
	p.mu.Lock()
	ks := p.mustKeyLocked(key, "Pin")
	if ks.busy == 0 {
		p.misuseLocked("Pin", key, "no busy connection")
	}
	ks.busy--
	ks.pinned++
	p.mu.Unlock()
}

// Unpin moves one pinned connection of key back to busy, after which it may
// be Put. Unpin without a pinned connection panics.
func (p *Pool[C]) Unpin(key Key) {
	p.mu.Lock()
	ks := p.mustKeyLocked(key, "Unpin")
	if ks.pinned == 0 {
		p.misuseLocked("Unpin", key, "no pinned connection")
	}
	ks.pinned--
	ks.busy++
	p.mu.Unlock()
}

// Closed accounts for a busy or pinned connection of key that the caller
// closed itself (an error, Connection: close, the end of a pinned session).
// The freed capacity goes to the first waiter as a dial permit. Closed does
// not close anything. Closed of a connection not held in state panics.
func (p *Pool[C]) Closed(key Key, state State) { p.ownerClosed(key, state, whyOwner, "Closed") }

// ClosedByUpstream is Closed for a connection closed because the upstream
// asked for it in its response ("Connection: close"): it counts under
// CloseCounts.UpstreamClose instead of Owner.
func (p *Pool[C]) ClosedByUpstream(key Key, state State) {
	p.ownerClosed(key, state, whyUpstreamClose, "ClosedByUpstream")
}

// Replace accounts for a busy connection of key that the caller closed in
// order to dial a new one in its place (a retry after the stale race,
// which must not go on a reused connection, granted one by a Put): its
// capacity passes to the caller as a dial permit, counted connecting,
// not to a waiter, and Replace reports true. The caller must then call
// exactly one of Dialed, DialFailed or DialCanceled. The close counts
// under Owner.
//
// Once the pool is closed, while the key drains, or when the key's cap was
// lowered to what its other connections hold, no new connection may be
// dialed (TryReserve refuses): Replace then accounts the close as Closed
// does and reports false, and the caller has no permit.
func (p *Pool[C]) Replace(key Key) bool {
	var b batch[C]
	now := p.now()
	p.mu.Lock()
	ks := p.mustKeyLocked(key, "Replace")
	if ks.busy == 0 {
		p.misuseLocked("Replace", key, "no busy connection")
	}
	ks.busy--
	ks.stats.Closed.add(whyOwner)
	ok := !p.closed && !ks.draining && p.underCapLocked(ks)
	if ok {
		ks.connecting++
	} else {
		p.serveLocked(ks, &b)
		p.settleLocked(ks, now)
	}
	p.mu.Unlock()
	b.run(p)
	return ok
}

// ClosedDead is Closed for a connection the caller took from the pool (Get,
// or a Grant's connection) and found dead with a check of its own before
// using it: the upstream's close, which Alive had not yet seen. It counts
// under CloseCounts.DeadOnCheckout instead of Owner.
func (p *Pool[C]) ClosedDead(key Key, state State) {
	p.ownerClosed(key, state, whyDeadOnCheckout, "ClosedDead")
}

// ownerClosed accounts for a connection of key in state that the caller closed,
// counting it under why; op names the caller's method in a misuse panic.
func (p *Pool[C]) ownerClosed(key Key, state State, why reason, op string) {
	var b batch[C]
	now := p.now()
	p.mu.Lock()
	ks := p.mustKeyLocked(key, op)
	switch {
	case state == Busy && ks.busy > 0:
		ks.busy--
	case state == Pinned && ks.pinned > 0:
		ks.pinned--
	default:
		p.misuseLocked(op, key, "no "+state.String()+" connection")
	}
	ks.stats.Closed.add(why)
	p.serveLocked(ks, &b)
	p.settleLocked(ks, now)
	p.mu.Unlock()
	b.run(p)
}

// PeerClosed reports that the peer closed c. If c is idle in the pool, it
// is removed, counted PeerClosedIdle and closed (after releasing the lock),
// and PeerClosed returns true. Otherwise c is busy or pinned somewhere, or
// already gone, and PeerClosed returns false: its holder will notice and
// report it with Closed. A connection layer with a close notification
// calls this from it, so that idle connections the origin drops leave the
// pool at once instead of at the next Get or sweep. (The engine's conn
// does not: its idle connections that the origin drops are found by the
// sweeper's probe, every ProbeInterval, or by the next Get's.)
//
// # Race window
//
// The notification can race with a Get that takes c: either PeerClosed
// wins and the Get never sees c, or the Get wins (Alive may still have been
// true a moment before) and PeerClosed returns false, leaving the failure
// to the request now using c, as for any stale connection.
func (p *Pool[C]) PeerClosed(key Key, c C) bool {
	var b batch[C]
	now := p.now()
	p.mu.Lock()
	ks := p.keys[key]
	if ks == nil {
		p.mu.Unlock()
		return false
	}
	found := false
	for n := ks.idleTail; n != nil; n = n.kprev {
		if n.c == c {
			p.discardIdleLocked(n, whyPeerClosedIdle, &b)
			p.serveLocked(ks, &b)
			p.settleLocked(ks, now)
			found = true
			break
		}
	}
	p.mu.Unlock()
	b.run(p)
	return found
}
