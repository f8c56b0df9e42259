// Package conn implements one upstream connection.
//
// A [Conn] is one connection to an upstream: plain TCP dialed with netpoll
// ([Dial]), or a Go net connection from the start ([DialTLS], [ClientTLS],
// [NewGo]: TLS, which netpoll lacks, and connections through CONNECT
// tunnels), which runs the same exchange code over blocking reads from its
// own buffer, the way a detached connection finishes its body. It has an
// explicit state machine ([State]: connecting, idle, busy, pinned, closing,
// closed) whose every change goes through one validating transition
// function, and it makes the keep-alive decision after each exchange
// ([Conn.Reusable]).
//
// # Exchanges: the caller's goroutine blocks
//
// [Conn.RoundTrip] runs one request/response exchange on the calling
// goroutine ("mapping C" of the netpoll notes): it writes the head with one
// netpoll Write from a bytebufferpool buffer (never Malloc/WriteBinary, which
// panic after a close in netpoll v0.7.2), streams the body, then blocks in
// netpoll's Reader (Peek waits for bytes, bounded by SetReadTimeout) while the
// parser consumes the head incrementally. No OnRequest handler is installed,
// so netpoll never runs our code on its goroutines, and only the goroutine
// running RoundTrip reads the connection. Callers (the shards) run RoundTrip
// on an ants worker, never on a shard goroutine.
//
// # Memory bound: detaching from netpoll
//
// netpoll reads without backpressure: its poller drains the socket into
// memory whatever the consumer does. While a body streams to a slow sink,
// RoundTrip watches the bytes netpoll has buffered; above the high-water mark
// ([Config.BodyHighWater], 1 MiB by default) it slices out what is buffered,
// detaches the connection from the poller (netpoll's Detach, which
// deregisters the fd without closing it), recovers any bytes the poller read
// between the slice and the detach, and continues on blocking Go net I/O over
// the same fd (os.NewFile + net.FileConn). Blocking reads give TCP
// backpressure back: the kernel window closes when the sink is slow. A
// detached connection is closed after its response; Outcome.Detached reports
// it.
//
// That check runs between sink calls, but a sink may block inside one call
// (OnHead writing to a stalled client, OnBody, or an InterimSink's
// OnInterim while the final response arrives) while the poller keeps
// reading. So while a response is delivered, a watchdog timer (watch.go)
// looks at the buffer at a period that follows the arrival rate (1 to 20 ms):
// when a sink call is running and more than the high-water mark is buffered,
// it takes the fd off the poller at once, and the exchange adopts it after
// the call. The buffered bytes are then bounded by the high-water mark plus
// what arrives in one period, whatever the body's framing.
//
// Why no byte is lost (netpoll v0.7.2): without an OnRequest handler,
// Detach runs the close callbacks synchronously on the caller. One of them
// frees the fd operator, which spins until the poller is not inside a read of
// this fd and then marks the operator unused, so a read event still queued
// in the poller's current batch is skipped. When Detach returns no poller
// goroutine touches the input buffer again. closeBuffer leaves a non-empty
// input buffer alone (no OnRequest), so the bytes read in the window are
// still there to be taken out, in order, before the first Go net read.
//
// # Tunnels
//
// [Connect] asks a parent proxy for a CONNECT tunnel and parses its answer
// ([ConnectKeep] may leave a refused CONNECT's connection open, to answer
// a 407 on it); a [TunnelConn] keeps the bytes that came after a 2xx head. [Relay] copies
// between two connections both ways (splice between TCP connections),
// passes half-closes on and ends on an idle timeout.
//
// # Errors
//
// Every failure is an [*Error] naming the [Phase] it happened in, the
// upstream, whether the connection had been used before, and whether request
// bytes were written and response bytes received: what a retry policy needs.
// A parser rejection is PhaseProtocol wrapping the parser's rule.
package conn
