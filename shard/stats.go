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
	Pipelined    atomic.Uint64 // of those, sent on a connection in pipeline mode (Task.Pipeline)
	Unanswered   atomic.Uint64 // pipelined requests sent again because their connection ended first
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
	// Errors counts failed requests by phase. Two kinds of failure are
	// counted apart, since the upstream did not fail: Canceled, those
	// that failed because their context ended (the caller's, or the
	// engine's when it aborts its requests), and CallerErrors, those that
	// failed on the caller's side (conn.CallerFault: the sink refused the
	// response, the request body could not be read).
	Errors       [conn.NumPhases]atomic.Uint64
	Canceled     atomic.Uint64
	CallerErrors atomic.Uint64
}

// Failed counts a request that failed with err: in Canceled when ctx,
// the request's (the caller's, or the engine's root for a caller's
// context that cannot end), has ended, in CallerErrors when err is the
// caller's (conn.CallerFault), else in Errors by the phase of its
// *conn.Error (errors of other types are not counted).
func (c *Counters) Failed(ctx context.Context, err error) {
	if e := conn.AsError(err); e != nil && int(e.Phase) < len(c.Errors) {
		switch {
		case ctx.Err() != nil:
			c.Canceled.Add(1)
		case conn.CallerFault(err):
			c.CallerErrors.Add(1)
		default:
			c.Errors[e.Phase].Add(1)
		}
	}
}

// Registry maps upstreams to their counters. With Live set it stays
// bounded: a forward proxy meets a new upstream with every new host, and
// their counters would otherwise be kept for good. When the entries
// double (from registryFloor up) a sweep retires those not used since
// the sweep before and not Live, adding their counts to one aggregate
// (Retired), so that totals never go back. A request that raced the
// retirement of its upstream's entry may go uncounted.
type Registry struct {
	m sync.Map // poolset.Key -> *regEntry
	// last is the entry For returned last: requests mostly go where the
	// one before went, and the comparison is cheaper than the map's hash.
	last atomic.Pointer[regEntry]
	// Live, when set, reports an upstream whose entry must stay whether
	// or not it was used lately (the pool has state for it: connections
	// or waiting requests). Set it before the first For.
	Live func(poolset.Key) bool

	gen     atomic.Uint64 // sweeps so far; entries note the one they were last used in
	entries atomic.Int64
	next    atomic.Int64 // entries at which For sweeps; 0 for registryFloor

	sweeping   sync.Mutex // one sweep at a time; guards retired
	retired    Counters
	hasRetired atomic.Bool
}

// registryFloor is the number of entries under which the Registry never
// sweeps.
const registryFloor = 4096

type regEntry struct {
	key  poolset.Key
	used atomic.Uint64 // the Registry's gen when last used
	ctr  Counters
}

// For returns key's counters, creating them on first use.
func (r *Registry) For(key poolset.Key) *Counters {
	if e := r.last.Load(); e != nil && e.key == key {
		r.touch(e)
		return &e.ctr
	}
	v, ok := r.m.Load(key)
	if !ok {
		ne := &regEntry{key: key}
		ne.used.Store(r.gen.Load())
		var loaded bool
		if v, loaded = r.m.LoadOrStore(key, ne); !loaded {
			if n, next := r.entries.Add(1), r.next.Load(); n >= max(next, registryFloor) && r.Live != nil {
				r.sweep()
			}
		}
	}
	e := v.(*regEntry)
	r.touch(e)
	r.last.Store(e)
	return &e.ctr
}

// touch notes that e is in use in the current sweep generation.
func (r *Registry) touch(e *regEntry) {
	if g := r.gen.Load(); e.used.Load() != g {
		e.used.Store(g)
	}
}

// sweep retires the entries not used since the last sweep whose upstream
// is not Live, then sets the next sweep at twice the entries left.
func (r *Registry) sweep() {
	if !r.sweeping.TryLock() {
		return // another For is sweeping
	}
	defer r.sweeping.Unlock()
	g := r.gen.Load()
	r.m.Range(func(k, v any) bool {
		e := v.(*regEntry)
		if e.used.Load() < g && r.last.Load() != e && !r.Live(e.key) {
			r.m.Delete(k)
			r.entries.Add(-1)
			r.retired.add(&e.ctr)
			r.hasRetired.Store(true)
		}
		return true
	})
	r.gen.Add(1)
	r.next.Store(max(2*r.entries.Load(), registryFloor))
}

// Retired returns the counts of the retired upstreams, added up, or nil
// when none was retired. Its fields are read with atomics, as any
// Counters'.
func (r *Registry) Retired() *Counters {
	if !r.hasRetired.Load() {
		return nil
	}
	return &r.retired
}

// add adds c's counts to dst.
func (dst *Counters) add(c *Counters) {
	dst.Requests.Add(c.Requests.Load())
	dst.Attempts.Add(c.Attempts.Load())
	dst.OnReused.Add(c.OnReused.Load())
	dst.Retries.Add(c.Retries.Load())
	dst.RacesHit.Add(c.RacesHit.Load())
	dst.RacesRetried.Add(c.RacesRetried.Load())
	dst.Pipelined.Add(c.Pipelined.Load())
	dst.Unanswered.Add(c.Unanswered.Load())
	dst.Detached.Add(c.Detached.Load())
	dst.AuthRounds.Add(c.AuthRounds.Load())
	dst.TLSHandshakes.Add(c.TLSHandshakes.Load())
	dst.TLSResumed.Add(c.TLSResumed.Load())
	dst.Tunnels.Add(c.Tunnels.Load())
	for i := range c.Errors {
		dst.Errors[i].Add(c.Errors[i].Load())
	}
	dst.Canceled.Add(c.Canceled.Load())
	dst.CallerErrors.Add(c.CallerErrors.Load())
}

// Range calls fn for every upstream with counters (not Retired).
func (r *Registry) Range(fn func(poolset.Key, *Counters)) {
	r.m.Range(func(k, v any) bool {
		fn(k.(poolset.Key), &v.(*regEntry).ctr)
		return true
	})
}
