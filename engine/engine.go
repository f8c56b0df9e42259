package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/serverside-go/serverside/conn"
	"github.com/serverside-go/serverside/parser"
	"github.com/serverside-go/serverside/poolset"
	"github.com/serverside-go/serverside/shard"
)

// Errors returned by Send and Do (request outcomes are *conn.Error values
// naming the phase; see package conn). A caller's context that ends
// before the response head is the context's own error (context.Canceled
// or context.DeadlineExceeded) from Do and the Transport, and from Send
// and Exchange a *conn.Error naming the phase that errors.Is matches with
// it. After the head, a read of the Transport's response body that the
// context's end cut short returns the context's own error too, as
// net/http's does; Do's Response.Body returns an error that
// errors.Is matches with it.
var (
	// ErrClosed reports a request to an engine that is closed or draining.
	ErrClosed = errors.New("engine: closed")
	// ErrNoGroup reports a request naming a peer group the engine does
	// not have (see Config.Groups and SetGroup).
	ErrNoGroup = errors.New("engine: no such peer group")
	// ErrNoPeer reports a request to a group none of whose peers can take
	// it: every peer is down (and not yet due for a probe) or draining, or
	// a peer name that is not in the group. Nothing was sent.
	ErrNoPeer = errors.New("engine: no peer available")
	// ErrBadConfig reports a Config or GroupConfig that New or SetGroup
	// refused: a value with no meaning, such as a negative count or
	// duration where none is documented, or a peer address without a port.
	ErrBadConfig = errors.New("engine: invalid config")
	// ErrBadRequest reports a Request the engine cannot send (no parsed
	// head, no upstream address, no Sink, a nil context); nothing was
	// sent.
	ErrBadRequest = errors.New("engine: invalid request")
	// ErrPinnedGone is shard.ErrPinnedGone: the pinned session's
	// connection is gone; the request was not sent.
	ErrPinnedGone = shard.ErrPinnedGone
	// ErrOverloaded is shard.ErrOverloaded: a worker pool or the pending
	// queue is full; the request was not sent.
	ErrOverloaded = shard.ErrOverloaded
	// ErrPoolTimeout is poolset.ErrPoolTimeout: the request waited its
	// PendingTimeout for a connection to its upstream (at the cap of
	// MaxConnsPerUpstream) and none came; nothing was sent.
	ErrPoolTimeout = poolset.ErrPoolTimeout
	// ErrQueueFull is poolset.ErrQueueFull: as many requests as the
	// upstream's pending bound allows already wait for a connection; the
	// request was refused at once and nothing was sent.
	ErrQueueFull = poolset.ErrQueueFull
)

// Upstream names where a request goes.
type Upstream struct {
	// Addr is the resolved ip:port of the origin or parent proxy: the
	// engine does no DNS of its own. (A host name still works: the dial
	// hands it to Go's resolver, on the dial pool, at every dial, with
	// no caching and only its first working address used. The pool key
	// is the name, so resolve it yourself to balance over its addresses
	// or to follow their changes.)
	Addr string
	// Group names a peer group to pick the upstream from instead of Addr
	// (see GroupConfig); a name the engine does not know fails with
	// ErrNoGroup.
	Group string
	// HashKey is what a group with the hash balancer hashes to choose a
	// peer (the request's host, a client address); empty means the Host
	// field.
	HashKey string
	// TLS, when set, speaks TLS to the upstream (an https origin); see
	// TLS. Its SNI, verification policy and client certificate are part
	// of the pool key.
	TLS *TLS
	// Via, when set, reaches Addr through a CONNECT tunnel opened by this
	// parent proxy (then TLS, when TLS is set: an https origin behind a
	// parent). Addr is then the CONNECT target, which the parent resolves;
	// the connections pool under a key holding both the parent and Addr
	// (and the parent credentials' hash).
	Via *Parent
	// ViaGroup, instead of Via, reaches Addr through a CONNECT tunnel
	// opened by a parent of this peer group, picked by the group's
	// balancer (on HashKey, default Addr). The request counts in that
	// parent's passive health as one sent to it in absolute form: a
	// failed connect to the parent (TCP or TLS) or a CONNECT it drops
	// unanswered counts against it, and moves the request to another
	// parent of the group that it has not tried, nothing of it having
	// been sent; any answer to the CONNECT (a refusal included) and any
	// response through the tunnel count for it. What happens past the
	// tunnel (the origin's TLS, the origin's answer) says nothing of the
	// parent. A request of a pinned session whose connection goes to
	// Addr through a parent's tunnel (an origin's NTLM login) goes
	// through that parent, whatever the balancer would pick. A group the
	// engine does not have fails with ErrNoGroup; with Group or Via set
	// too, ErrBadRequest.
	ViaGroup string
	// Pipeline pipelines requests to a plain HTTP Addr (no TLS, no Via)
	// as Peer.Pipeline does to a peer: GETs and HEADs without a body, up
	// to Pipeline outstanding on a connection. With Group the peer's own
	// Pipeline applies instead. Zero or 1: no pipelining.
	Pipeline int
}

// Request is one request to send upstream.
type Request struct {
	Upstream
	// Head is the parsed request head, Edits (optional) how the forwarded
	// head differs. The engine only reads Edits (it adds the body framing
	// to a copy, and "Connection: keep-alive" when the forwarded head
	// would carry no Connection field, which asks Apache for its idle
	// timeout), so one Edits may serve many requests, also at once. A
	// framing field (Content-Length, Transfer-Encoding) set in Edits is
	// replaced by the framing of Body and ContentLength.
	Head  *parser.Request
	Edits *parser.Edits
	// Body is the request body, nil for none; ContentLength its length, or
	// -1 when unknown (the body is then sent chunked). Exactly
	// ContentLength bytes are read from Body, never one more, so Body may
	// be a client connection's reader: a longer Body is cut there
	// unnoticed, the rest left unread, and a shorter one fails the request
	// (conn.ErrBodyLength). 0 sends no body, whatever Body holds (net/http
	// takes 0 with a Body for unknown). A final response that comes while
	// the body goes out ends it: the rest is not sent. It is seen between
	// Reads, or during one that waits for bytes when Body implements
	// conn.AnswerWatcher (the demo's client body reader does): then a
	// client that pauses its upload still gets the upstream's early answer.
	Body          io.Reader
	ContentLength int64
	// GetBody returns a fresh copy of the body, allowing a request with a
	// body to be retried after a stale connection; nil when not possible.
	// Without it, only a request whose body was not read yet is retried
	// (one with "Expect: 100-continue" that met the stale connection
	// while waiting for the 100): the body goes as it is; or one whose
	// body, of up to 16 KiB, went out whole with the head, whose bytes
	// the engine keeps until a response byte comes.
	GetBody func() (io.Reader, error)
	// PinKey names a pinned session (a client connection authenticated
	// with NTLM/Negotiate, say); zero for none. A request with the key of
	// a session runs on that session's connection, or fails with
	// ErrPinnedGone when it is gone; one for another upstream than the
	// session's goes as any other request. Pin asks that the connection
	// be pinned to PinKey after this exchange, starting a session.
	PinKey uint64
	Pin    bool
	// Abort, when set, lets the caller abort the request from another
	// goroutine without a context, at no cost per request: a proxy keeps
	// one per client connection and aborts when that client resets its
	// connection. Its Abort closes the upstream connection the request is
	// exchanging on (never pooled then), and the request fails with an
	// error wrapping ErrAborted, counted in Stats' CallerErrors and never
	// sent again; every later request under it fails that way at once,
	// uncounted, with nothing dialed or sent. A request waiting for a connection is not woken:
	// it fails once it has one. A pipelined request is not aborted (its
	// connection carries other requests).
	Abort *Abort
	// Auth, when set, is how the engine authenticates this request (see
	// Auth); otherwise Config.Auth decides. Connection-based handshakes
	// (NTLM, Negotiate) pin the connection to PinKey whatever Auth says.
	Auth *Auth

	peer *peer // an active health check's own peer
	// tlsHost, set by Transport, is the URL's host: the server name when
	// TLS.ServerName is empty, in place of the Host field, which may be
	// another name (the client's, that httputil.ReverseProxy forwards),
	// while net/http verifies the URL's host.
	tlsHost string
}

// Abort aborts the request running under it (Request.Abort); the zero
// value is ready to use. See conn.Abort.
type Abort = conn.Abort

// ErrAborted is wrapped by the error of a request ended by its
// Request.Abort.
var ErrAborted = conn.ErrAborted

// Sink receives a response as it streams. OnHead and OnBody run on the
// goroutine doing the exchange (an exchange worker, or the caller's own in
// Exchange's inline path), one call at a time; blocking in them is the
// backpressure. OnDone runs once, last (on a shard goroutine, or on the
// caller's in the inline path), and must not block. An error from OnHead
// or OnBody (a proxy's client gone) aborts the exchange: the connection
// closes, the request fails with an error wrapping conn.ErrSink and the
// sink's, and it counts in Stats' CallerErrors, not against the upstream.
type Sink interface {
	// OnHead receives the final head; views are valid during the call.
	// (A Sink that is also an InterimSink gets the 1xx heads before it.)
	OnHead(resp *parser.Response) error
	// OnBody receives the next piece of body, valid during the call.
	OnBody(p []byte) error
	// OnDone reports the end: nil after a complete response.
	OnDone(err error)
}

// InterimSink is implemented by a Sink that also takes the interim (1xx)
// responses that come before the final head: 100 Continue, 102, 103 Early
// Hints (101 is final). A proxy must forward them to its client (RFC 9110
// §15.2), unless it asked for them itself; a Sink without OnInterim never
// sees them. OnInterim runs like OnHead; the views are valid only during
// the call, and an error aborts the exchange.
type InterimSink = conn.InterimSink

// SessionSink is implemented by a Sink that wants to know whether its
// exchange runs on the connection pinned to its request's PinKey: then
// OnPinnedConn is called before OnHead, and a response that closes its
// connection ends the session. (A request with a session's key can go
// elsewhere, to another upstream, where such a close ends nothing; during
// that exchange, Engine.Pinned still reports the session live.) It is
// called too for a request with a PinKey whose NTLM or Negotiate
// credentials (a handshake message) go on a connection not pinned yet,
// which the exchange pins: a response that closes that connection (a
// Type 2 challenge with "Connection: close") ends the handshake, which
// can only start over on a new connection.
type SessionSink interface {
	Sink
	OnPinnedConn()
}

// AuthSink is implemented by a Sink that relays responses to a client and
// wants to know which of the upstream's authentication fields are the
// client's business. OnAuth is called before OnHead when the note says
// anything: a sink not told may take the zero AuthNote.
type AuthSink interface {
	Sink
	OnAuth(AuthNote)
}

// AuthNote says whose credentials a request carried to the upstream that
// answers it.
type AuthNote struct {
	// ClientProxy: to a parent (a request in absolute or authority form),
	// the request's Proxy-Authorization is passed through
	// (LoginPassThrough, a parent without credentials of its own). Only
	// then are the parent's Proxy-Authenticate (on a 407) and
	// Proxy-Authentication-Info the client's: otherwise its answer would
	// never reach the parent, and a proxy relays a 407 without its
	// challenge (RFC 9110 §11.7.1, §11.7.3: they are for the next
	// outbound client), as Squid does for a cache_peer without
	// login=PASSTHRU, rather than have the client answer in a loop.
	ClientProxy bool
	// OwnOrigin: the request carried the engine's own Authorization
	// (LoginOwn), in place of any of the client's. The response's
	// Authentication-Info is about the engine's login: its rspauth,
	// cnonce and nc, with a nonce the client may have seen in a 401
	// passed on, let the client test guesses of the password offline.
	OwnOrigin bool
}

// Engine sends requests upstream over pooled connections.
type Engine struct {
	cfg    Config
	pool   *poolset.Pool[*conn.Conn]
	shards *shard.Set
	stats  shard.Registry
	root   *conn.Abortable // ends when the engine aborts its requests
	tls    tlsState
	// defaultTLS is Transport's TLS for https:// URLs: the system roots.
	defaultTLS *TLS
	// goNet dials plain-TCP upstreams on Go net (Config.GoNetIO).
	goNet *upstreamDialer
	// sessions maps the pin key of each pinned session to its pool key,
	// so that a group routes the session's requests to its peer, or to
	// goneSession once its connection is gone, so that they fail.
	sessions sync.Map // uint64 -> poolset.Key or goneSession

	requests sync.Pool   // *request, recycled by Exchange
	digests  digestCache // Digest challenges answered, for later requests
	tpins    tunnelPins  // parent connections pinned between CONNECTs
	groups   atomic.Pointer[groupsMap]
	// peersMu serializes SetGroup, DrainPeer and UndrainPeer: a drain
	// must not fall between SetGroup's reading of a group's drains and
	// its swap of the group (held before mu).
	peersMu sync.Mutex

	mu       sync.Mutex
	closed   bool
	inflight int
	idle     chan struct{} // closed when inflight reaches zero after closed
	once     sync.Once
}

// New starts an engine.
func New(cfg Config) (*Engine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.normalized()
	if n := runtime.GOMAXPROCS(0); n < 2 {
		cfg.Logger.Warn("engine: GOMAXPROCS below 2; netpoll's poller stalls the process, set GOMAXPROCS>=2", "gomaxprocs", n)
	}
	e := &Engine{cfg: cfg, defaultTLS: &TLS{}}
	e.goNet = &upstreamDialer{connect: cfg.ConnectTimeout, hsTimeout: cfg.TLSHandshakeTimeout}
	e.pool = poolset.New[*conn.Conn](poolset.Config{
		IdleTimeout:    cfg.IdleTimeout,
		MaxIdlePerKey:  cfg.MaxIdlePerUpstream,
		MaxIdle:        cfg.MaxIdle,
		MaxConnsPerKey: cfg.MaxConnsPerUpstream,
		MaxLifetime:    cfg.MaxConnLifetime,
		MaxRequests:    cfg.MaxConnRequests,
	})
	// The counters of an upstream the pool has retired may go too: a
	// forward proxy meets new upstreams without end.
	e.stats.Live = e.pool.Has
	set, err := shard.New(shard.Config{
		Shards:         cfg.Shards,
		ConnectTimeout: cfg.ConnectTimeout,
		MaxRetries:     max(cfg.MaxRetries, -1),
		StrictResend:   cfg.StrictResend,
		PipelineStall:  cfg.PipelineStall,
		MaxPending:     cfg.MaxPending,
		PendingTimeout: cfg.PendingTimeout,
		Logger:         cfg.Logger,

		PinnedIdleTimeout: cfg.PinnedIdleTimeout,
		OnPinnedClosed:    cfg.OnPinnedClosed,
		OnSession:         e.onSession,
	}, e.pool, &e.stats)
	if err != nil {
		e.pool.Close()
		return nil, fmt.Errorf("engine: %w", err)
	}
	e.shards = set
	e.root = conn.NewAbortable()
	e.groups.Store(&groupsMap{})
	for name, gc := range cfg.Groups {
		if err := e.SetGroup(name, gc); err != nil {
			e.teardown()
			return nil, err
		}
	}
	return e, nil
}

// Send sends req and streams the response into sink, asynchronously. An
// error means the request was not accepted and sink is not called;
// otherwise sink.OnDone is called exactly once. The request is bound to ctx.
func (e *Engine) Send(ctx context.Context, req *Request, sink Sink) error {
	r := newRequest(e)
	if err := e.task(ctx, req, sink, r); err != nil {
		return err
	}
	e.shards.Submit(&r.t)
	return nil
}

// Exchange sends req and streams the response into sink on the calling
// goroutine, returning once sink.OnDone has been called, with the error
// OnDone got (or the error that kept the request from being accepted, in
// which case sink is not called). When the shared pool holds a free
// persistent connection to the upstream and the request is not pinned, the
// whole exchange runs right here, with no hop to a shard or a worker: the
// path for proxies that serve each client connection on its own goroutine.
// Otherwise the request goes through a shard and Exchange waits for it.
func (e *Engine) Exchange(ctx context.Context, req *Request, sink Sink) error {
	_, err := e.exchange(ctx, req, sink, false)
	return err
}

// Upgrade is Exchange for a request that asks to switch protocols (RFC
// 9110 §7.8), a WebSocket handshake say: its head carries Upgrade, which
// a caller stripping hop-by-hop fields lets through (Edits.Keep), with a
// Connection field naming it. The sink gets the response head as from
// Exchange. After a 101 Switching Protocols, Upgrade returns the upstream
// connection, which now speaks the new protocol, with the bytes the
// upstream sent after the 101 read first: the caller relays it (Relay)
// and must close it, and it counts against its upstream's connection cap
// until then. After any other response it returns a nil connection, the
// exchange having ended as with Exchange. A 101 on a pinned session's
// connection (NTLM, Negotiate) hands it over too and ends the session: its
// later requests fail with ErrPinnedGone until Unpin. A 101 always comes
// with the connection or with an error (ctx ended before the hand-over,
// say), never neither.
func (e *Engine) Upgrade(ctx context.Context, req *Request, sink Sink) (net.Conn, error) {
	tc, err := e.exchange(ctx, req, sink, true)
	if tc == nil {
		return nil, err // not a *conn.TunnelConn(nil) in an interface
	}
	return tc, err
}

// exchange runs Exchange or, with upgrade, Upgrade.
func (e *Engine) exchange(ctx context.Context, req *Request, sink Sink, upgrade bool) (*conn.TunnelConn, error) {
	r, _ := e.requests.Get().(*request)
	if r == nil {
		r = newRequest(e)
	}
	if r.done == nil {
		r.done = make(chan error, 1)
	}
	if err := e.task(ctx, req, sink, r); err != nil {
		e.requests.Put(r) // nothing refers to it: it never left this call
		return nil, err
	}
	r.t.Switch = upgrade
	inline := e.shards.RunInline(&r.t)
	if !inline {
		e.shards.Submit(&r.t)
	}
	err := <-r.done
	switched := r.t.Switched
	// A task that ran wholly on this goroutine is referenced by nothing
	// once Done has run: it was never posted to a shard, so no event, pool
	// waiter or context watch can name it. One that went through a shard
	// (submitted, or a retry) may still be named by a late event there, so
	// it is left to the collector.
	if inline && !r.t.Retried() {
		r.reset()
		e.requests.Put(r)
	}
	return switched, err
}

// request is one request's engine state: its shard task, whose Done is
// the request's finish method bound once, and the channel Exchange waits
// on. Exchange recycles the requests that ran inline.
type request struct {
	t       shard.Task
	e       *Engine
	sink    Sink
	done    chan error  // receives the outcome after sink.OnDone; nil for Send
	stop    func() bool // stops the engine root's watch of a derived context
	cancel  context.CancelFunc
	finish  func(error)                   // r.finishTask, bound once
	reroute func(*shard.Task, error) bool // r.rerouteTask, bound once

	// A request to a group: its group, the peer it is aimed at (nil once
	// its outcome was reported), whether it is that peer's probe, the
	// peers whose connect failed, the hash key and the caller's edits.
	group     *group
	peer      *peer
	probe     bool
	tried     uint64
	hashKey   string
	userEdits *parser.Edits
	// via says that the peer is the parent of a tunnel to the request's
	// Addr (Upstream.ViaGroup), not the request's own upstream; tlsHost
	// is the request's, for the server name of each parent's route.
	via     bool
	tlsHost string

	// The request's authentication policy and upstream, kept to set the
	// task up again for another peer (setupAuth).
	authPol  *Auth
	upstream Upstream
}

func newRequest(e *Engine) *request {
	r := &request{e: e}
	r.finish = r.finishTask
	r.reroute = r.rerouteTask
	return r
}

// reset drops what a recycled request refers to.
func (r *request) reset() {
	r.t = shard.Task{}
	r.sink, r.stop, r.cancel = nil, nil, nil
	r.group, r.peer, r.probe, r.tried, r.hashKey, r.userEdits = nil, nil, false, 0, "", nil
	r.via, r.tlsHost = false, ""
	r.authPol, r.upstream = nil, Upstream{}
}

// finishTask is the task's Done: exactly once, after the connection was
// settled. r must not be touched after the send on done, which lets
// Exchange recycle it.
func (r *request) finishTask(err error) {
	if r.stop != nil {
		r.stop()
		r.cancel()
	}
	if r.peer != nil && r.via {
		o := classifyVia(err, r.peer.cfg.Addr)
		if e := conn.AsError(err); e != nil && e.Addr == r.peer.cfg.Addr {
			// A failure on the way to the parent, in the dial: reported
			// by rerouteTask.
			o = neutral
		}
		r.settlePeer(o, err)
	}
	if r.peer != nil {
		o := judge(r.peer, err)
		if e := conn.AsError(err); e != nil && (e.Phase == conn.PhaseDial || e.Phase == conn.PhaseTLS) && !e.Written {
			// A connect failure was reported by rerouteTask; one found
			// by the exchange (a TLS 1.3 server's alert after the
			// handshake) is reported here.
			o = neutral
		}
		r.settlePeer(o, err)
	}
	r.sink.OnDone(err)
	r.e.doneOne()
	if r.done != nil {
		r.done <- err
	}
}

// task validates req and fills r's shard task.
//
// The task's context ends when ctx does or when the engine aborts. A ctx
// that can never end (Done returns nil, as for context.Background) needs
// no context of its own: the task runs under the engine's Abortable
// directly, and a request costs no context setup or watch. The
// engine's packages read no values from the task's context.
func (e *Engine) task(ctx context.Context, req *Request, sink Sink, r *request) error {
	if req == nil || req.Head == nil || !req.Head.Done() {
		return fmt.Errorf("%w: no parsed head", ErrBadRequest)
	}
	if sink == nil {
		return fmt.Errorf("%w: no sink", ErrBadRequest)
	}
	if ctx == nil {
		return fmt.Errorf("%w: nil context", ErrBadRequest)
	}
	if req.Addr == "" && req.Group == "" && req.peer == nil {
		return fmt.Errorf("%w: no upstream address", ErrBadRequest)
	}
	if req.ViaGroup != "" && (req.Group != "" || req.Via != nil || req.Addr == "") {
		return fmt.Errorf("%w: ViaGroup needs an Addr, and no Group or Via", ErrBadRequest)
	}
	if req.Abort != nil && req.Abort.Aborted() {
		// Nothing to dial or wait for: the caller is gone.
		return fmt.Errorf("engine: %w", ErrAborted)
	}
	key := poolset.Key{Addr: req.Addr}
	var dialer shard.Dialer
	if req.ViaGroup == "" { // else routeVia sets the dialer of the parent it picks
		d, err := e.dialerFor(req, &key)
		if err != nil {
			return err
		}
		if d != nil {
			dialer = d
		}
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	e.inflight++
	e.mu.Unlock()

	var tctx context.Context = e.root
	if ctx.Done() != nil {
		var cancel context.CancelFunc
		tctx, cancel = context.WithCancel(ctx)
		r.stop, r.cancel = context.AfterFunc(e.root, cancel), cancel
	}
	cl := req.ContentLength
	if req.Body == nil {
		cl = 0
	}
	r.sink = sink
	r.t = shard.Task{
		Ctx: tctx,
		Key: key,
		Exchange: conn.Exchange{
			Head: req.Head, Edits: req.Edits, Body: req.Body, ContentLength: cl,
			ExpectContinueTimeout: e.cfg.ExpectContinueTimeout,
			Abort:                 req.Abort,
			Config: conn.Config{
				BodyHighWater:         e.cfg.BodyHighWater,
				ResponseHeaderTimeout: e.cfg.ResponseHeaderTimeout,
				ReadTimeout:           e.cfg.ResponseHeaderTimeout,
			},
		},
		GetBody: req.GetBody,
		PinKey:  req.PinKey,
		Pin:     req.Pin,
		Sink:    sink,
		Done:    r.finish,
		Dialer:  dialer,
	}
	if dialer == nil && req.Group == "" && req.ViaGroup == "" && req.peer == nil {
		r.t.Pipeline = req.Pipeline
	}
	switch {
	case req.peer != nil:
		r.t.Key = req.peer.key
		r.t.Dialer = req.peer.dialer
	case req.Group != "" || req.ViaGroup != "":
		// Direct calls, not through a func value, which escape analysis
		// cannot see through: req would escape, and a caller's Request
		// on its stack would cost an allocation per exchange.
		var err error
		if req.ViaGroup != "" {
			err = e.routeVia(req, r)
		} else {
			err = e.route(req, r)
		}
		if err != nil {
			if r.stop != nil {
				r.stop()
				r.cancel()
			}
			r.reset()
			e.doneOne()
			return err
		}
	}
	if req.peer == nil {
		r.authPol, r.upstream = req.Auth, req.Upstream
		e.setupAuth(r)
	}
	return nil
}

func (e *Engine) doneOne() {
	e.mu.Lock()
	e.inflight--
	if e.inflight == 0 && e.idle != nil {
		close(e.idle)
		e.idle = nil
	}
	e.mu.Unlock()
}

// Unpin ends the pinned session pinKey and closes its connection: the
// requests' (Request.PinKey) and the tunnels' (TunnelRequest.PinKey). An
// embedder calls it when the client connection of the session closes.
func (e *Engine) Unpin(pinKey uint64) {
	if pinKey == 0 {
		return
	}
	e.shards.Unpin(pinKey)
	e.tpins.unpin(e, pinKey)
}

// Pinned reports whether pinKey has a live pinned session for requests:
// an upstream connection kept for them (one found closed is not live).
// Whether an exchange runs on that connection is for a SessionSink to
// learn.
func (e *Engine) Pinned(pinKey uint64) bool {
	if pinKey == 0 {
		return false
	}
	v, ok := e.sessions.Load(pinKey)
	_, gone := v.(goneSession)
	return ok && !gone
}

// Drain stops accepting requests, waits for those in flight to finish (or
// for ctx to end, which aborts them), then closes the pool and the shards.
// It returns ctx's error if the requests had to be aborted.
func (e *Engine) Drain(ctx context.Context) error {
	e.stopAllChecks()
	var err error
	if !e.waitIdle(ctx) {
		err = fmt.Errorf("engine: drain: %w", ctx.Err())
		e.root.Abort()
		wctx, cancel := context.WithTimeout(context.Background(), e.cfg.ConnectTimeout+time.Second)
		e.waitIdle(wctx)
		cancel()
	}
	e.teardown()
	return err
}

// Close aborts the requests in flight, waits for them to report, and
// releases every connection and goroutine. It is idempotent.
func (e *Engine) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = e.Drain(ctx)
	return nil
}

// waitIdle marks the engine closed and waits for zero requests in flight.
func (e *Engine) waitIdle(ctx context.Context) bool {
	e.mu.Lock()
	e.closed = true
	if e.inflight == 0 {
		e.mu.Unlock()
		return true
	}
	if e.idle == nil {
		e.idle = make(chan struct{})
	}
	ch := e.idle
	e.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

func (e *Engine) teardown() {
	e.once.Do(func() {
		e.stopAllChecks()
		e.root.Abort()
		e.shards.Close(5 * time.Second)
		e.tpins.closeAll(e)
		e.pool.Close()
	})
}
