package poolset

import "time"

// idleNode is one idle connection. It sits on two intrusive lists at once:
// its key's list, which Get pops from the newest end (LIFO), and the pool's
// list of all idle connections, whose oldest end MaxIdle evicts. Intrusive
// links make every removal O(1) (expiry, eviction and PeerClosed take nodes
// from the middle) and, with nodes recycled through Pool.free, keep Put and
// Get free of allocations once the pool has warmed up.
//
// A node belongs to the pool and every field is guarded by its mu.
type idleNode[C Conn] struct {
	c        C
	ks       *keyState[C]
	info     PutInfo   // as given to the Put that made it idle
	since    time.Time // when it went idle
	expireAt time.Time // when it must be retired; zero: never
	why      reason    // which limit set expireAt

	kprev, knext *idleNode[C] // key's list, oldest first
	gprev, gnext *idleNode[C] // pool's list, oldest first
}

// expiry returns when a connection that went idle at since must be retired,
// and which limit decides it; zero time means never. p.cfg is read-only, so
// no lock is needed.
func (p *Pool[C]) expiry(info PutInfo, since time.Time) (at time.Time, why reason) {
	if p.cfg.IdleTimeout > 0 {
		at, why = since.Add(p.cfg.IdleTimeout), whyIdleTimeout
	}
	if info.KeepAliveHint != 0 {
		if t := since.Add(p.cfg.hintWindow(max(info.KeepAliveHint, 0))); at.IsZero() || t.Before(at) {
			at, why = t, whyHintExpired
		}
	}
	if p.cfg.MaxLifetime > 0 && !info.Born.IsZero() {
		if t := info.Born.Add(p.cfg.MaxLifetime); at.IsZero() || t.Before(at) {
			at, why = t, whyLifetime
		}
	}
	return at, why
}

// expired reports whether n must be retired at now.
func (n *idleNode[C]) expired(now time.Time) bool {
	return !n.expireAt.IsZero() && !now.Before(n.expireAt)
}

// pushIdleLocked makes c the newest idle connection of ks and of the pool.
// p.mu must be held.
func (p *Pool[C]) pushIdleLocked(ks *keyState[C], c C, info PutInfo, since, expireAt time.Time, why reason) {
	n := p.free
	if n != nil {
		p.free = n.gnext
		n.gnext = nil
	} else {
		n = new(idleNode[C])
	}
	n.c, n.ks, n.info, n.since, n.expireAt, n.why = c, ks, info, since, expireAt, why

	n.kprev = ks.idleTail
	if ks.idleTail != nil {
		ks.idleTail.knext = n
	} else {
		ks.idleHead = n
	}
	ks.idleTail = n
	ks.idle++

	n.gprev = p.lruTail
	if p.lruTail != nil {
		p.lruTail.gnext = n
	} else {
		p.lruHead = n
	}
	p.lruTail = n
	p.idle++
}

// removeIdleLocked takes n off both lists and recycles it, returning its
// connection. n must not be used afterwards. p.mu must be held.
func (p *Pool[C]) removeIdleLocked(n *idleNode[C]) C {
	ks := n.ks
	if n.kprev != nil {
		n.kprev.knext = n.knext
	} else {
		ks.idleHead = n.knext
	}
	if n.knext != nil {
		n.knext.kprev = n.kprev
	} else {
		ks.idleTail = n.kprev
	}
	ks.idle--

	if n.gprev != nil {
		n.gprev.gnext = n.gnext
	} else {
		p.lruHead = n.gnext
	}
	if n.gnext != nil {
		n.gnext.gprev = n.gprev
	} else {
		p.lruTail = n.gprev
	}
	p.idle--

	c := n.c
	*n = idleNode[C]{gnext: p.free}
	p.free = n
	return c
}

// discardIdleLocked removes n, counts it closed for why, and queues its
// connection to be closed after the lock is released. The caller must then
// serve and settle n's key. p.mu must be held.
func (p *Pool[C]) discardIdleLocked(n *idleNode[C], why reason, b *batch[C]) {
	n.ks.stats.Closed.add(why)
	b.close(p.removeIdleLocked(n))
}

// checkoutLocked takes the newest usable idle connection of ks, counting it
// busy. On the way it discards expired connections and ones that fail
// Alive, and then grants the capacity they freed to waiters. p.mu must be
// held.
func (p *Pool[C]) checkoutLocked(ks *keyState[C], now time.Time, b *batch[C]) (c C, ok bool) {
	freed := false
	for n := ks.idleTail; n != nil; n = ks.idleTail {
		switch {
		case n.expired(now):
			p.discardIdleLocked(n, n.why, b)
			freed = true
		case !n.c.Alive():
			p.discardIdleLocked(n, whyDeadOnCheckout, b)
			freed = true
		default:
			c = p.removeIdleLocked(n)
			ks.busy++
			ks.stats.Reused++
			if freed {
				p.serveLocked(ks, b) // no-op while the invariant holds: idle and waiters exclude each other
			}
			return c, true
		}
	}
	if freed {
		p.serveLocked(ks, b)
		p.settleLocked(ks, now)
	}
	return c, false
}

// closeIdleLocked discards every idle connection of ks (all keys when ks is
// nil) for why. p.mu must be held.
func (p *Pool[C]) closeIdleLocked(ks *keyState[C], why reason, now time.Time, b *batch[C]) {
	if ks != nil {
		for n := ks.idleHead; n != nil; n = ks.idleHead {
			p.discardIdleLocked(n, why, b)
		}
		p.serveLocked(ks, b)
		p.settleLocked(ks, now)
		return
	}
	for n := p.lruHead; n != nil; n = p.lruHead {
		ks := n.ks
		p.discardIdleLocked(n, why, b)
		p.serveLocked(ks, b)
		p.settleLocked(ks, now)
	}
}
