// Package engine is the public library surface that HTTP proxies embed to
// talk to origin servers and parent proxies.
//
// An [Engine] is built from a [Config] and runs a set of event-loop shards
// (package shard) over one shared persistent-connection pool (package
// poolset). Each upstream connection is a conn.Conn (package conn): a
// netpoll connection for plain TCP, Go net and crypto/tls for TLS
// upstreams and connections through CONNECT tunnels.
//
//   - [Engine.Send] sends one request and streams the response into a
//     caller-supplied [Sink], asynchronously, with backpressure: a sink that
//     blocks holds the exchange, and a large body then moves the connection
//     to blocking I/O so that the kernel, not our memory, absorbs it.
//   - [Engine.Do] is the blocking form: it returns a [Response] whose Body
//     streams through a bounded hand-off pipe.
//   - [Engine.Transport] adapts the engine to net/http as an
//     http.RoundTripper, for httputil.ReverseProxy or an http.Client.
//   - [Engine.Stats] reports, per upstream, the pool's gauges and counters
//     and the engine's request counters.
//   - [Upstream.TLS] (a [TLS]) speaks TLS to an upstream: SNI, CA bundle or
//     system roots, client certificates, per-upstream session resumption;
//     [Upstream.Via] reaches it through a CONNECT tunnel opened by a
//     [Parent].
//   - [Engine.Tunnel] opens a CONNECT tunnel (direct or through a parent)
//     for the caller to relay with [Relay].
//   - [Engine.Upgrade] sends a request that asks to switch protocols (a
//     WebSocket handshake) and, after a 101, hands the upstream connection
//     to the caller, to relay with [Relay].
//
// Requests name their upstream by a resolved address ([Upstream]), or
// name a peer group ([GroupConfig]: origins or parent proxies, a balancer
// from package balance, passive and active health, [Engine.DrainPeer]);
// the engine does no DNS. The engine needs GOMAXPROCS ≥ 2: netpoll's poller
// stalls at 1, and New logs a warning.
//
// # Where a request runs
//
// Send posts the request to a shard's inbox (hop 1). The shard finds a
// connection (pinned session, idle pool connection, dial on the dial
// worker pool, or a pool wait) and hands the exchange to an exchange
// worker (hop 2), which writes the request and blocks in netpoll's reader
// while the sink consumes the response. The worker posts the result back
// to the shard (hop 3), which returns, pins or closes the connection,
// decides on a stale-connection retry, and calls Sink.OnDone. Do adds one
// more hand-off per body piece: from the worker to the goroutine reading
// Response.Body.
//
// # Authentication and pinned connections
//
// Config.Auth (per upstream) or Request.Auth (per request) says how a
// request authenticates to the origin (401) and to a parent proxy (407):
// no credentials, the engine's own (answered by the engine for Basic and
// Digest, optionally preemptive Basic), or the client's passed through.
// A challenge the engine answers never reaches the sink; any other goes
// back unchanged. NTLM and Negotiate handshakes pin the connection to
// Request.PinKey: later requests with the key use it or fail with
// ErrPinnedGone, Config.OnPinnedClosed reports an idle pinned connection
// that closed, Pinned reports a live session, and Unpin ends one. See
// docs/auth.md.
//
// # Shutdown
//
// Drain stops accepting requests and waits for those in flight; Close
// also aborts them (their contexts end, which closes their connections).
// Both then close the shards, the worker pools and the pool.
package engine
