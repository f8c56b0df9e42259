// Package shard implements the engine's event-loop shards.
//
// Each shard owns its in-flight requests, its busy upstream connections, its
// timers and its pinned (NTLM/Negotiate) sessions, and mutates them only from
// its own goroutine, so that state needs no locks. Work arrives through an
// MPSC inbox: requests from callers, and results (dials, parsed reply events,
// errors) posted back by connection handlers and worker pools.
package shard
