package poolset

import "time"

// The sweeper is one time.Timer for the whole pool, armed at the earliest
// moment something is due: an idle connection's expiry (IdleTimeout, the
// Keep-Alive hint window or MaxLifetime), the retirement of an empty key's
// state, or, while anything is idle, the next liveness probe
// (ProbeInterval). When it fires, one sweep walks every idle connection once,
// closes the expired ones and those that fail Alive, retires the keys that
// have stayed empty, and re-arms the timer for the next due moment.
//
// Why a timer armed at the earliest expiry rather than a ticker at
// IdleTimeout/4: hint windows are short (timeout=5 gives 4s) and differ per
// origin, and a ticker would keep such connections open up to 15s past
// their window with the default IdleTimeout, which is exactly the time in
// which the origin closes them first. A ticker also wakes the process
// forever, even with nothing idle; the timer is not armed when there is
// nothing to do. Get checks expiry itself, so the sweeper's precision only
// decides how long dead weight holds file descriptors, never whether an
// expired connection is reused.
//
// Each sweep costs O(idle connections), so sweeps are spaced at least
// sweepGap apart (IdleTimeout/4, at most 1s): a burst of connections
// expiring at distinct instants costs one walk per gap, not one per
// connection. Arming costs one comparison on the hot path; the timer is
// Reset only when a connection expires earlier than the armed time, which
// in LIFO steady state is rare.
//
// # Race window
//
// A sweep that has fired but not yet taken the lock may meet a Reset from a
// Put that wanted an earlier time; the timer then fires once more than
// needed. A sweep is idempotent (it only acts on what is due at its own
// now), so the extra run finds little or nothing to do and re-arms.

// armLocked makes sure the sweeper fires no later than at (a zero at means
// nothing is due), but not before lastSweep+sweepGap. p.mu must be held.
func (p *Pool[C]) armLocked(at, now time.Time) {
	if p.closed || at.IsZero() {
		return
	}
	if floor := p.lastSweep.Add(p.sweepGap); at.Before(floor) {
		at = floor
	}
	if !p.sweepAt.IsZero() && !at.Before(p.sweepAt) {
		return
	}
	p.sweepAt = at
	if p.testNoTimer {
		return
	}
	d := at.Sub(now)
	if p.sweeper == nil {
		p.sweeper = time.AfterFunc(d, p.sweepFn)
		return
	}
	p.sweeper.Reset(d)
}

// sweep runs on the sweeper's goroutine (tests call it directly).
func (p *Pool[C]) sweep() {
	var b batch[C]
	now := p.now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.sweepAt = time.Time{}
	p.lastSweep = now
	next := p.sweepIdleLocked(now, &b)
	if t := p.retireKeysLocked(now); !t.IsZero() && (next.IsZero() || t.Before(next)) {
		next = t
	}
	if t := p.probeAtLocked(now); !t.IsZero() && (next.IsZero() || t.Before(next)) {
		next = t
	}
	p.armLocked(next, now)
	p.mu.Unlock()
	b.run(p)
}

// sweepIdleLocked discards every idle connection that has expired or fails
// Alive, and returns the earliest expiry among those left (zero: none).
// p.mu must be held.
func (p *Pool[C]) sweepIdleLocked(now time.Time, b *batch[C]) (next time.Time) {
	for n := p.lruHead; n != nil; {
		nn := n.gnext
		ks := n.ks
		switch {
		case n.expired(now):
			p.discardIdleLocked(n, n.why, b)
		case !n.c.Alive():
			p.discardIdleLocked(n, whyPeerClosedIdle, b)
		default:
			if !n.expireAt.IsZero() && (next.IsZero() || n.expireAt.Before(next)) {
				next = n.expireAt
			}
			n = nn
			continue
		}
		p.serveLocked(ks, b)
		p.settleLocked(ks, now)
		n = nn
	}
	return next
}

// probeAtLocked returns when the next liveness probe of the idle
// connections is due: ProbeInterval from now while any is idle, else zero.
// p.mu must be held.
func (p *Pool[C]) probeAtLocked(now time.Time) time.Time {
	if p.lruHead == nil || p.cfg.ProbeInterval <= 0 {
		return time.Time{}
	}
	return now.Add(p.cfg.ProbeInterval)
}

// retireKeysLocked forgets keys that have been empty for retireAfter and
// returns when the next one is due (zero: none). p.mu must be held.
func (p *Pool[C]) retireKeysLocked(now time.Time) time.Time {
	for ks := p.emptyHead; ks != nil; ks = p.emptyHead {
		due := ks.emptyAt.Add(p.retireAfter)
		if now.Before(due) {
			return due
		}
		p.unlinkEmptyLocked(ks)
		delete(p.keys, ks.key)
	}
	return time.Time{}
}
