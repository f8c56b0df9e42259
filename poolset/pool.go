package poolset

import (
	"sync"
	"time"
)

// Conn is what the pool needs of a connection. It is a constraint: the
// pool's type parameter is the engine's own connection type (usually a
// pointer), and comparable lets PeerClosed find a connection in an idle list.
type Conn interface {
	comparable

	// Alive reports, without blocking, that the peer has not closed the
	// connection and that no unread bytes are buffered on it (bytes on an
	// idle HTTP/1.1 connection mean it is broken or closing). The pool
	// calls it with its lock held, on checkout and from the sweeper, so it
	// must be a cheap probe that never blocks and never calls back into
	// the pool.
	Alive() bool

	// Close closes the connection. The pool calls it at most once per
	// connection it decides to close, never with its lock held, on the
	// goroutine of the operation that decided (a Get or Put caller, the
	// sweeper's timer goroutine, a Drain or Close caller). A Close that can
	// block for long should hand the work off.
	Close() error
}

// PutInfo describes a connection being returned by Put.
type PutInfo struct {
	// KeepAliveHint is the N of the last response's "Keep-Alive:
	// timeout=N", or 0 when there was none. A negative value stands for
	// timeout=0, which leaves no idle time at all (the connection can
	// only go straight to a waiter). See Config.KeepAliveSafety.
	KeepAliveHint time.Duration
	// Requests is how many requests the connection has served so far,
	// including the one just finished. Compared with Config.MaxRequests.
	Requests int
	// Born is when the connection was established; zero when unknown.
	// Compared with Config.MaxLifetime.
	Born time.Time
	// Ended is when the last byte of the connection's last response was
	// read; zero means at Put. The idle expiry (IdleTimeout and the
	// Keep-Alive hint) counts from it: the upstream's idle timer started
	// when it had sent that byte, and whatever delayed the Put since (a
	// sink delivering the body to a slow client) did not hold it. It is
	// read on the pool's clock (Config.Now; time.Now by default, whose
	// monotonic reading the comparisons then use), as Born is. A time
	// after the Put's counts as the Put's.
	Ended time.Time
}

// State is how a caller holds a connection it reports closed.
type State uint8

// The states Closed accepts.
const (
	Busy   State = iota + 1 // checked out (Get, a grant, Dialed) and not pinned
	Pinned                  // moved out of the shared accounting by Pin
)

// String names the state.
func (s State) String() string {
	switch s {
	case Busy:
		return "busy"
	case Pinned:
		return "pinned"
	}
	return "invalid state"
}

// Pool is the shared pool of persistent connections of type C, keyed by
// upstream. All methods are safe for concurrent use. None blocks except
// Acquire; Wait delivers its outcome through a callback.
type Pool[C Conn] struct {
	cfg         Config           // normalized; read-only after New
	now         func() time.Time // cfg.Now; read-only
	sweepGap    time.Duration    // least time between two sweeps; read-only
	retireAfter time.Duration    // how long an empty key's state is kept; read-only
	sweepFn     func()           // p.sweep, bound once; read-only

	mu        sync.Mutex
	keys      map[Key]*keyState[C] // every key with state
	limits    map[Key]KeyLimits    // SetLimits overrides; nil until the first
	lruHead   *idleNode[C]         // every idle connection, least recently pushed first (linked by gnext)
	lruTail   *idleNode[C]         // most recently pushed idle connection
	idle      int                  // idle connections, all keys
	free      *idleNode[C]         // recycled idle nodes, linked by gnext
	emptyHead *keyState[C]         // keys with no connections, no waiters, not draining; longest empty first
	emptyTail *keyState[C]         // most recently emptied key
	closed    bool                 // Close was called
	sweeper   *time.Timer          // the one expiry timer; created on first arm, runs sweepFn
	sweepAt   time.Time            // when sweeper fires; zero when not armed
	lastSweep time.Time            // when the last sweep ran

	testNoTimer     bool   // tests that sweep by hand: arming records sweepAt only
	testHookDeliver func() // tests: runs between dequeuing a waiter and delivering to it
}

// keyState is the pool's state for one key. Every field is guarded by the
// pool's mu.
type keyState[C Conn] struct {
	key Key

	// Gauges. connecting+busy+idle+pinned+held never exceeds MaxConnsPerKey.
	connecting int // dial permits out
	busy       int // checked out
	idle       int // length of the idle list
	pinned     int // pinned by their owners
	held       int // slots taken by Hold for connections of other keys

	idleHead *idleNode[C] // oldest idle connection (linked by knext)
	idleTail *idleNode[C] // newest idle connection: the one Get takes (LIFO)
	waiters  waitQueue[C] // FIFO of callers waiting for capacity
	draining bool         // Drain was called and Undrain was not
	limits   KeyLimits    // SetLimits overrides, copied from Pool.limits
	stats    Stats        // counters; the gauge fields are filled on read
	empty    bool         // on the pool's empty list
	emptyAt  time.Time    // when it went on the empty list
	prevE    *keyState[C] // empty list links
	nextE    *keyState[C] //
}

// New returns a pool configured by cfg (zero fields take their defaults).
func New[C Conn](cfg Config) *Pool[C] {
	cfg = cfg.normalized()
	p := &Pool[C]{
		cfg:         cfg,
		now:         cfg.Now,
		sweepGap:    time.Second,
		retireAfter: DefaultIdleTimeout,
		keys:        make(map[Key]*keyState[C]),
	}
	if cfg.IdleTimeout > 0 {
		p.retireAfter = cfg.IdleTimeout
		p.sweepGap = min(time.Second, max(cfg.IdleTimeout/4, time.Millisecond))
	}
	p.sweepFn = p.sweep
	return p
}

// Config returns the configuration in effect, defaults applied.
func (p *Pool[C]) Config() Config { return p.cfg }

// keyLocked returns the state of key, creating it. p.mu must be held.
func (p *Pool[C]) keyLocked(key Key) *keyState[C] {
	ks := p.keys[key]
	if ks == nil {
		ks = &keyState[C]{key: key, limits: p.limits[key]}
		p.keys[key] = ks
	}
	return ks
}

// mustKeyLocked returns the state of key, which the caller's accounting says
// exists; if it does not, the caller has an accounting bug. p.mu must be
// held; misuse releases it before panicking.
func (p *Pool[C]) mustKeyLocked(key Key, op string) *keyState[C] {
	ks := p.keys[key]
	if ks == nil {
		p.misuseLocked(op, key, "no connection of this key is held")
	}
	return ks
}

// misuseLocked releases p.mu and panics: the caller's accounting does not
// match the pool's (for example Put of a connection that is not busy).
// Carrying on would let the MaxConnsPerKey invariant drift.
func (p *Pool[C]) misuseLocked(op string, key Key, what string) {
	p.mu.Unlock()
	panic("poolset: " + op + "(" + key.String() + "): " + what)
}

// underCapLocked reports whether ks may gain one connection. p.mu must be
// held.
func (p *Pool[C]) underCapLocked(ks *keyState[C]) bool {
	max := p.maxConnsLocked(ks)
	return max == 0 || ks.connecting+ks.busy+ks.idle+ks.pinned+ks.held < max
}

// serveLocked grants dial permits to the waiters of ks, first come first
// served, while ks is under its cap. Operations call it after they free
// capacity. p.mu must be held.
func (p *Pool[C]) serveLocked(ks *keyState[C], b *batch[C]) {
	for ks.waiters.n > 0 && p.underCapLocked(ks) {
		w := ks.waiters.popFront()
		if w == nil {
			return
		}
		ks.connecting++
		w.grant = Grant[C]{Permit: true}
		b.deliver(w)
	}
}

// settleLocked puts ks on the empty list when it has no connections, no
// waiters and is not draining, or takes it off when it has some again. The
// sweeper retires keys that stay empty for retireAfter. p.mu must be held.
func (p *Pool[C]) settleLocked(ks *keyState[C], now time.Time) {
	isEmpty := ks.connecting+ks.busy+ks.idle+ks.pinned+ks.held == 0 && ks.waiters.n == 0 && !ks.draining
	switch {
	case isEmpty && !ks.empty:
		ks.empty, ks.emptyAt = true, now
		ks.prevE, ks.nextE = p.emptyTail, nil
		if p.emptyTail != nil {
			p.emptyTail.nextE = ks
		} else {
			p.emptyHead = ks
		}
		p.emptyTail = ks
		p.armLocked(now.Add(p.retireAfter), now)
	case !isEmpty && ks.empty:
		p.unlinkEmptyLocked(ks)
	}
}

// unlinkEmptyLocked takes ks off the empty list. p.mu must be held.
func (p *Pool[C]) unlinkEmptyLocked(ks *keyState[C]) {
	if ks.prevE != nil {
		ks.prevE.nextE = ks.nextE
	} else {
		p.emptyHead = ks.nextE
	}
	if ks.nextE != nil {
		ks.nextE.prevE = ks.prevE
	} else {
		p.emptyTail = ks.prevE
	}
	ks.prevE, ks.nextE, ks.empty = nil, nil, false
}
