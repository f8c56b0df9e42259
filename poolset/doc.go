// Package poolset implements the single lock-protected shared pool of
// persistent upstream connections.
//
// Connections are keyed by upstream identity: address, TLS identity, parent
// proxy or tunnel, and credential scope. The pool is generic over the
// connection type. It hands out the most recently used connection first
// (LIFO), expires idle ones, enforces caps, and queues waiters when full.
package poolset
