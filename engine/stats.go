package engine

import (
	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/poolset"
	"github.com/serverside-go/serverside/shard"
)

// UpstreamStats is one upstream's pool state and request counters.
type UpstreamStats struct {
	// Pool is the pool's view: gauges (connecting, busy, idle, pinned,
	// waiting) and counters (reused, dialed, closes by reason). It is
	// zero once the pool retired the upstream's state after a quiet
	// IdleTimeout.
	Pool poolset.Stats
	// Requests finished, successfully or not.
	Requests uint64
	// Attempts is exchanges started (retries included); OnReused those
	// on a connection that had served before.
	Attempts, OnReused uint64
	// Retries is exchanges sent again after a failure.
	Retries uint64
	// RacesHit counts failures on a reused connection before any response
	// byte (the stale keep-alive race); RacesRetried those retried.
	RacesHit, RacesRetried uint64
	// Detached counts connections moved to blocking I/O for a large body.
	Detached uint64
	// AuthRounds counts requests sent again with the engine's credentials
	// answering a 401 or 407.
	AuthRounds uint64
	// Errors counts failed requests by phase name (dial, write,
	// await-head, body, protocol, pool-wait).
	Errors map[string]uint64
	// ReuseRatio is OnReused / Attempts: the share of exchanges that
	// needed no new connection.
	ReuseRatio float64
}

// Stats returns every upstream's stats, keyed by upstream (its address,
// followed by " cred=*" for connections that carry credentials). The
// credential scopes of one upstream add up under one entry: identities
// are not shown.
func (e *Engine) Stats() map[string]UpstreamStats {
	out := make(map[string]UpstreamStats)
	for k, s := range e.pool.Snapshot() {
		u := out[k.String()]
		addPool(&u.Pool, &s)
		out[k.String()] = u
	}
	e.stats.Range(func(k poolset.Key, c *shard.Counters) {
		u := out[k.String()]
		u.Requests += c.Requests.Load()
		u.Attempts += c.Attempts.Load()
		u.OnReused += c.OnReused.Load()
		u.Retries += c.Retries.Load()
		u.RacesHit += c.RacesHit.Load()
		u.RacesRetried += c.RacesRetried.Load()
		u.Detached += c.Detached.Load()
		u.AuthRounds += c.AuthRounds.Load()
		if u.Errors == nil {
			u.Errors = make(map[string]uint64)
		}
		for p := range c.Errors {
			if n := c.Errors[p].Load(); n > 0 {
				u.Errors[conn.Phase(p).String()] += n
			}
		}
		if u.Attempts > 0 {
			u.ReuseRatio = float64(u.OnReused) / float64(u.Attempts)
		}
		out[k.String()] = u
	})
	return out
}

// addPool adds s's gauges and counters to into.
func addPool(into, s *poolset.Stats) {
	into.Connecting += s.Connecting
	into.Busy += s.Busy
	into.Idle += s.Idle
	into.Pinned += s.Pinned
	into.Waiting += s.Waiting
	into.Reused += s.Reused
	into.Dialed += s.Dialed
	into.DialFailed += s.DialFailed
	into.Waits += s.Waits
	into.WaitTimeouts += s.WaitTimeouts
	into.WaitCancels += s.WaitCancels
	into.QueueFull += s.QueueFull
	c, d := &into.Closed, &s.Closed
	c.IdleTimeout += d.IdleTimeout
	c.HintExpired += d.HintExpired
	c.Lifetime += d.Lifetime
	c.MaxRequests += d.MaxRequests
	c.DeadOnCheckout += d.DeadOnCheckout
	c.DeadOnReturn += d.DeadOnReturn
	c.PeerClosedIdle += d.PeerClosedIdle
	c.OverCap += d.OverCap
	c.Drained += d.Drained
	c.Owner += d.Owner
}
