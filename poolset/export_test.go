package poolset

import "time"

// Bridges for the tests in package poolset_test.

// IdleCountForTesting returns the number of idle connections of all keys.
func (p *Pool[C]) IdleCountForTesting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.idle
}

// IdleForTesting returns the idle connections of key, oldest first.
func (p *Pool[C]) IdleForTesting(key Key) []C {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []C
	if ks := p.keys[key]; ks != nil {
		for n := ks.idleHead; n != nil; n = n.knext {
			out = append(out, n.c)
		}
	}
	return out
}

// KeyCountForTesting returns how many keys the pool has state for.
func (p *Pool[C]) KeyCountForTesting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.keys)
}

// ManualSweepForTesting stops the sweeper's timer for good: the test sweeps
// with SweepForTesting, so a fake clock fully decides what expires.
func (p *Pool[C]) ManualSweepForTesting() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.testNoTimer = true
	if p.sweeper != nil {
		p.sweeper.Stop()
	}
}

// SweepForTesting runs one sweep now, as the timer would.
func (p *Pool[C]) SweepForTesting() { p.sweep() }

// SweepAtForTesting returns when the sweeper is armed to fire (zero: not
// armed).
func (p *Pool[C]) SweepAtForTesting() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sweepAt
}

// PutForTesting is Put, returning why the connection was refused (nil when
// it was pooled or handed to a waiter).
func (p *Pool[C]) PutForTesting(key Key, c C, info PutInfo) error {
	if err := p.put(key, c, info, time.Time{}); err != nil {
		return err
	}
	return nil
}

// SetDeliverHookForTesting installs f to run between the moment a waiter is
// dequeued for a grant and the delivery, which is where Cancel races.
func (p *Pool[C]) SetDeliverHookForTesting(f func()) { p.testHookDeliver = f }

// HintWindowForTesting returns how long a connection whose last response
// carried Keep-Alive: timeout=h may stay idle under cfg.
func HintWindowForTesting(cfg Config, h time.Duration) time.Duration {
	cfg = cfg.normalized()
	return cfg.hintWindow(h)
}

// Put refusal reasons, for errors.Is in tests.
var (
	ErrTooManyIdleForTesting  = errTooManyIdle
	ErrNoIdleWindowForTesting = errNoIdleWindow
	ErrIdleExpiredForTesting  = errIdleExpired
	ErrMaxRequestsForTesting  = errMaxRequests
	ErrLifetimeForTesting     = errLifetime
	ErrConnDeadForTesting     = errConnDead
	ErrDrainingPutForTesting  = errPutDraining
	ErrClosedPutForTesting    = errPutClosed
)
