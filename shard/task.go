package shard

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/parser"
	"github.com/serverside-go/serverside/poolset"
)

// Errors a task may finish with (inside a *conn.Error when a phase
// applies).
var (
	// ErrPinnedGone reports a request for a pinned session whose
	// connection is closed. Nothing was
	// sent: the session is over, and the caller decides (typically by
	// closing its client connection).
	ErrPinnedGone = errors.New("shard: pinned connection gone")
	// ErrOverloaded reports a full worker pool or too many pending
	// requests; nothing was sent.
	ErrOverloaded = errors.New("shard: overloaded")
	// ErrClosed reports a request submitted to a closed Set.
	ErrClosed = errors.New("shard: closed")
	// ErrResend is what a Task's Run returns (wrapped) to have the task
	// sent again on another connection: it answered an authentication
	// challenge on a connection that cannot carry the next request. It
	// never reaches Done.
	ErrResend = errors.New("shard: resend on another connection")
)

// Task is one request travelling through a shard. The caller fills the
// exported fields and hands it to Set.Submit; it must not touch the task
// afterwards, until Done.
type Task struct {
	// Ctx bounds the whole request; when it ends the request fails.
	Ctx context.Context
	// Key is the upstream the request goes to.
	Key poolset.Key
	// Exchange is the request to send (head, edits, body).
	Exchange conn.Exchange
	// GetBody returns a fresh copy of the body for a retry; nil when the
	// body cannot be replayed once read (one not read yet is sent as it
	// is, and so is a small one that went out with the head and that conn
	// handed back in Exchange.Body, the exchange having failed before any
	// response byte).
	GetBody func() (io.Reader, error)
	// PinKey names a pinned session; zero for none. Pin asks that the
	// connection be pinned to PinKey after a reusable exchange (the seam
	// for connection-based authentication).
	PinKey uint64
	Pin    bool
	// PinScope is, for a request through a parent proxy, the authority
	// of the origin it names (lower case); empty otherwise. PinOrigin,
	// with Pin, says that the handshake is that origin's, through the
	// parent, not the parent's own: the parent tied its connection to
	// that origin (Proxy-Support: Session-Based-Authentication) and
	// refuses a request for another site on it (Squid answers 503 and
	// closes it), so the session takes only the requests with its
	// PinScope. Those for another site go as any other request.
	PinScope  string
	PinOrigin bool
	// Sink receives the response, on an exchange worker.
	Sink conn.Sink
	// Run, when set, runs each attempt in place of the plain exchange
	// (c.RoundTrip of Exchange into Sink), on the goroutine doing the
	// exchange: the engine answers authentication challenges there, on
	// the same connection. It may change Exchange and set Pin and
	// Isolate; the shard reads them once the attempt has finished. An
	// error wrapping ErrResend sends the task again on another connection
	// (never for a pinned task: Run must not ask for it then).
	Run func(ctx context.Context, c *conn.Conn, t *Task) (conn.Outcome, error)
	// Isolate keeps the connection out of the shared pool after the
	// exchange: it carries a client's connection-based authentication
	// (NTLM, Negotiate) and is pinned to PinKey, or closed without one.
	Isolate bool
	// Switch hands the connection to the caller after a 101 Switching
	// Protocols, in Switched, instead of closing it: the request asked
	// for an upgrade (RFC 9110 §7.8). A pinned session's connection is
	// handed over too, and the session ends (its later requests fail
	// with ErrPinnedGone). A 101 whose connection cannot be handed over
	// (the task's context ended first) fails the task.
	Switch bool
	// Switched is the upstream connection after a 101 to a Switch task,
	// set before Done; the caller relays it and closes it, which frees
	// its place under the key's connection cap.
	Switched *conn.TunnelConn
	// PendingTimeout, when positive, bounds this task's wait for a
	// connection instead of the Set's PendingTimeout (a peer's own queue
	// deadline).
	PendingTimeout time.Duration
	// Reroute, when set, is called on the shard goroutine (or on
	// RunInline's caller, whose task it is until posted) after a dial of
	// Key failed, or Key was drained before the task had a connection
	// (the request's context still live): nothing was sent, so the
	// request may go elsewhere; or after a new connection to Key was
	// closed or reset before any response byte, or no response byte came
	// within the response-header timeout, and the request may be sent
	// again. It reports true after pointing the
	// task at another upstream (Key, and Exchange.Edits as that upstream
	// needs), which the shard then starts afresh; false to fail the task
	// with err. It must not block.
	Reroute func(t *Task, err error) bool
	// Dialer, when set, makes the task's new connections (TLS, tunnels
	// through a parent); nil dials plain TCP with netpoll. Its Dial runs
	// on the dial pool.
	Dialer Dialer
	// Pipeline, when above 1, lets the request be pipelined (RFC 9112
	// §9.3.2) with up to Pipeline requests outstanding on one connection
	// to Key, for an upstream known to answer pipelined requests: a GET or
	// HEAD without a body, not pinned, without Run, Switch or Dialer,
	// under a context that is a *conn.Abortable (one the caller cannot
	// cancel alone; cancelling a pipelined request would close its
	// neighbours' connection). A pipelined request whose connection ends
	// before its response is sent again on another connection, once.
	Pipeline int
	// Done is called exactly once, after the connection was put back,
	// pinned or closed: on the shard goroutine, or on the caller's for a
	// Set that is already closed. It must not block.
	Done func(error)

	ctr      *Counters
	attempts int
	fresh    bool // skip idle connections: a retry after a stale one
	waiter   *poolset.Waiter[*conn.Conn]
	stopWait func() bool // stops the context watch while waiting
	pinned   bool        // running on a pinned session's connection
	resent   bool        // sent again after an answered challenge (ErrResend)
}

// Pinned reports that the attempt runs on a pinned session's connection;
// Run reads it.
func (t *Task) Pinned() bool { return t.pinned }

// Counters returns the task's upstream counters, once submitted or run.
func (t *Task) Counters() *Counters { return t.ctr }

// Dialer makes new connections for a key whose connections are not plain
// TCP: a TLS origin, an origin behind a CONNECT tunnel. Dial blocks (it
// runs on the dial pool) and returns a Busy connection.
type Dialer interface {
	Dial(ctx context.Context, addr string) (*conn.Conn, error)
}

// Retried reports that t was sent again after a stale connection or an
// answered challenge (ErrResend), which
// hands it to a shard. Read it after Done: a task Submitted, or Retried
// after RunInline, may still be named by a late event on its shard after
// Done, while one RunInline ran without a retry is referenced by nothing.
func (t *Task) Retried() bool { return t.fresh || t.resent }

// fragile reports a request that might not go again after meeting a stale
// connection's close: one not idempotent (nor made safe by an
// Idempotency-Key), which goes again only when the upstream's TCP shows it
// never received it, or one whose body cannot be had again once read. Its
// connection from the pool is probed first (conn.Probe).
func (t *Task) fragile() bool {
	if t.Exchange.Body != nil && t.Exchange.ContentLength != 0 && t.GetBody == nil {
		return true
	}
	return !t.Exchange.Edits.MethodID(t.Exchange.Head).Idempotent() && !hasIdempotencyKey(t.Exchange.Head, t.Exchange.Edits)
}

// replayable reports whether a failed attempt may be sent again.
func (t *Task) replayable(e *conn.Error, strict bool) bool {
	return e != nil && e.Reused && t.resendable(e, strict)
}

// resendable reports whether a request whose attempt failed before any
// response byte may be sent again: it is idempotent, or the upstream
// cannot have received it, and its body (if any) was not read or can be
// had again. The upstream cannot have received a request of which nothing
// was written, nor (unless strict) one its TCP acknowledged no byte of
// (conn.Error.Delivered).
func (t *Task) resendable(e *conn.Error, strict bool) bool {
	if t.pinned || e == nil || e.Responded {
		return false
	}
	received := e.Delivered || strict && e.Written
	idempotent := t.Exchange.Edits.MethodID(t.Exchange.Head).Idempotent() || hasIdempotencyKey(t.Exchange.Head, t.Exchange.Edits)
	hasBody := t.Exchange.Body != nil && t.Exchange.ContentLength != 0
	if !hasBody {
		return idempotent || !received
	}
	if t.GetBody == nil && e.BodyRead {
		return false // the body cannot be had again
	}
	return idempotent || !received
}

var (
	idempotencyKey  = []byte("Idempotency-Key")
	xIdempotencyKey = []byte("X-Idempotency-Key")
)

// hasIdempotencyKey reports a request whose forwarded head (h with its
// edits) carries an Idempotency-Key (or X-Idempotency-Key) field: its
// sender made it safe to receive twice, whatever its method, which is how
// RFC 9110 §9.2.2 allows a retry ("some means to know that the request
// semantics are actually idempotent"); net/http's Transport reads the
// field the same way. A key the forwarded head drops (one the client
// named in Connection, which makes it hop-by-hop) tells the upstream
// nothing, and does not count.
func hasIdempotencyKey(h *parser.Request, ed *parser.Edits) bool {
	return h != nil && (ed.Carries(&h.Header, idempotencyKey) || ed.Carries(&h.Header, xIdempotencyKey))
}
