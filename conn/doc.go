// Package conn implements one upstream connection.
//
// Plain TCP connections use netpoll; TLS connections and CONNECT tunnels use
// Go net and crypto/tls behind the same interface. Each connection follows an
// explicit state machine (connecting, idle, busy, pinned, closing), and this
// package makes the keep-alive decision after each reply: close, pool or pin.
package conn
