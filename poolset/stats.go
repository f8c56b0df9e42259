package poolset

// Stats is one key's gauges and counters. Counters start when the key's
// state is created and are lost when the pool retires the state, which it
// does once the key has had no connections and no waiters for IdleTimeout
// (60s when IdleTimeout is negative), so that a forward proxy visiting
// many origins does not grow without bound. Draining keys are kept.
type Stats struct {
	// Gauges.
	Connecting int // dial permits out (TryReserve or granted to a waiter), not yet Dialed or DialFailed
	Busy       int // checked out: by Get, handed over, or Dialed
	Idle       int // in the idle list
	Pinned     int // moved out of the shared accounting by Pin
	Held       int // slots of the cap taken by Hold, for connections that show under keys of their own
	Waiting    int // queued waiters

	// Counters.
	Reused       uint64 // connections handed out from the idle list or straight from a Put
	Dialed       uint64 // permits turned into connections (Dialed)
	DialFailed   uint64 // permits given back by DialFailed (not by DialCanceled)
	Waits        uint64 // waiters that had to queue
	WaitTimeouts uint64 // queued waiters whose deadline passed
	WaitCancels  uint64 // queued waiters withdrawn by Cancel
	QueueFull    uint64 // Wait calls refused with ErrQueueFull
	Closed       CloseCounts
}

// Conns is the key's connection count: connecting + busy + idle + pinned.
// MaxConnsPerKey caps it plus Held, the slots of connections counted
// under keys of their own.
func (s Stats) Conns() int { return s.Connecting + s.Busy + s.Idle + s.Pinned }

// CloseCounts counts connections closed, by reason.
type CloseCounts struct {
	IdleTimeout    uint64 // idle for IdleTimeout
	HintExpired    uint64 // idle past the window an origin's Keep-Alive: timeout hint allows
	Lifetime       uint64 // older than MaxLifetime, found idle or on return
	MaxRequests    uint64 // returned after MaxRequests requests
	DeadOnCheckout uint64 // failed Alive when Get or Wait took it from the idle list, or the caller's own check after (ClosedDead)
	DeadOnReturn   uint64 // failed Alive when returned by Put
	PeerClosedIdle uint64 // closed by the peer while idle: found by the sweeper or reported by PeerClosed
	OverCap        uint64 // refused by MaxIdlePerKey, evicted as the oldest by MaxIdle, or closed at the cap to make room for Hold
	Drained        uint64 // closed by Drain, CloseIdle or Close, or returned while draining or closed
	// UpstreamClose counts connections closed by the caller because the
	// upstream's response asked for it ("Connection: close", an HTTP/1.0
	// response without keep-alive, a body delimited by the close),
	// reported with ClosedByUpstream.
	UpstreamClose uint64
	// Owner counts connections closed by the caller for its own reasons
	// (a failed exchange, a request that asked to close, a connection that
	// may not be shared, a tunnel or switched connection that ended, a
	// pinned session that ended) and reported with Closed.
	Owner uint64
}

// Total is the sum over all reasons.
func (c CloseCounts) Total() uint64 {
	return c.IdleTimeout + c.HintExpired + c.Lifetime + c.MaxRequests + c.DeadOnCheckout +
		c.DeadOnReturn + c.PeerClosedIdle + c.OverCap + c.Drained + c.UpstreamClose + c.Owner
}

// reason is why a connection was closed; it selects a CloseCounts field.
// The three expiry reasons come first: errExpired is indexed by them.
type reason uint8

const (
	whyIdleTimeout reason = iota
	whyHintExpired
	whyLifetime
	whyMaxRequests
	whyDeadOnCheckout
	whyDeadOnReturn
	whyPeerClosedIdle
	whyOverCap
	whyDrained
	whyUpstreamClose
	whyOwner
)

// add counts one close for r.
func (c *CloseCounts) add(r reason) {
	switch r {
	case whyIdleTimeout:
		c.IdleTimeout++
	case whyHintExpired:
		c.HintExpired++
	case whyLifetime:
		c.Lifetime++
	case whyMaxRequests:
		c.MaxRequests++
	case whyDeadOnCheckout:
		c.DeadOnCheckout++
	case whyDeadOnReturn:
		c.DeadOnReturn++
	case whyPeerClosedIdle:
		c.PeerClosedIdle++
	case whyOverCap:
		c.OverCap++
	case whyDrained:
		c.Drained++
	case whyUpstreamClose:
		c.UpstreamClose++
	case whyOwner:
		c.Owner++
	}
}

// Stats returns the gauges and counters of key; the zero Stats if the pool
// has no state for it.
func (p *Pool[C]) Stats(key Key) Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ks := p.keys[key]; ks != nil {
		return ks.statsLocked()
	}
	return Stats{}
}

// Has reports whether the pool has state for key: connections (connecting,
// busy, idle or pinned), waiting requests, or a key emptied less than the
// retirement delay ago.
func (p *Pool[C]) Has(key Key) bool {
	p.mu.Lock()
	_, ok := p.keys[key]
	p.mu.Unlock()
	return ok
}

// Snapshot returns the Stats of every key the pool has state for, taken
// under one lock acquisition, so the figures are consistent with each
// other. It allocates the map; it is meant for metrics scrapes, not for the
// request path.
func (p *Pool[C]) Snapshot() map[Key]Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[Key]Stats, len(p.keys))
	for k, ks := range p.keys {
		m[k] = ks.statsLocked()
	}
	return m
}

// statsLocked fills the gauges into the key's counters. p.mu must be held.
func (ks *keyState[C]) statsLocked() Stats {
	s := ks.stats
	s.Connecting = ks.connecting
	s.Busy = ks.busy
	s.Idle = ks.idle
	s.Pinned = ks.pinned
	s.Held = ks.held
	s.Waiting = ks.waiters.n
	return s
}
