package conn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/serverside-go/serverside/parser"
)

// Defaults applied to zero Config fields.
const (
	DefaultBodyHighWater         = 1 << 20
	DefaultResponseHeaderTimeout = 60 * time.Second
	DefaultExpectContinueTimeout = time.Second
	DefaultWriteTimeout          = 60 * time.Second
	DefaultReadTimeout           = 60 * time.Second
)

// Config tunes exchanges. The zero value of every field selects its
// default.
type Config struct {
	// BodyHighWater is how many bytes netpoll may hold buffered while a
	// response body streams before the connection is detached to blocking
	// Go net I/O. Default 1 MiB.
	BodyHighWater int
	// ResponseHeaderTimeout bounds the wait for the final response head
	// after the request was written. Default 60s.
	ResponseHeaderTimeout time.Duration
	// WriteTimeout bounds each write of the request. Default 60s.
	WriteTimeout time.Duration
	// ReadTimeout bounds each wait for response body bytes. Default 60s.
	ReadTimeout time.Duration
}

func (c Config) normalized() Config {
	if c.BodyHighWater <= 0 {
		c.BodyHighWater = DefaultBodyHighWater
	}
	if c.ResponseHeaderTimeout <= 0 {
		c.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	return c
}

// Exchange is one request to send.
type Exchange struct {
	// Head is the parsed client request head; Edits (may be nil) says how
	// the forwarded head differs. RoundTrip only reads Edits: the body
	// framing, from Body and ContentLength, goes into the connection's
	// copy, and so does "Connection: keep-alive" when the forwarded head
	// would carry no Connection field (not for CONNECT).
	Head  *parser.Request
	Edits *parser.Edits
	// Body is the request body, nil for none. ContentLength is its length,
	// or -1 when unknown: the body is then sent chunked. Exactly
	// ContentLength bytes are read from Body, never more (see
	// ErrBodyLength); 0 sends none. A body small enough to go out with
	// the head is read whole first; when that write sends nothing (the
	// upstream's close was seen first), or the exchange fails after it
	// before any response byte, Body is set to a reader of the bytes
	// read, and the Error's BodyRead is false.
	Body          io.Reader
	ContentLength int64
	// ExpectContinueTimeout is how long to wait for "100 Continue" before
	// sending the body of a request with "Expect: 100-continue"; zero
	// means DefaultExpectContinueTimeout.
	ExpectContinueTimeout time.Duration
	// Config tunes the exchange.
	Config Config
	// Abort, when set, aborts the exchange from another goroutine: its
	// Abort closes the connection, and the exchange fails with ErrAborted
	// (see Abort).
	Abort *Abort
}

// Sink receives a response. Its methods run on the goroutine running
// RoundTrip; a sink that blocks holds the exchange, which is the
// backpressure.
type Sink interface {
	// OnHead receives the final response head. The views it returns are
	// valid only during the call. An error aborts the exchange.
	OnHead(resp *parser.Response) error
	// OnBody receives the next piece of body, valid only during the call.
	// An error aborts the exchange.
	OnBody(p []byte) error
}

// InterimSink is implemented by a Sink that also takes the interim (1xx)
// responses before the final one: 100 Continue, 102 Processing, 103 Early
// Hints, and any other 1xx but 101 (which is final: the connection
// switches protocols). A proxy must forward them (RFC 9110 §15.2); a
// sink without the method never sees them. The views are valid only
// during the call; an error aborts the exchange.
type InterimSink interface {
	OnInterim(resp *parser.Response) error
}

// Outcome describes a finished exchange, successful or not.
type Outcome struct {
	Status    int   // final status; 0 if none arrived
	BodyBytes int64 // body bytes handed to the sink
	Reused    bool  // the connection had served an exchange before
	Written   bool  // request bytes reached the socket
	BodyRead  bool  // bytes were asked of the request body (Exchange.Body)
	Responded bool  // at least one response byte arrived
	Detached  bool  // the body was finished on Go net I/O
	Recovered int64 // bytes taken out of netpoll's buffer after the detach
	// BodySkipped reports a request answered with a final status before
	// its body was sent, or all of it ("Expect: 100-continue" refused, an
	// early 413); BodyRead tells whether any of it was read.
	BodySkipped bool
	// KeepAliveHint is the response's "Keep-Alive: timeout=N", 0 if none,
	// and KeepAliveNoIdle for timeout=0.
	KeepAliveHint time.Duration
	// Ended is when the final response's last byte was found read from
	// the socket (in the piece the sink is about to take, or, for a
	// Content-Length body, buffered behind it), before that sink call;
	// zero when the response was not read whole. The upstream's idle
	// timer started about when it sent that byte, so the pool counts a
	// connection's idle time from here (poolset.PutInfo.Ended), not from
	// its return, which a slow sink delays.
	Ended time.Time
	// CloseAsked reports a final response, read whole, that did not allow
	// keep-alive to a request that did not ask to close itself: the
	// upstream asked to close ("Connection: close", an HTTP/1.0 response
	// without "keep-alive", a body delimited by the close).
	CloseAsked bool
}

// KeepAliveNoIdle is the Outcome.KeepAliveHint of a response that said
// "Keep-Alive: timeout=0": the upstream keeps the connection idle no time
// at all. It is negative, which poolset.PutInfo takes the same way.
const KeepAliveNoIdle time.Duration = -1

// RoundTrip sends ex and streams the response into sink, blocking the
// calling goroutine. It must be called on a Busy or Pinned connection, by one
// goroutine at a time. When ctx ends, the connection is closed to unblock
// the exchange. After RoundTrip, Reusable says whether the connection may
// carry another request.
func (c *Conn) RoundTrip(ctx context.Context, ex *Exchange, sink Sink) (out Outcome, err error) {
	c.noReuse = true
	c.last = Outcome{Reused: c.requests > 0}
	c.requests++
	c.sentBefore = c.wireSent()
	if s := c.State(); s != Busy && s != Pinned {
		return c.last, c.fail(PhaseWrite, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return c.last, c.fail(PhaseWrite, err)
	}
	// The context's end closes the connection: an Abortable keeps it in a
	// set, any other context is watched with context.AfterFunc, and one
	// that can never end (Done is nil) needs no watch.
	var stop func() bool
	ab, _ := ctx.(*Abortable)
	switch {
	case ab != nil:
		if !ab.watch(c) {
			return c.last, c.fail(PhaseWrite, ab.Err())
		}
	case ctx.Done() != nil:
		if c.closeFn == nil {
			c.closeFn = func() { _ = c.Close() }
		}
		stop = context.AfterFunc(ctx, c.closeFn)
	}
	if ex.Abort != nil && !ex.Abort.watch(c) {
		if ab != nil {
			ab.unwatch(c)
		} else if stop != nil {
			stop()
		}
		return c.last, c.fail(PhaseWrite, ErrAborted)
	}
	stopped, aborted, err := c.watched(ex, sink, ab, stop)
	if aborted {
		// Aborted by the caller: the connection is closed, or about to
		// be. A sink's error says the rest.
		c.noReuse = true
		if e := AsError(err); e != nil && !errors.Is(err, ErrSink) {
			e.Err = fmt.Errorf("%w: %w", ErrAborted, e.Err)
		}
	}
	if !stopped {
		// The context's watch has started closing the connection, maybe
		// not finished: it must never go back to the pool, where the late
		// close would kill the next request.
		c.noReuse = true
		if e := AsError(err); e != nil && !errors.Is(err, ErrSink) {
			e.Err = fmt.Errorf("%w: %w", ctx.Err(), e.Err) // report why
		}
	}
	if err != nil {
		c.noReuse = true
	} else if c.g != nil && !c.noReuse {
		c.g.answeredAt.Store(nanotime())
	}
	return c.last, err
}

// watched runs the exchange and then ends the context's watch, also when
// the sink panics (the panic goes on up, to the shard's recovery): a watch
// left behind would keep the connection in the Abortable's set for the
// engine's lifetime, and one left in ex.Abort would have its Abort close
// the connection under a later exchange. stopped is false when the
// context's watch had already started closing the connection, aborted
// true when ex.Abort's had.
func (c *Conn) watched(ex *Exchange, sink Sink, ab *Abortable, stop func() bool) (stopped, aborted bool, err error) {
	defer func() {
		aborted = ex.Abort != nil && !ex.Abort.unwatch(c)
		switch {
		case ab != nil:
			stopped = ab.unwatch(c)
		case stop != nil:
			stopped = stop()
		default:
			stopped = true
		}
	}()
	return true, false, c.exchange(ex, sink)
}

// fail builds the *Error for the current exchange.
func (c *Conn) fail(p Phase, err error) *Error {
	if c.tlsState != nil && !c.last.Reused && !c.last.Responded && (p == PhaseWrite || p == PhaseAwaitHead) && remoteAlert(err) {
		// A TLS 1.3 server refuses a client certificate (or its absence)
		// after the client's side of the handshake is done: the first
		// exchange meets the alert, and the failure is the handshake's,
		// as it is with TLS 1.2.
		p = PhaseTLS
	}
	return &Error{Phase: p, Addr: c.addr, Reused: c.last.Reused, Written: c.last.Written,
		Delivered: c.delivered(), BodyRead: c.last.BodyRead, Responded: c.last.Responded, Err: err}
}

// remoteAlert reports err carrying a TLS alert the peer sent: crypto/tls
// reports one as a *net.OpError whose Op is "remote error".
func remoteAlert(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}

// Reusable reports whether the last exchange left the connection fit for
// another request, as Pingora's reuse(): it completed without error, the
// response allows keep-alive, the request did not ask to close, the body
// was fully read, nothing extra is buffered, the body was not skipped
// after an early final status, and the connection was not detached.
func (c *Conn) Reusable() bool {
	if !c.Keepable() || c.isClosed() {
		return false
	}
	if c.g != nil {
		return c.g.r == c.g.w
	}
	return c.nc.IsActive() && c.nc.Reader().Len() == 0
}

// Keepable reports whether the last exchange, by itself, left the
// connection fit for another request: Reusable without the look at the
// connection (closed, bytes buffered on it). A keepable connection that is
// not Reusable was closed, or written to, by the upstream after its
// response: the pool's liveness check on return refuses it, and counts it
// as dead rather than as closed by its owner.
func (c *Conn) Keepable() bool {
	return !c.noReuse && !c.detached.Load()
}

// LastOutcome returns the outcome of the last exchange.
func (c *Conn) LastOutcome() Outcome { return c.last }
