// Package shard implements the engine's event-loop shards.
//
// A [Set] runs N shards (default GOMAXPROCS). Each [Shard] is one goroutine
// with an MPSC inbox: any goroutine posts events (new requests, dial
// results, pool grants, finished exchanges, cancellations) under a mutex
// into a slice, and a 1-buffered wake channel tells the shard; the shard
// swaps the slice out and handles the batch without holding the lock. The
// shard owns, and alone touches: its requests waiting for a connection, its
// pinned sessions (pin key → connection) and what its timers decide. The
// timers themselves fire elsewhere and only post into the inbox: a waiting
// request's pending deadline is the pool waiter's timer, and the end of a
// request's context is a context.AfterFunc. Nothing on a shard goroutine
// blocks: dials and exchanges run on ants workers, and the pool's lock is
// held only for short list operations.
//
// Requests of a pinned session always go to the shard that owns the
// session (pin key modulo N); other requests are spread round-robin.
//
// # The path of a request
//
// The shard's queue runner takes a request and, in order:
//
//  1. Pinned session? If the request names a pin key with a session for
//     its upstream, it runs on that session's connection. A session whose
//     connection is closed fails the request with ErrPinnedGone: it is
//     never silently re-sent on another connection. A session for another
//     upstream does not concern the request, which goes on.
//  2. An idle connection from the shared pool (poolset.Pool.Get: LIFO,
//     checked with Alive; for a request that might not go again after
//     meeting its close, Task.fragile, also with conn.Probe).
//  3. A dial permit (TryReserve): the dial runs on the "dial" ants pool,
//     submitted without blocking (when that pool is full, on a goroutine
//     of its own: a burst of new clients is not failed for want of a
//     worker), and its result is posted back to the inbox.
//  4. Otherwise the request waits (poolset.Pool.Wait) with the pending
//     deadline for a connection coming back (or, under a cap, a permit);
//     the grant is posted back to the inbox.
//
// With a connection in hand, the exchange runs on an "exchange" ants
// worker (conn.Conn.RoundTrip blocks on I/O and on the caller's sink), and
// its completion is posted back. The shard then decides: pool.Put with the
// connection's keep-alive information, pin it, or close it (pool.Closed).
//
// # Stale-connection retry
//
// An upstream may close a kept-alive connection just as we reuse it. A
// request that failed on a reused connection before any response byte
// arrived is sent again on a fresh connection when that is safe: an
// idempotent method (or a head with an Idempotency-Key field) without
// body, or with a body not read yet, one the caller can replay (GetBody),
// or a small one sent with the head that conn handed back in
// Exchange.Body (the exchange failed before any response byte); a
// non-idempotent
// request is never replayed once the upstream
// may have received it: bytes were written, and TCP cannot show that the
// upstream had closed the connection before any reached it
// (conn.Error.Delivered), or Config.StrictResend is set. Retries are bounded by Config.MaxRetries, and each upstream
// counts the races hit and retried. A retry skips the idle list (an idle
// connection is as old as the one that failed); a connection the pool
// hands to a waiting retry is used, since it has just completed an
// exchange. Timeouts, sink failures and request-body failures are never
// taken for the race.
//
// # Another upstream after a failed dial or a drain
//
// A task with a Reroute hook (the engine sets one for requests to a peer
// group) that fails to connect, or whose key is drained before it had a
// connection (poolset.ErrDraining, while it waited or as it asked), is
// offered to the hook: nothing was sent, so the hook may point the task at
// another upstream (Key and edits), and the shard starts it again there;
// the failed key counts a retry. So is a task whose new connection the
// peer closed or reset before any response byte, or that got no response
// byte within the response-header timeout, when sending it again is safe
// (the stale-race rules without the reuse: one that was written goes
// again only within MaxRetries); the hook may decline (the engine does
// for a parent's timeout, which says nothing of the parent).
package shard
