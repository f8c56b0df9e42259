package poolset

import "context"

// Hold takes one slot of key's connection cap for a connection that the
// pool does not hold under key but that ends at key's upstream all the
// same: a CONNECT tunnel through a parent proxy, which pools under a key
// of its own (per target) and counts against the parent's cap, as the
// parent sees it. The slot counts against key's MaxConnsPerKey (or
// SetLimits' MaxConns) and shows in Stats.Held, but not in Stats.Conns
// or Loads: the connection shows under its own key.
//
// A free slot is taken at once. At the cap, an idle connection of key is
// closed to make room (it counts as OverCap): it is of no use while the
// key's connections are all taken. Otherwise Hold waits in key's queue
// with its requests, first come first served, as Acquire does, and fails
// as it does: with an error wrapping ctx.Err() (and ErrPoolTimeout when
// the deadline passed), ErrQueueFull, ErrDraining or ErrPoolClosed.
//
// After a nil error the caller must call Unhold once, when the
// connection closes (or was never made).
func (p *Pool[C]) Hold(ctx context.Context, key Key) error {
	if p.TryReserve(key) {
		p.toHeld(key, true)
		return nil
	}
	g, err := p.Acquire(ctx, key)
	if err != nil {
		return err
	}
	if g.Permit {
		p.toHeld(key, true)
		return nil
	}
	_ = g.Conn.Close()
	p.toHeld(key, false)
	return nil
}

// toHeld turns a dial permit (permit), or a busy connection just closed,
// of key into a held slot.
func (p *Pool[C]) toHeld(key Key, permit bool) {
	p.mu.Lock()
	ks := p.mustKeyLocked(key, "Hold")
	if permit {
		ks.connecting--
	} else {
		// Acquire counted the connection as handed out for reuse; it
		// was closed instead, and carried nothing.
		ks.busy--
		ks.stats.Reused--
		ks.stats.Closed.add(whyOverCap)
	}
	ks.held++
	p.mu.Unlock()
}

// Unhold gives back a slot taken by Hold. The freed capacity goes to the
// first waiter, if there is one. Unhold without a slot held panics.
func (p *Pool[C]) Unhold(key Key) {
	var b batch[C]
	now := p.now()
	p.mu.Lock()
	ks := p.mustKeyLocked(key, "Unhold")
	if ks.held == 0 {
		p.misuseLocked("Unhold", key, "no slot held")
	}
	ks.held--
	if !p.closed {
		p.serveLocked(ks, &b)
	}
	p.settleLocked(ks, now)
	p.mu.Unlock()
	b.run(p)
}
