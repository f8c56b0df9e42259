package poolset

// Get takes the most recently returned idle connection of key (LIFO) and
// counts it busy. It never blocks. On the way it skips and closes (after
// releasing the lock) connections that have expired (IdleTimeout, the
// Keep-Alive hint window, MaxLifetime) or fail Alive, counting each reason.
// ok is false when no usable idle connection is left; the caller then
// tries TryReserve, then Wait.
//
// # Race window
//
// Alive is a snapshot: the origin may close the connection just after Get
// returns it (the stale keep-alive race). The hint-based expiry makes this
// rare, and the caller's retry policy must still allow for it on reused
// connections.
func (p *Pool[C]) Get(key Key) (c C, ok bool) {
	var b batch[C]
	now := p.now()
	p.mu.Lock()
	if ks := p.keys[key]; ks != nil && ks.idle > 0 {
		c, ok = p.checkoutLocked(ks, now, &b)
	}
	p.mu.Unlock()
	b.run(p)
	return c, ok
}

// TryReserve takes a dial permit for key, counted as connecting, when the
// key is under MaxConnsPerKey and nobody is queued ahead (so waiters are
// never overtaken). It never blocks. After a true result the caller must
// call exactly one of Dialed or DialFailed. It is false once the pool is
// closed or while the key drains.
//
// TryReserve does not look at idle connections: call Get first.
func (p *Pool[C]) TryReserve(key Key) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	ks := p.keyLocked(key)
	if ks.draining || ks.waiters.prune() > 0 || !p.underCapLocked(ks) {
		return false
	}
	ks.connecting++
	if ks.empty {
		p.unlinkEmptyLocked(ks)
	}
	return true
}

// Dialed turns a dial permit of key into a busy connection: the dial
// succeeded and the caller now holds the connection. The pool does not
// retain the connection; it comes back through Put, Pin or Closed. Dialed
// without a permit out panics.
func (p *Pool[C]) Dialed(key Key) {
	p.mu.Lock()
	ks := p.mustKeyLocked(key, "Dialed")
	if ks.connecting == 0 {
		p.misuseLocked("Dialed", key, "no dial permit out")
	}
	ks.connecting--
	ks.busy++
	ks.stats.Dialed++
	p.mu.Unlock()
}

// DialFailed gives back a dial permit of key after a failed dial. The freed
// capacity goes to the first waiter as a new permit, if there is one.
// DialFailed without a permit out panics.
func (p *Pool[C]) DialFailed(key Key) {
	p.releasePermit(key, "DialFailed", true)
}

// DialCanceled gives back a dial permit of key after a dial that gave no
// connection without the upstream failing: abandoned because its
// request's context ended, or a tunnel the parent refused (its answer to
// CONNECT). As DialFailed, but not counted in Stats.DialFailed.
func (p *Pool[C]) DialCanceled(key Key) {
	p.releasePermit(key, "DialCanceled", false)
}

// releasePermit gives back a dial permit of key: after a failed dial, or
// when a granted permit reaches a waiter that was canceled, or after a
// dial its request abandoned; failed counts it in Stats.DialFailed.
func (p *Pool[C]) releasePermit(key Key, op string, failed bool) {
	var b batch[C]
	now := p.now()
	p.mu.Lock()
	ks := p.mustKeyLocked(key, op)
	if ks.connecting == 0 {
		p.misuseLocked(op, key, "no dial permit out")
	}
	ks.connecting--
	if failed {
		ks.stats.DialFailed++
	}
	p.serveLocked(ks, &b)
	p.settleLocked(ks, now)
	p.mu.Unlock()
	b.run(p)
}
