package shard

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/poolset"
)

// Counters are one upstream's request counters, updated with atomics by
// shards and read by Stats.
type Counters struct {
	Requests     atomic.Uint64 // requests finished, successfully or not
	Attempts     atomic.Uint64 // exchanges started, retries included
	OnReused     atomic.Uint64 // exchanges started on a reused connection
	Retries      atomic.Uint64 // exchanges sent again after a failure
	RacesHit     atomic.Uint64 // failures on a reused connection before any response byte
	RacesRetried atomic.Uint64 // of those, retried
	Detached     atomic.Uint64 // connections moved to Go net I/O for a large body, then closed
	AuthRounds   atomic.Uint64 // requests sent again with credentials answering a 401 or 407
	// TLSHandshakes counts TLS connections made; TLSResumed those whose
	// handshake resumed a session.
	TLSHandshakes, TLSResumed atomic.Uint64
	// Tunnels counts tunnels opened (handed to the caller).
	Tunnels atomic.Uint64
	// Errors counts failed requests by phase; Canceled those that failed
	// because their context ended (the caller's, or the engine's when it
	// aborts its requests), counted apart: the upstream did not fail.
	Errors   [conn.NumPhases]atomic.Uint64
	Canceled atomic.Uint64
}

// Failed counts a request that failed with err: in Canceled when ctx,
// the request's (the caller's, or the engine's root for a caller's
// context that cannot end), has ended, else in Errors by the phase of
// its *conn.Error (errors of other types are not counted).
func (c *Counters) Failed(ctx context.Context, err error) {
	if e := conn.AsError(err); e != nil && int(e.Phase) < len(c.Errors) {
		if ctx.Err() != nil {
			c.Canceled.Add(1)
		} else {
			c.Errors[e.Phase].Add(1)
		}
	}
}

// Registry maps upstreams to their counters.
type Registry struct {
	m sync.Map // poolset.Key -> *regEntry
	// last is the entry For returned last: requests mostly go where the
	// one before went, and the comparison is cheaper than the map's hash.
	last atomic.Pointer[regEntry]
}

type regEntry struct {
	key poolset.Key
	ctr Counters
}

// For returns key's counters, creating them on first use.
func (r *Registry) For(key poolset.Key) *Counters {
	if e := r.last.Load(); e != nil && e.key == key {
		return &e.ctr
	}
	v, ok := r.m.Load(key)
	if !ok {
		v, _ = r.m.LoadOrStore(key, &regEntry{key: key})
	}
	e := v.(*regEntry)
	r.last.Store(e)
	return &e.ctr
}

// Range calls fn for every upstream with counters.
func (r *Registry) Range(fn func(poolset.Key, *Counters)) {
	r.m.Range(func(k, v any) bool {
		fn(k.(poolset.Key), &v.(*regEntry).ctr)
		return true
	})
}
