// Package poolset implements the single lock-protected shared pool of
// persistent upstream connections.
//
// One [Pool] serves the whole process. Shards (event-loop goroutines that
// must never block) and blocking callers use the same pool. The pool is
// generic over the connection type and knows nothing about HTTP: it sees a
// connection only through [Conn] (a liveness probe and Close) and an
// upstream only through [Key].
//
// # Accounting
//
// Per key, every connection the pool knows of is in exactly one state, and
// connecting+busy+idle+pinned never exceeds Config.MaxConnsPerKey. The
// transitions, and the calls that make them:
//
//	from          to          by
//	(none)        connecting  TryReserve; Wait granting a dial permit
//	connecting    busy        Dialed
//	connecting    (none)      DialFailed, DialCanceled
//	busy          connecting  Replace: the owner closed it to dial in its place
//	                          (not once the pool is closed or the key draining:
//	                          then as Closed)
//	idle          busy        Get; Wait handing an idle connection over
//	busy          idle        Put, when nobody waits
//	busy          busy        Put, handing it straight to the first waiter
//	busy          pinned      Pin
//	pinned        busy        Unpin
//	busy, pinned  (none)      Closed: the owner closed it (ClosedByUpstream,
//	                          ClosedDead: the same, counted for the upstream)
//	busy          (none)      Put refusing it: closed, draining, dead, limits, idle caps
//	idle          (none)      expiry, Alive false, MaxIdle eviction, PeerClosed,
//	                          Drain, CloseIdle, Close
//
// Waiting callers are counted separately (Stats.Waiting) and hold nothing.
//
// # Locking
//
// One sync.Mutex guards every idle list, wait queue, gauge and counter. It is
// held only for short list and map operations. The pool never closes a
// connection and never calls a waiter's callback while holding it: victims
// and deliveries are collected under the lock and acted on after it is
// released. The exception is [Conn.Alive], which is called under the lock and
// must therefore be a cheap, non-blocking probe.
//
// # Typical use from a shard
//
//	if c, ok := pool.Get(key); ok {
//		// send on c; afterwards Put, Pin or Closed
//	} else if pool.TryReserve(key) {
//		// dial off the shard, then Dialed(key) or DialFailed(key)
//	} else {
//		w, err := pool.Wait(key, deadline, func(g poolset.Grant[*upstream]) {
//			// post g to the shard's inbox; do not block here
//		})
//		// on err: fail the request; later w.Cancel() if the request goes away
//	}
//
// Blocking callers use [Pool.Acquire], which does the same with a context.
package poolset
