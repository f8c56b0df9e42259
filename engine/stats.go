package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

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
	// Pipelined counts exchanges sent pipelined (Peer.Pipeline);
	// Unanswered those of them sent again because their connection ended
	// before their response (counted in Retries too).
	Pipelined, Unanswered uint64
	// RacesHit counts failures on a reused connection before any response
	// byte (the stale keep-alive race); RacesRetried those retried.
	RacesHit, RacesRetried uint64
	// Detached counts connections moved to blocking I/O for a large body.
	Detached uint64
	// AuthRounds counts requests sent again with the engine's credentials
	// answering a 401 or 407.
	AuthRounds uint64
	// TLSHandshakes counts TLS connections made to the upstream;
	// TLSResumed those whose handshake resumed an earlier session.
	TLSHandshakes, TLSResumed uint64
	// Tunnels counts tunnels opened by Tunnel (for a tunnel key, Requests
	// counts the attempts, failed ones included).
	Tunnels uint64
	// Errors counts failed requests by phase name (dial, write,
	// await-head, body, protocol, pool-wait, tls, tunnel): the upstream's
	// failures, and the engine's own (a full queue, a pool wait that
	// timed out). It leaves out two kinds, counted apart: Canceled, those
	// that failed because their context ended (the caller's: a client
	// that went away, a deadline, a Response.Body closed before its end;
	// or the engine's, when Close or Drain aborts the requests still
	// running); and CallerErrors, those that failed on the caller's side
	// while its context lasted (conn.CallerFault): the sink refused the
	// response (conn.ErrSink: a proxy's client that went away
	// mid-response), or the request body failed to read
	// (conn.ErrRequestBody: a client gone mid-upload) or ended short of
	// its ContentLength (conn.ErrBodyLength). Neither kind counts against
	// a peer's health.
	Errors       map[string]uint64
	Canceled     uint64
	CallerErrors uint64
	// ReuseRatio is OnReused / Attempts: the share of exchanges that
	// needed no new connection.
	ReuseRatio float64
}

// Stats returns every upstream's stats, keyed by upstream: its pool key's
// String, the address alone for a plain direct upstream, followed by
// " tls=…" (SNI and policy), " via=…" (tunnel route) and " cred=<8 hex
// digits>" when those apply: the credential scope shows only as a short
// hash of the key's (already hashed) scope, so that two identities are two
// entries and none is readable. The counters of upstreams retired for
// being many and unused are added up under RetiredKey.
func (e *Engine) Stats() map[string]UpstreamStats {
	out := make(map[string]UpstreamStats)
	for k, s := range e.pool.Snapshot() {
		out[statsKey(k)] = UpstreamStats{Pool: s}
	}
	fill := func(k string, c *shard.Counters) {
		u := out[k]
		u.Requests = c.Requests.Load()
		u.Attempts = c.Attempts.Load()
		u.OnReused = c.OnReused.Load()
		u.Retries = c.Retries.Load()
		u.Pipelined = c.Pipelined.Load()
		u.Unanswered = c.Unanswered.Load()
		u.RacesHit = c.RacesHit.Load()
		u.RacesRetried = c.RacesRetried.Load()
		u.Detached = c.Detached.Load()
		u.AuthRounds = c.AuthRounds.Load()
		u.TLSHandshakes = c.TLSHandshakes.Load()
		u.TLSResumed = c.TLSResumed.Load()
		u.Tunnels = c.Tunnels.Load()
		u.Canceled = c.Canceled.Load()
		u.CallerErrors = c.CallerErrors.Load()
		u.Errors = make(map[string]uint64)
		for p := range c.Errors {
			if n := c.Errors[p].Load(); n > 0 {
				u.Errors[conn.Phase(p).String()] = n
			}
		}
		if u.Attempts > 0 {
			u.ReuseRatio = float64(u.OnReused) / float64(u.Attempts)
		}
		out[k] = u
	}
	e.stats.Range(func(k poolset.Key, c *shard.Counters) { fill(statsKey(k), c) })
	if c := e.stats.Retired(); c != nil {
		fill(RetiredKey, c)
	}
	return out
}

// RetiredKey is the Stats entry that adds up the request counters of the
// upstreams whose own entries were retired: once there are thousands of
// upstreams (a forward proxy meets a new one with every host), those
// unused for a while and without pool state are dropped, and their counts
// go here, so that totals over all entries never go back.
const RetiredKey = "(retired)"

// statsKey renders k for Stats: Key.String, with the credential scope as a
// short hash instead of Key.String's "*", which would merge identities.
func statsKey(k poolset.Key) string {
	if k.Cred == "" {
		return k.String()
	}
	sum := sha256.Sum256([]byte(k.Cred))
	return strings.TrimSuffix(k.String(), "cred=*") + "cred=" + hex.EncodeToString(sum[:4])
}
