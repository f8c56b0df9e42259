package conn

import (
	"errors"
	"io"
	"strings"
)

// Phase is the part of an exchange an error happened in.
type Phase uint8

// Phases.
const (
	PhaseDial      Phase = iota // connecting to the upstream
	PhaseWrite                  // writing the request head or body
	PhaseAwaitHead              // waiting for or reading the response head
	PhaseBody                   // reading the response body or handing it to the sink
	PhaseProtocol               // the upstream broke HTTP/1.1 (a parser rule)
	PhasePoolWait               // waiting for a connection from the pool
	PhaseTLS                    // the TLS handshake, certificate verification included
	PhaseTunnel                 // opening a CONNECT tunnel through a parent proxy
	numPhases
)

// NumPhases is the number of phases, for per-phase counters.
const NumPhases = int(numPhases)

var phaseNames = [numPhases]string{"dial", "write", "await-head", "body", "protocol", "pool-wait", "tls", "tunnel"}

// String names the phase.
func (p Phase) String() string {
	if p < numPhases {
		return phaseNames[p]
	}
	return "invalid phase"
}

// ErrConnectTimeout is wrapped by a dial that its timeout (the engine's
// ConnectTimeout) ended while the caller's context lasted: the upstream
// did not answer the connect in time. It is a net.Error whose Timeout is
// true.
var ErrConnectTimeout error = connectTimeout{}

type connectTimeout struct{}

func (connectTimeout) Error() string   { return "conn: connect timeout" }
func (connectTimeout) Timeout() bool   { return true }
func (connectTimeout) Temporary() bool { return true }

// Error is a failed dial or exchange.
type Error struct {
	// Phase is where the exchange failed.
	Phase Phase
	// Addr is the upstream address.
	Addr string
	// Reused reports that the connection had served an exchange before
	// this one: a failure before any response byte may then be the stale
	// keep-alive race rather than a broken upstream.
	Reused bool
	// Written reports that request bytes reached the socket: all or part
	// of a write (a netpoll write whose flush failed midway counts, since
	// it cannot tell how much went out, unless its first send failed).
	Written bool
	// Delivered reports that request bytes may have reached the upstream:
	// they were written, and the upstream's TCP acknowledged some of them
	// or that cannot be told (a tunnel, a socket already closed). Written without Delivered is a request the upstream never
	// received, not even into its socket: the stale keep-alive race,
	// where the upstream had closed the connection and answered the
	// request with a reset (acked.go).
	Delivered bool
	// BodyRead reports that bytes were asked of the request body: without
	// it, the body is untouched and can be sent again as it is.
	BodyRead bool
	// Responded reports that at least one response byte arrived.
	Responded bool
	// Err is the cause: a sentinel of this package, a parser rule (inside
	// a *parser.SyntaxError), a context error or a socket error.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("conn: ")
	b.WriteString(e.Phase.String())
	b.WriteString(" ")
	b.WriteString(e.Addr)
	if e.Reused {
		b.WriteString(" (reused)")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

type unexpectedEOF struct{}

func (unexpectedEOF) Error() string {
	return "conn: connection closed before the response was complete"
}

// Is matches io.ErrUnexpectedEOF, so that a caller checking for a
// truncated body as with net/http finds it.
func (unexpectedEOF) Is(target error) bool { return target == io.ErrUnexpectedEOF }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Sentinels, found with errors.Is inside an *Error.
var (
	// ErrClosed reports use of a connection that is closed or closing.
	ErrClosed = errors.New("conn: connection closed")
	// ErrHeaderTimeout reports that no complete response head arrived
	// within the response-header timeout.
	ErrHeaderTimeout = errors.New("conn: response header timeout")
	// ErrReadTimeout reports a body read that waited longer than the read
	// timeout for a byte.
	ErrReadTimeout = errors.New("conn: read timeout")
	// ErrUnexpectedEOF reports a close before the response was complete
	// (a body shorter than its Content-Length, a chunked body without its
	// last chunk). errors.Is matches it with io.ErrUnexpectedEOF too, the
	// error net/http's client gives for a truncated body.
	ErrUnexpectedEOF error = unexpectedEOF{}
	// ErrSink reports that the sink refused the response (its error is
	// wrapped too); the upstream is not at fault.
	ErrSink = errors.New("conn: sink aborted")
	// ErrBodyLength reports a request body that ended before its
	// ContentLength. Bytes past ContentLength are never read, so a longer
	// body is not an error: it is cut there.
	ErrBodyLength = errors.New("conn: request body length differs from ContentLength")
	// ErrRequestBody reports that reading the caller's request body
	// failed (its error is wrapped too): the caller's fault, not the
	// upstream's, even when the error is a reset (the client of a proxy
	// gone mid-upload), so it is never taken for a stale connection.
	ErrRequestBody = errors.New("conn: reading the request body failed")
	// ErrAborted reports an exchange ended by its Abort (Exchange.Abort):
	// the caller's doing (a proxy's client that reset its connection), so
	// it is never taken for a stale connection or sent again.
	ErrAborted = errors.New("conn: exchange aborted by its caller")
	// ErrUnrequestedSwitch reports a 101 Switching Protocols to a request
	// whose forwarded head offered no Upgrade (RFC 9110 §7.8, §15.2.2).
	ErrUnrequestedSwitch = errors.New("conn: 101 Switching Protocols to a request that offered no upgrade")
	// ErrSwitchHTTP10 reports a 101 Switching Protocols in an HTTP/1.0
	// response: protocol switching is HTTP/1.1's, and no server may send
	// a 1xx to an HTTP/1.0 peer (RFC 9110 §15.2).
	ErrSwitchHTTP10 = errors.New("conn: 101 Switching Protocols in an HTTP/1.0 response")
	// ErrUnofferedSwitch reports a 101 Switching Protocols whose Upgrade
	// names no protocol, or one the request did not offer (RFC 9110
	// §7.8: the server switches to protocols the client listed).
	ErrUnofferedSwitch = errors.New("conn: 101 Switching Protocols to a protocol the request did not offer")
	// ErrPeerReset reports an upstream connection reset (RST) by the peer
	// where only an orderly close would have ended the response.
	ErrPeerReset = errors.New("conn: connection reset by the upstream")
	// ErrTLSTruncated reports a TLS connection closed without a
	// close_notify alert where only the close could end the response (a
	// body delimited by the close): an attacker, or a failure, may have
	// cut it short, so it is not complete (RFC 9112 §9.8).
	ErrTLSTruncated = errors.New("conn: TLS connection closed without close_notify before a close-delimited body was known complete")
	// ErrNotHTTP1 reports an answer that does not begin as an HTTP/1.x
	// status line ("HTTP/"): an HTTP/2-only upstream answers an HTTP/1.1
	// request with its SETTINGS frame, for one. It is found from the
	// first bytes, without waiting for a line end that may never come.
	ErrNotHTTP1 = errors.New("conn: the upstream's answer is not HTTP/1.x")
	// ErrRelayNil reports a Relay called without one of its two
	// connections.
	ErrRelayNil = errors.New("conn: relay needs two connections")
	// ErrTooManyInterim reports an origin that sent more interim (1xx)
	// responses before a final one than any server needs to.
	ErrTooManyInterim = errors.New("conn: too many interim responses")
	// ErrNotNetpoll reports a connection whose type lacks Detach or Fd.
	ErrNotNetpoll = errors.New("conn: connection cannot be detached")
)

// CallerFault reports whether err is a failure on the caller's side of
// the exchange, not the upstream's: the sink refused the response
// (ErrSink: a proxy's client gone, say), or the request body could not be
// read whole (ErrRequestBody, ErrBodyLength), or the caller aborted the
// exchange (ErrAborted).
func CallerFault(err error) bool {
	return errors.Is(err, ErrSink) || errors.Is(err, ErrRequestBody) || errors.Is(err, ErrBodyLength) ||
		errors.Is(err, ErrAborted)
}

// AsError returns the *Error in err's chain, or nil.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	if e, ok := err.(*Error); ok {
		return e
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
