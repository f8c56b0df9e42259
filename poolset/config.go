package poolset

import "time"

// Defaults that New applies to zero Config fields.
const (
	DefaultIdleTimeout      = 60 * time.Second
	DefaultMaxIdlePerKey    = 32
	DefaultMaxIdle          = 1024
	DefaultMaxWaitersPerKey = 1024
	DefaultKeepAliveSafety  = 0.8
	DefaultProbeInterval    = time.Second
)

// Config sets the pool's limits. The zero value of every field selects the
// documented default. Config is read once, by New.
type Config struct {
	// IdleTimeout is how long a connection may stay idle, counted from
	// PutInfo.Ended (the end of its last response) when given, else from
	// the Put. Zero means DefaultIdleTimeout (60s, as Squid and nginx);
	// negative means idle connections never expire by idleness alone
	// (hints and MaxLifetime still apply).
	IdleTimeout time.Duration

	// MaxIdlePerKey caps the idle connections of one key. A connection
	// returned over the cap is closed (the warm ones already pooled are
	// kept). Zero means DefaultMaxIdlePerKey (32); negative means no idle
	// connections are kept for any key (hand-offs to waiters still happen).
	MaxIdlePerKey int

	// MaxIdle caps the idle connections of all keys together. A connection
	// returned at the cap evicts the oldest idle connection of any key.
	// Zero means DefaultMaxIdle (1024); negative means none are kept.
	MaxIdle int

	// MaxConnsPerKey caps the connections of one key, counting connecting
	// (dial permits out), busy, idle and pinned ones. Over it, callers
	// wait. Zero or negative means unlimited.
	MaxConnsPerKey int

	// MaxWaitersPerKey bounds the wait queue of one key; Wait beyond it
	// fails with ErrQueueFull. Zero means DefaultMaxWaitersPerKey (1024);
	// negative means callers never queue.
	MaxWaitersPerKey int

	// MaxLifetime retires a connection this long after PutInfo.Born,
	// whether idle or returned, so that traffic rebalances after DNS or
	// topology changes. Zero means no limit.
	MaxLifetime time.Duration

	// MaxRequests retires a connection once it has served this many
	// requests (PutInfo.Requests). Zero means no limit.
	MaxRequests int

	// KeepAliveSafety sets how early the pool retires an idle connection
	// whose last response carried "Keep-Alive: timeout=N", so that we
	// close it before the origin does and never send a request into a
	// closing socket (the stale keep-alive race). With hint N, the
	// connection expires at
	//
	//	max(min(N × KeepAliveSafety, N − 1s), min(N / 2, N × KeepAliveSafety))
	//
	// after it went idle (PutInfo.Ended, else the Put), and never later
	// than IdleTimeout. The fraction
	// absorbs clock drift and the origin's timer starting before our
	// receipt of the last byte; the one-second margin absorbs whole-second
	// rounding in the header; the floor of half the hint (or less, with a
	// KeepAliveSafety under one half) leaves a short hint some idle time
	// (Apache rounds its timeout down, so it keeps a connection at least
	// the hint). With the default 0.8: timeout=60 →
	// 48s, timeout=5 → 4s, timeout=2 → 1s, timeout=1 → 0.5s. After
	// timeout=0 (PutInfo.KeepAliveHint negative) a connection is never
	// kept idle; it can only be handed straight to a waiter.
	// Zero, negative or above 1 means DefaultKeepAliveSafety (0.8).
	KeepAliveSafety float64

	// ProbeInterval is how often, while connections are idle, the sweeper
	// probes them all with Alive, so that one the peer closed (an origin's
	// own idle timeout) is closed and counted within about this long
	// instead of holding a half-closed socket until its expiry. A probe is
	// an atomic load per connection. Zero means DefaultProbeInterval (1s);
	// negative turns probing off (Get still probes at checkout).
	ProbeInterval time.Duration

	// Now is the clock. Nil means time.Now; tests pass a fake clock. The
	// sweeper and waiter deadlines still run on real timers, armed for the
	// difference between the target and Now().
	Now func() time.Time
}

// normalized returns c with defaults applied.
func (c Config) normalized() Config {
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxIdlePerKey == 0 {
		c.MaxIdlePerKey = DefaultMaxIdlePerKey
	}
	if c.MaxIdle == 0 {
		c.MaxIdle = DefaultMaxIdle
	}
	if c.MaxConnsPerKey < 0 {
		c.MaxConnsPerKey = 0
	}
	if c.MaxWaitersPerKey == 0 {
		c.MaxWaitersPerKey = DefaultMaxWaitersPerKey
	}
	if c.MaxLifetime < 0 {
		c.MaxLifetime = 0
	}
	if c.MaxRequests < 0 {
		c.MaxRequests = 0
	}
	if !(c.KeepAliveSafety > 0 && c.KeepAliveSafety <= 1) {
		c.KeepAliveSafety = DefaultKeepAliveSafety
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// hintWindow is how long a connection may stay idle after a response that
// carried Keep-Alive: timeout=h. It may be zero or negative: no safe window.
func (c *Config) hintWindow(h time.Duration) time.Duration {
	f := time.Duration(float64(h) * c.KeepAliveSafety)
	w := min(f, h-time.Second)
	// Never under half the hint: a server that rounds its timeout down
	// to whole seconds (Apache) keeps the connection at least the hint,
	// and without this floor timeout=1 would leave no idle time at all,
	// so that not even back-to-back requests could share a connection.
	// The floor stands in for the one-second margin, not for the
	// fraction: a KeepAliveSafety under one half still holds.
	return max(w, min(h/2, f))
}
