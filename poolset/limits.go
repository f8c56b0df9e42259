package poolset

// KeyLimits overrides, for one key, the pool-wide per-key limits of
// Config. A zero field keeps the pool-wide value.
type KeyLimits struct {
	// MaxConns caps the key's connections (connecting, busy, idle and
	// pinned), as Config.MaxConnsPerKey does for every key.
	MaxConns int
	// MaxWaiters bounds the key's wait queue, as Config.MaxWaitersPerKey.
	MaxWaiters int
}

// SetLimits sets the limits of key, replacing earlier ones; the zero
// KeyLimits removes them. They outlive the key's state: a key retired
// after a quiet spell gets them back when it is used again. Waiters queued
// behind a cap that was raised are served at once.
func (p *Pool[C]) SetLimits(key Key, l KeyLimits) {
	var b batch[C]
	p.mu.Lock()
	if l == (KeyLimits{}) {
		delete(p.limits, key)
	} else {
		if p.limits == nil {
			p.limits = make(map[Key]KeyLimits)
		}
		p.limits[key] = l
	}
	if ks := p.keys[key]; ks != nil {
		ks.limits = l
		if !p.closed && !ks.draining {
			p.serveLocked(ks, &b)
		}
	}
	p.mu.Unlock()
	b.run(p)
}

// Loads fills out[i] with the load of keys[i]: its connections being
// dialed or busy plus its queued waiters, the requests the key is serving
// or has been asked to serve. It takes the lock once for all keys and
// allocates nothing, for balancers that weigh a few keys per request.
func (p *Pool[C]) Loads(keys []Key, out []int) {
	p.mu.Lock()
	for i, k := range keys {
		if ks := p.keys[k]; ks != nil {
			out[i] = ks.connecting + ks.busy + ks.waiters.n
		} else {
			out[i] = 0
		}
	}
	p.mu.Unlock()
}

// maxConnsLocked is the connection cap of ks; 0 for none. p.mu must be
// held.
func (p *Pool[C]) maxConnsLocked(ks *keyState[C]) int {
	if ks.limits.MaxConns > 0 {
		return ks.limits.MaxConns
	}
	return p.cfg.MaxConnsPerKey
}

// maxWaitersLocked is the wait queue bound of ks. p.mu must be held.
func (p *Pool[C]) maxWaitersLocked(ks *keyState[C]) int {
	if ks.limits.MaxWaiters != 0 {
		return ks.limits.MaxWaiters
	}
	return p.cfg.MaxWaitersPerKey
}
