package poolset

import (
	"fmt"
	"time"
)

// Drain starts draining key, for an upstream being removed or restarted.
// At once it closes the key's idle connections and fails its queued
// waiters with ErrDraining. From then on, until Undrain: Put closes the
// key's connections instead of pooling them, TryReserve refuses, and Wait
// and Acquire fail with ErrDraining. Busy and pinned connections finish
// their current work; the drain is complete when Stats(key).Conns() is 0.
// All closes count as Drained.
func (p *Pool[C]) Drain(key Key) {
	var b batch[C]
	err := fmt.Errorf("%w (%v)", ErrDraining, key)
	now := p.now()
	p.mu.Lock()
	ks := p.keyLocked(key)
	ks.draining = true
	p.closeIdleLocked(ks, whyDrained, now, &b)
	p.failWaitersLocked(ks, err, &b)
	p.settleLocked(ks, now)
	p.mu.Unlock()
	b.run(p)
}

// Undrain ends a drain of key: the key is served normally again.
func (p *Pool[C]) Undrain(key Key) {
	now := p.now()
	p.mu.Lock()
	if ks := p.keys[key]; ks != nil {
		ks.draining = false
		p.settleLocked(ks, now)
	}
	p.mu.Unlock()
}

// CloseIdle closes every idle connection of every key, counting them as
// Drained. The pool stays open.
func (p *Pool[C]) CloseIdle() {
	var b batch[C]
	now := p.now()
	p.mu.Lock()
	p.closeIdleLocked(nil, whyDrained, now, &b)
	p.mu.Unlock()
	b.run(p)
}

// Close closes every idle connection and fails every queued waiter with
// ErrPoolClosed. Afterwards Put closes what it is given, Get finds nothing,
// TryReserve refuses, and Wait and Acquire fail with ErrPoolClosed, while
// Dialed, DialFailed, Pin, Unpin and Closed keep the accounting of
// connections still out, so that it returns to zero. Close is idempotent.
func (p *Pool[C]) Close() {
	var b batch[C]
	now := p.now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.sweeper != nil {
		p.sweeper.Stop()
	}
	p.sweepAt = time.Time{}
	p.closeIdleLocked(nil, whyDrained, now, &b)
	for _, ks := range p.keys {
		if ks.waiters.n > 0 {
			p.failWaitersLocked(ks, fmt.Errorf("%w (wait for %v)", ErrPoolClosed, ks.key), &b)
			p.settleLocked(ks, now)
		}
	}
	p.mu.Unlock()
	b.run(p)
}

// failWaitersLocked dequeues every waiter of ks for delivery of err. p.mu
// must be held.
func (p *Pool[C]) failWaitersLocked(ks *keyState[C], err error, b *batch[C]) {
	for w := ks.waiters.popFront(); w != nil; w = ks.waiters.popFront() {
		w.grant = Grant[C]{Err: err}
		b.deliver(w)
	}
}

// Draining reports whether key is draining: Drain was called and Undrain
// was not.
func (p *Pool[C]) Draining(key Key) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	ks := p.keys[key]
	return ks != nil && ks.draining
}
